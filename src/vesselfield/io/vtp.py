"""A small reader and writer of VTK XML PolyData (``.vtp``), and centrelines read from it.

Why our own: the ``vtk`` wheel is ~100 MB for one file format (see docs/data.md). The reader
covers what vascular tools write in practice (vmtk, SimVascular, 3D Slicer, ParaView):

- ``format="ascii"``, ``"binary"`` (base64 inline) and ``"appended"`` (``encoding="raw"`` or
  ``"base64"``);
- ``header_type`` UInt32 or UInt64, ``byte_order`` little or big endian;
- ``compressor="vtkZLibDataCompressor"`` (blocked zlib) or no compressor;
- Points, Verts, Lines, Polys, Strips, PointData and CellData (numeric arrays; string arrays and
  FieldData are skipped).

Binary layout (VTK file-format documentation, "XML File Formats", and vtkXMLWriter): every
array is a header of ``header_type`` words followed by its bytes. Uncompressed, the header is
one word (the byte count) and VTK base64-encodes header and data as one stream. Compressed,
the header is ``[n_blocks, block_size, last_block_size, compressed_size_0, ...]`` and VTK
base64-encodes it as a stream of its own, followed by the zlib blocks as a second stream.

Cell offsets: VTK XML files store the *end* offset of each cell (``n_cells`` values); a
leading 0 (``n_cells + 1`` values) is accepted too. Cell data are ordered verts, lines, polys,
strips, as in VTK.
"""

from __future__ import annotations

import base64
import binascii
import xml.etree.ElementTree as ET
import zlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence
from xml.sax.saxutils import quoteattr

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.io.atomic import write_bytes_atomic
from vesselfield.io.points import to_lps_mm
from vesselfield.tree import VesselTree

_VTK_TO_NUMPY = {
    "Int8": "i1", "UInt8": "u1", "Int16": "i2", "UInt16": "u2", "Int32": "i4", "UInt32": "u4",
    "Int64": "i8", "UInt64": "u8", "Float32": "f4", "Float64": "f8",
    # Names used by VTK before 2006 and still met in old files.
    "Char": "i1", "UnsignedChar": "u1", "Short": "i2", "UnsignedShort": "u2", "Int": "i4",
    "UnsignedInt": "u4", "Float": "f4", "Double": "f8",
}  # fmt: skip
_NUMPY_TO_VTK = {np.dtype(v): k for k, v in list(_VTK_TO_NUMPY.items())[:10]}
_CELL_KINDS = ("Verts", "Lines", "Polys", "Strips")  # VTK's cell order for cell data
_BLOCK_SIZE = 32768  # VTK's default uncompressed block size


@dataclass
class PolyData:
    """VTK PolyData: points with vertex, line, polygon and strip cells and attached arrays.

    Attributes:
        points: (N, 3) float64 point coordinates, in the file's frame and unit.
        polys: polygons: an (F, 3) int64 array when every polygon is a triangle, otherwise a
            list of int64 index arrays, one per polygon (the general form).
        lines: polylines, a list of int64 point-index arrays.
        point_data: name -> (N,) or (N, C) array.
        cell_data: name -> (M,) or (M, C) array, M = verts + lines + polys + strips, VTK order.
        verts: vertex cells, a list of int64 arrays.
        strips: triangle strips, a list of int64 arrays.
    """

    points: np.ndarray
    polys: np.ndarray | list = field(default_factory=list)
    lines: list = field(default_factory=list)
    point_data: dict = field(default_factory=dict)
    cell_data: dict = field(default_factory=dict)
    verts: list = field(default_factory=list)
    strips: list = field(default_factory=list)

    def __post_init__(self):
        self.points = np.asarray(self.points, dtype=np.float64).reshape(-1, 3)
        if isinstance(self.polys, np.ndarray) and self.polys.ndim == 2:
            self.polys = self.polys.astype(np.int64)
        else:
            self.polys = [np.asarray(c, dtype=np.int64).reshape(-1) for c in self.polys]
        for name in ("lines", "verts", "strips"):
            setattr(self, name, [np.asarray(c, dtype=np.int64).reshape(-1) for c in getattr(self, name)])

    @property
    def num_cells(self) -> int:
        return len(self.verts) + len(self.lines) + len(self.polys) + len(self.strips)

    def polygon_list(self) -> list[np.ndarray]:
        """Polygons in the general form: one int64 index array per polygon."""
        return list(self.polys)

    def triangles(self) -> np.ndarray:
        """(T, 3) int64 triangles: polygons fan-triangulated, strips split (orientation kept)."""
        out = []
        if isinstance(self.polys, np.ndarray):
            polys = self.polys
            out += [np.stack([polys[:, 0], polys[:, k], polys[:, k + 1]], 1) for k in range(1, polys.shape[1] - 1)]
        else:
            for cell in self.polys:
                if len(cell) >= 3:
                    out.append(np.stack([np.full(len(cell) - 2, cell[0]), cell[1:-1], cell[2:]], 1))
        for strip in self.strips:
            for k in range(len(strip) - 2):
                # Every second triangle of a strip is listed clockwise; swap to keep orientation.
                a, b, c = strip[k : k + 3]
                out.append(np.array([[a, b, c] if k % 2 == 0 else [b, a, c]]))
        if not out:
            return np.zeros((0, 3), dtype=np.int64)
        return np.concatenate(out).astype(np.int64)


# ----------------------------------------------------------------------------------- reading
@dataclass
class _Context:
    path: Path
    byte_order: str  # "<" or ">"
    header_dtype: np.dtype
    compressed: bool
    appended: bytes | str | None  # raw bytes or base64 text after the "_" marker


def _b64_length(num_bytes: int) -> int:
    return 4 * -(-num_bytes // 3)


def _b64_head(text: str, pos: int, num_bytes: int) -> bytes:
    """The first ``num_bytes`` bytes of the base64 stream starting at ``text[pos]``."""
    return base64.b64decode(text[pos : pos + _b64_length(num_bytes)])[:num_bytes]


def _body(src: bytes | str, pos: int, head_bytes: int, body_bytes: int) -> bytes:
    """The ``body_bytes`` that follow a header of ``head_bytes`` at ``src[pos]``."""
    if isinstance(src, bytes):
        return src[pos + head_bytes : pos + head_bytes + body_bytes]
    m = _b64_length(head_bytes)
    # Header encoded as its own base64 stream (padding '=' ends it), or header + data as one.
    if head_bytes % 3 == 0 or src[pos + m - 1 : pos + m] == "=":
        return base64.b64decode(src[pos + m : pos + m + _b64_length(body_bytes)])[:body_bytes]
    return base64.b64decode(src[pos : pos + _b64_length(head_bytes + body_bytes)])[head_bytes : head_bytes + body_bytes]


def _binary_payload(src: bytes | str, pos: int, ctx: _Context) -> bytes:
    w = ctx.header_dtype.itemsize

    def head(n: int) -> np.ndarray:
        raw = src[pos : pos + n] if isinstance(src, bytes) else _b64_head(src, pos, n)
        if len(raw) < n:
            raise ValueError("data block is truncated")
        return np.frombuffer(raw, dtype=ctx.header_dtype).astype(np.int64)

    if not ctx.compressed:
        size = int(head(w)[0])
        data = _body(src, pos, w, size)
        if len(data) != size:
            raise ValueError(f"data block is truncated ({len(data)} of {size} bytes)")
        return data
    num_blocks = int(head(w)[0])
    header = head((3 + num_blocks) * w)
    block_size, last_size, sizes = header[1], header[2], header[3:]
    body = _body(src, pos, (3 + num_blocks) * w, int(sizes.sum()))
    starts = np.r_[0, np.cumsum(sizes)]
    data = b"".join(zlib.decompress(body[starts[i] : starts[i + 1]]) for i in range(num_blocks))
    expected = 0 if num_blocks == 0 else block_size * (num_blocks - 1) + (last_size or block_size)
    if len(data) != expected:
        raise ValueError(f"data block decompresses to {len(data)} bytes, header says {expected}")
    return data


def _read_data_array(el: ET.Element, ctx: _Context, num_tuples: int | None) -> np.ndarray | None:
    """One ``<DataArray>`` -> (n,) or (n, C) array; None for types we do not read (strings)."""
    vtk_type = el.get("type", "")
    if vtk_type not in _VTK_TO_NUMPY:
        return None
    dtype = np.dtype(_VTK_TO_NUMPY[vtk_type]).newbyteorder(ctx.byte_order)
    fmt = el.get("format", "ascii").lower()
    if fmt == "ascii":
        values = np.array((el.text or "").split(), dtype=dtype.newbyteorder("="))
    elif fmt == "binary":
        text = "".join((el.text or "").split())
        values = np.frombuffer(_binary_payload(text, 0, ctx), dtype=dtype)
    elif fmt == "appended":
        if ctx.appended is None:
            raise ValueError("an array is 'appended' but the file has no AppendedData")
        values = np.frombuffer(_binary_payload(ctx.appended, int(el.get("offset", "0")), ctx), dtype=dtype)
    else:
        raise ValueError(f"unknown DataArray format {fmt!r}")
    values = values.astype(dtype.newbyteorder("="))
    ncomp = int(el.get("NumberOfComponents", "1"))
    if num_tuples is not None and values.size != num_tuples * ncomp:
        raise ValueError(
            f"array {el.get('Name')!r} holds {values.size} values, expected {num_tuples} x {ncomp}"
        )
    return values.reshape(-1, ncomp) if ncomp > 1 else values


def _read_cells(piece: ET.Element, kind: str, ctx: _Context, num_points: int) -> list[np.ndarray]:
    num_cells = int(piece.get(f"NumberOf{kind}", "0"))
    section = piece.find(kind)
    if num_cells == 0:
        return []
    if section is None:
        raise ValueError(f"{kind} section is missing but NumberOf{kind}={num_cells}")
    arrays = {el.get("Name"): el for el in section.findall("DataArray")}
    if "connectivity" not in arrays or "offsets" not in arrays:
        raise ValueError(f"{kind} section lacks its connectivity or offsets array")
    conn = _read_data_array(arrays["connectivity"], ctx, None).astype(np.int64).reshape(-1)
    offsets = _read_data_array(arrays["offsets"], ctx, None).astype(np.int64).reshape(-1)
    if len(offsets) == num_cells + 1 and offsets[0] == 0:
        bounds = offsets
    elif len(offsets) == num_cells:
        bounds = np.r_[0, offsets]
    else:
        raise ValueError(f"{kind} has {len(offsets)} offsets for {num_cells} cells")
    if np.any(np.diff(bounds) < 0) or bounds[-1] != len(conn):
        raise ValueError(f"{kind} offsets do not match the connectivity ({len(conn)} indices)")
    if len(conn) and (conn.min() < 0 or conn.max() >= num_points):
        raise ValueError(f"{kind} refer to points outside 0..{num_points - 1}")
    return np.split(conn, bounds[1:-1])


def _split_appended(data: bytes) -> tuple[bytes, bytes | str | None]:
    """Cut the AppendedData payload off so that the rest parses as XML."""
    tag = data.find(b"<AppendedData")
    if tag < 0:
        return data, None
    close = data.index(b">", tag)
    encoding = "raw" if b'encoding="raw"' in data[tag:close] or b"encoding='raw'" in data[tag:close] else "base64"
    marker = data.index(b"_", close)
    xml = data[: close + 1] + b"</AppendedData></VTKFile>"
    payload = data[marker + 1 :]
    if encoding == "raw":
        return xml, payload
    end = payload.find(b"</AppendedData>")
    return xml, payload[: end if end >= 0 else None].decode("ascii").rstrip()


def read_vtp(path) -> PolyData:
    """Read a VTK XML PolyData file (see the module docstring for what is supported).

    Returns a :class:`PolyData` in the file's own frame and unit; convert with
    :func:`vesselfield.io.points.to_lps_mm` (mesh and centreline loaders do it for you).
    """
    path = Path(path)
    if not path.is_file():
        raise VesselfieldError(f"VTP file {path} does not exist")
    try:
        return _read_vtp(path)
    except VesselfieldError:
        raise
    except (ValueError, KeyError, IndexError, TypeError, ET.ParseError, zlib.error, binascii.Error) as exc:
        raise VesselfieldError(f"cannot read VTP file {path}: {exc}") from None


def _read_vtp(path: Path) -> PolyData:
    xml, appended = _split_appended(path.read_bytes())
    root = ET.fromstring(xml)
    if root.tag != "VTKFile":
        raise ValueError("not a VTK XML file")
    if root.get("type") != "PolyData":
        raise VesselfieldError(f"{path} is a VTK {root.get('type')} file, not PolyData (.vtp)")
    compressor = root.get("compressor", "")
    if compressor not in ("", "vtkZLibDataCompressor"):
        raise VesselfieldError(f"{path} uses {compressor}; only zlib-compressed or uncompressed VTP is supported")
    header_type = root.get("header_type", "UInt32")
    if header_type not in ("UInt32", "UInt64"):
        raise ValueError(f"unknown header_type {header_type!r}")
    byte_order = ">" if root.get("byte_order", "LittleEndian") == "BigEndian" else "<"
    ctx = _Context(
        path=path,
        byte_order=byte_order,
        header_dtype=np.dtype(_VTK_TO_NUMPY[header_type]).newbyteorder(byte_order),
        compressed=bool(compressor),
        appended=appended,
    )
    pieces = root.findall("PolyData/Piece")
    if len(pieces) != 1:
        raise VesselfieldError(f"{path} has {len(pieces)} pieces; only single-piece VTP files are supported")
    piece = pieces[0]
    num_points = int(piece.get("NumberOfPoints", "0"))
    points_el = piece.find("Points/DataArray")
    if num_points == 0 or points_el is None:
        points = np.zeros((0, 3))
    else:
        points = _read_data_array(points_el, ctx, num_points)
        if points is None or points.ndim != 2 or points.shape[1] != 3:
            raise ValueError("Points must be a numeric array with 3 components")
    cells = {kind: _read_cells(piece, kind, ctx, num_points) for kind in _CELL_KINDS}
    num_cells = sum(len(c) for c in cells.values())

    def attributes(section: str, n: int) -> dict[str, np.ndarray]:
        out = {}
        for i, el in enumerate(piece.findall(f"{section}/DataArray")):
            arr = _read_data_array(el, ctx, n)
            if arr is not None:
                out[el.get("Name") or f"{section}_{i}"] = arr
        return out

    polys = cells["Polys"]
    if polys and all(len(c) == 3 for c in polys):
        polys = np.stack(polys)
    return PolyData(
        points=points,
        polys=polys,
        lines=cells["Lines"],
        point_data=attributes("PointData", num_points),
        cell_data=attributes("CellData", num_cells),
        verts=cells["Verts"],
        strips=cells["Strips"],
    )


# ----------------------------------------------------------------------------------- writing
def _encode_array(values: np.ndarray) -> str:
    """Header + zlib blocks, base64-encoded as two streams (as vtkXMLWriter does), UInt64 header."""
    raw = np.ascontiguousarray(values).astype(values.dtype.newbyteorder("<"), copy=False).tobytes()
    blocks = [zlib.compress(raw[i : i + _BLOCK_SIZE]) for i in range(0, len(raw), _BLOCK_SIZE)]
    last = len(raw) % _BLOCK_SIZE
    header = np.array([len(blocks), _BLOCK_SIZE, last] + [len(b) for b in blocks], dtype="<u8")
    return base64.b64encode(header.tobytes()).decode() + base64.b64encode(b"".join(blocks)).decode()


def _data_array_xml(name: str, values: np.ndarray, indent: str) -> str:
    values = np.asarray(values)
    if values.dtype == bool:
        values = values.astype(np.uint8)
    dtype = values.dtype.newbyteorder("=")
    if dtype not in _NUMPY_TO_VTK:
        raise VesselfieldError(f"VTP array {name!r} has dtype {values.dtype}, which VTK XML cannot store")
    ncomp = 1 if values.ndim == 1 else int(np.prod(values.shape[1:]))
    return (
        f'{indent}<DataArray type="{_NUMPY_TO_VTK[dtype]}" Name={quoteattr(name)} NumberOfComponents="{ncomp}" '
        f'format="binary">\n{indent}  {_encode_array(values.astype(dtype))}\n{indent}</DataArray>\n'
    )


def _cells_xml(kind: str, cells: Sequence[np.ndarray], num_points: int) -> str:
    if isinstance(cells, np.ndarray):
        conn = cells.reshape(-1)
        ends = np.arange(1, len(cells) + 1, dtype=np.int64) * cells.shape[1]
    else:
        conn = np.concatenate(list(cells)) if len(cells) else np.zeros(0, np.int64)
        ends = np.cumsum([len(c) for c in cells], dtype=np.int64)
    if len(conn) and (conn.min() < 0 or conn.max() >= num_points):
        raise VesselfieldError(f"VTP {kind.lower()} refer to points outside 0..{num_points - 1}")
    return (
        f"      <{kind}>\n"
        + _data_array_xml("connectivity", conn.astype(np.int64), "        ")
        + _data_array_xml("offsets", ends.astype(np.int64), "        ")
        + f"      </{kind}>\n"
    )


def write_vtp(path, polydata: PolyData) -> None:
    """Write ``polydata`` as VTK XML PolyData: binary base64, zlib blocks, UInt64 headers, atomic.

    Points are stored as Float64, so a read back returns them bit for bit.
    """
    pd = polydata
    n, m = len(pd.points), pd.num_cells
    for section, arrays, count in (("point", pd.point_data, n), ("cell", pd.cell_data, m)):
        for name, arr in arrays.items():
            if len(np.asarray(arr)) != count:
                raise VesselfieldError(f"VTP {section} array {name!r} has {len(arr)} rows, expected {count}")
    parts = [
        '<?xml version="1.0"?>\n',
        '<VTKFile type="PolyData" version="1.0" byte_order="LittleEndian" header_type="UInt64" '
        'compressor="vtkZLibDataCompressor">\n',
        "  <PolyData>\n",
        f'    <Piece NumberOfPoints="{n}" NumberOfVerts="{len(pd.verts)}" NumberOfLines="{len(pd.lines)}" '
        f'NumberOfStrips="{len(pd.strips)}" NumberOfPolys="{len(pd.polys)}">\n',
        "      <PointData>\n",
        *(_data_array_xml(k, v, "        ") for k, v in pd.point_data.items()),
        "      </PointData>\n      <CellData>\n",
        *(_data_array_xml(k, v, "        ") for k, v in pd.cell_data.items()),
        "      </CellData>\n      <Points>\n",
        _data_array_xml("Points", pd.points, "        "),
        "      </Points>\n",
        *(_cells_xml(kind, getattr(pd, kind.lower()), n) for kind in _CELL_KINDS),
        "    </Piece>\n  </PolyData>\n</VTKFile>\n",
    ]
    write_bytes_atomic(path, "".join(parts).encode("utf-8"))


# ------------------------------------------------------------------------------- centrelines
#: Point arrays that hold a vessel radius in the files we meet: vmtk and SimVascular centrelines
#: ("MaximumInscribedSphereRadius"), vmtk network extraction and 3D Slicer's VMTK extension
#: ("Radius"), and other tools ("radius").
RADIUS_ARRAYS = ("MaximumInscribedSphereRadius", "Radius", "radius")


def load_centerline_vtp(
    path,
    *,
    radius_array: str | Sequence[str] = RADIUS_ARRAYS,
    frame: str = "LPS",
    scale_to_mm: float = 1.0,
) -> VesselTree:
    """Read a centreline ``.vtp`` (polyline cells with a radius point array) as a :class:`VesselTree`.

    Each polyline becomes a chain of nodes; points shared by several polylines (the same index,
    or the same coordinates) are one node, which joins their chains (a loop, if any, is cut
    where the breadth-first walk meets it again). Each connected piece is rooted at the first
    point of the first polyline touching it (the inlet for vmtk/SimVascular centrelines), and
    nodes come in breadth-first order, parents before children. Points that no polyline uses
    are dropped.
    ``radius_array``: one name or candidate names, the first present is used. Positions and
    radii are converted with ``frame`` and ``scale_to_mm`` to LPS mm; ``labels`` hold the index
    of the polyline that first reached each node.

    Note: vmtk writes one polyline per inlet-outlet path, each with its own copy of the shared
    trunk; copies with identical coordinates merge, the rest stay as overlapping chains whose
    tubes coincide, so their union is still the vessel.
    """
    pd = read_vtp(path)
    names = [radius_array] if isinstance(radius_array, str) else list(radius_array)
    found = next((n for n in names if n in pd.point_data), None)
    if found is None:
        raise VesselfieldError(
            f"centreline {path} has no radius array {' or '.join(names)}; "
            f"its point arrays are: {', '.join(pd.point_data) or 'none'}"
        )
    if not any(len(ln) for ln in pd.lines):
        raise VesselfieldError(f"centreline {path} has no polyline cells")
    radius = np.asarray(pd.point_data[found], dtype=np.float64).reshape(len(pd.points), -1)[:, 0] * scale_to_mm
    # Centreline tools rarely share point indices between polylines; they repeat the point
    # (SimVascular: a branch starts on a copy of its parent's last point). Identical coordinates
    # are therefore one node.
    same = np.unique(pd.points, axis=0, return_inverse=True)[1].reshape(-1)
    lines = [same[ln] for ln in pd.lines if len(ln)]
    first_point: dict[int, int] = {}  # node key -> the first point index that stands for it
    line_of: dict[int, int] = {}
    neighbours: dict[int, list[int]] = {}
    for li, (ln, raw) in enumerate(zip(lines, (ln for ln in pd.lines if len(ln)))):
        for key, p in zip(ln.tolist(), raw.tolist()):
            first_point.setdefault(key, p)
            line_of.setdefault(key, li)
        for a, b in zip(ln[:-1].tolist(), ln[1:].tolist()):
            if a != b:
                neighbours.setdefault(a, []).append(b)
                neighbours.setdefault(b, []).append(a)
    # Breadth-first from each polyline's first point: parents point back towards the inlet.
    order, parent_key = [], {}
    for ln in lines:
        root = int(ln[0])
        if root in parent_key:
            continue
        parent_key[root] = -1
        queue = deque([root])
        while queue:
            key = queue.popleft()
            order.append(key)
            for q in neighbours.get(key, ()):
                if q not in parent_key:
                    parent_key[q] = key
                    queue.append(q)
    node_of = {key: i for i, key in enumerate(order)}
    idx = np.array([first_point[key] for key in order], dtype=np.int64)
    parent = np.array([node_of.get(parent_key[key], -1) for key in order], dtype=np.int64)
    r = radius[idx]
    if np.any(~np.isfinite(r)) or np.any(r <= 0):
        bad = int(np.count_nonzero(~(r > 0)))
        raise VesselfieldError(f"centreline {path}: {bad} point(s) have a non-positive or NaN radius in {found!r}")
    return VesselTree(
        points_mm=to_lps_mm(pd.points[idx], frame, scale_to_mm),
        radius_mm=r,
        parent=parent,
        labels=np.array([line_of[key] for key in order], dtype=np.int64),
    )
