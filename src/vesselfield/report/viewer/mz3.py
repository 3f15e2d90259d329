"""The MZ3 mesh format (Surf Ice / NiiVue): a compact binary triangle mesh with per-vertex scalars.

Layout (little-endian, optionally gzip-compressed as a whole), as NiiVue 0.69's
``NVMeshLoaders.readMZ3`` reads it:

====================  =====================================================================
bytes                 content
====================  =====================================================================
0–1                   magic ``uint16 23117`` ("MZ")
2–3                   ``uint16`` attributes: 1 faces, 2 vertices, 4 RGBA, 8 scalars, 16 float64 scalars
4–7                   ``uint32`` number of faces F
8–11                  ``uint32`` number of vertices V
12–15                 ``uint32`` bytes to skip after the header (0 here)
16 …                  faces ``int32 (F, 3)``, then vertices ``float32 (V, 3)``, then RGBA ``uint8 (V, 4)``,
                      then scalars ``float32 (K, V)`` (K layers, one after the other)
====================  =====================================================================

The number of scalar layers K is not stored: a reader divides the bytes left by ``4 V``.
"""

from __future__ import annotations

import gzip
import struct

import numpy as np

from vesselfield.errors import VesselfieldError

__all__ = ["MZ3_MAGIC", "write_mz3_bytes", "read_mz3_bytes"]

MZ3_MAGIC = 23117
_FACES, _VERTS, _RGBA, _SCALARS, _DOUBLE = 1, 2, 4, 8, 16
_HEADER = struct.Struct("<HHIII")


def write_mz3_bytes(vertices, faces, *, scalars=None, rgba=None, compress: bool = True) -> bytes:
    """The bytes of an MZ3 file holding a triangle mesh and optional per-vertex data.

    Args:
        vertices: (V, 3) positions (stored as float32; the caller chooses the frame and unit).
        faces: (F, 3) vertex indices in [0, V).
        scalars: optional (V,) or (K, V) per-vertex values (float32), one layer per row.
        rgba: optional (V, 4) uint8 per-vertex colours.
        compress: gzip the whole file (NiiVue detects and inflates it).

    Returns:
        The file's bytes.
    """
    v = np.ascontiguousarray(vertices, dtype="<f4")
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) < 3:
        raise VesselfieldError(f"an MZ3 mesh needs (V >= 3, 3) vertices, got shape {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3 or len(f) < 1:
        raise VesselfieldError(f"an MZ3 mesh needs (F >= 1, 3) faces, got shape {f.shape}")
    if not np.all(np.isfinite(v)):
        raise VesselfieldError("MZ3 vertices must be finite numbers")
    if f.min() < 0 or f.max() >= len(v):
        raise VesselfieldError(f"MZ3 faces index vertices 0..{len(v) - 1}, got {int(f.min())}..{int(f.max())}")
    attr = _FACES | _VERTS
    parts = [np.ascontiguousarray(f, dtype="<i4").tobytes(), v.tobytes()]
    if rgba is not None:
        c = np.asarray(rgba)
        if c.shape != (len(v), 4):
            raise VesselfieldError(f"MZ3 colours must be (V, 4) = ({len(v)}, 4), got {c.shape}")
        attr |= _RGBA
        parts.append(np.ascontiguousarray(np.clip(c, 0, 255), dtype=np.uint8).tobytes())
    if scalars is not None:
        s = np.atleast_2d(np.asarray(scalars, dtype="<f4"))
        if s.shape[1] != len(v):
            raise VesselfieldError(f"MZ3 scalars must be (V,) or (K, V) with V = {len(v)}, got {np.shape(scalars)}")
        if not np.all(np.isfinite(s)):
            raise VesselfieldError("MZ3 scalars must be finite numbers")
        attr |= _SCALARS
        parts.append(np.ascontiguousarray(s).tobytes())
    data = _HEADER.pack(MZ3_MAGIC, attr, len(f), len(v), 0) + b"".join(parts)
    # mtime=0: the same mesh gives the same bytes (reproducible pages).
    return gzip.compress(data, compresslevel=6, mtime=0) if compress else data


def read_mz3_bytes(data: bytes) -> dict:
    """Parse MZ3 bytes (gzip-compressed or not) into ``{"vertices", "faces", "rgba", "scalars"}``.

    ``vertices`` (V, 3) float32, ``faces`` (F, 3) int64, ``rgba`` (V, 4) uint8 or None,
    ``scalars`` (K, V) float32 (float64 files are read as float64) or None.
    """
    raw = bytes(data)
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < _HEADER.size:
        raise VesselfieldError(f"not an MZ3 file: {len(raw)} bytes is shorter than its header")
    magic, attr, n_face, n_vert, n_skip = _HEADER.unpack_from(raw)
    if magic != MZ3_MAGIC:
        raise VesselfieldError(f"not an MZ3 file: magic {magic}, expected {MZ3_MAGIC}")
    pos = _HEADER.size + n_skip

    def take(dtype, count: int) -> np.ndarray:
        nonlocal pos
        size = np.dtype(dtype).itemsize * count
        if pos + size > len(raw):
            raise VesselfieldError("MZ3 file is truncated")
        out = np.frombuffer(raw, dtype=dtype, count=count, offset=pos)
        pos += size
        return out

    faces = take("<i4", 3 * n_face).reshape(-1, 3).astype(np.int64) if attr & _FACES else None
    vertices = take("<f4", 3 * n_vert).reshape(-1, 3).copy() if attr & _VERTS else None
    rgba = take(np.uint8, 4 * n_vert).reshape(-1, 4).copy() if attr & _RGBA else None
    scalars = None
    if attr & _SCALARS:
        dtype = "<f8" if attr & _DOUBLE else "<f4"
        per = np.dtype(dtype).itemsize * n_vert
        k = (len(raw) - pos) // per if per else 0
        scalars = take(dtype, k * n_vert).reshape(k, n_vert).copy()
    return {"vertices": vertices, "faces": faces, "rgba": rgba, "scalars": scalars}
