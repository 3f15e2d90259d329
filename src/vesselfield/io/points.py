"""Point clouds (with optional normals) and the frame/unit conversion shared by geometry readers.

Formats: ``.npy`` ((N, 3) points or (N, 6) points + normals), ``.xyz`` / ``.txt`` (whitespace
separated, 3 or 6 columns, ``#`` comments), ``.csv`` (optional header; named columns
``x, y, z[, nx, ny, nz]`` are picked by name, otherwise 3 or 6 columns by position) and ``.ply``
(a point cloud or the vertices of a mesh; normals when the file has ``nx ny nz``).
Coordinates are LPS mm unless ``frame`` / ``scale_to_mm`` say otherwise.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.io.atomic import atomic_path, write_text_atomic
from vesselfield.validate import require_finite

FRAMES = ("LPS", "RAS")
POINT_SUFFIXES = (".npy", ".xyz", ".txt", ".csv", ".ply")


def check_frame(frame: str) -> str:
    """Return ``frame`` upper-cased, raising unless it is ``"LPS"`` or ``"RAS"``."""
    f = str(frame).upper()
    if f not in FRAMES:
        raise VesselfieldError(f"unknown frame {frame!r}: use LPS or RAS")
    return f


def to_lps_mm(points, frame: str = "LPS", scale_to_mm: float = 1.0) -> np.ndarray:
    """(N, 3) file coordinates -> (N, 3) float64 LPS mm.

    ``frame="RAS"`` negates x and y (RAS -> LPS is a 180 degree turn about z, so it keeps the
    orientation of triangles); ``scale_to_mm`` converts the file's unit (10 for cm, 1e-3 for um).
    """
    frame = check_frame(frame)
    if not (np.isfinite(scale_to_mm) and scale_to_mm > 0):
        raise VesselfieldError(f"scale_to_mm must be positive and finite, got {scale_to_mm}")
    p = np.array(points, dtype=np.float64).reshape(-1, 3)
    if scale_to_mm != 1.0:
        p *= scale_to_mm
    if frame == "RAS":
        p[:, :2] *= -1.0
    return p


def from_lps_mm(points_mm, frame: str = "LPS") -> np.ndarray:
    """(N, 3) LPS mm -> (N, 3) float64 in ``frame`` (the inverse of :func:`to_lps_mm` at scale 1)."""
    return to_lps_mm(points_mm, frame, 1.0)


def _split_columns(table: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    if table.ndim != 2 or table.shape[1] not in (3, 6):
        raise VesselfieldError(
            f"point file {path} must have 3 columns (x y z) or 6 (x y z nx ny nz), got shape {table.shape}"
        )
    if len(table) == 0:
        raise VesselfieldError(f"point file {path} holds no points")
    if table.dtype.kind not in "fiu":
        raise VesselfieldError(f"point file {path} holds non-numeric data (dtype {table.dtype})")
    table = table.astype(np.float64)
    require_finite(table, f"point file {path}")
    return table[:, :3], (table[:, 3:] if table.shape[1] == 6 else None)


def _parse_rows(rows: list[list[str]], line_numbers: list[int], path: Path) -> np.ndarray:
    for r, n in zip(rows, line_numbers):
        if len(r) != len(rows[0]):
            raise VesselfieldError(f"point file {path} line {n}: {len(r)} columns, expected {len(rows[0])}")
    try:
        return np.array(rows, dtype=np.float64).reshape(len(rows), -1)
    except ValueError:
        for r, n in zip(rows, line_numbers):
            try:
                [float(v) for v in r]
            except ValueError:
                raise VesselfieldError(f"point file {path} line {n}: non-numeric value in {' '.join(r)!r}") from None
        raise


def _read_text_points(path: Path) -> np.ndarray:
    rows, numbers = [], []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if line:
            rows.append(line.replace(",", " ").split())
            numbers.append(n)
    if not rows:
        raise VesselfieldError(f"point file {path} holds no points")
    return _parse_rows(rows, numbers, path)


def _read_csv_points(path: Path) -> np.ndarray:
    numbered = [
        (n, [c.strip() for c in r])
        for n, r in enumerate(csv.reader(io.StringIO(path.read_text(errors="replace"))), start=1)
        if any(c.strip() for c in r)
    ]
    header = None
    if numbered:
        try:
            [float(c) for c in numbered[0][1]]
        except ValueError:
            header, numbered = [c.lower() for c in numbered[0][1]], numbered[1:]
    if not numbered:
        raise VesselfieldError(f"point file {path} holds no points")
    table = _parse_rows([r for _, r in numbered], [n for n, _ in numbered], path)
    if header is not None and {"x", "y", "z"} <= set(header):
        if len(header) != table.shape[1]:
            raise VesselfieldError(f"point file {path}: header has {len(header)} names, rows have {table.shape[1]} values")
        names = ["x", "y", "z"] + (["nx", "ny", "nz"] if {"nx", "ny", "nz"} <= set(header) else [])
        table = table[:, [header.index(c) for c in names]]
    return table


def _read_ply_points(path: Path) -> np.ndarray:
    import trimesh

    try:
        geom = trimesh.load(str(path), file_type="ply", process=False)
    except Exception as exc:  # trimesh raises many types for a bad file
        raise VesselfieldError(f"cannot read point file {path}: {exc}") from None
    xyz = np.asarray(getattr(geom, "vertices", np.empty((0, 3))), dtype=np.float64)
    # Only normals stored in the file count: trimesh would otherwise compute them from faces.
    raw = geom.metadata.get("_ply_raw", {}).get("vertex", {}).get("data")
    if raw is not None and raw.dtype.names and {"nx", "ny", "nz"} <= set(raw.dtype.names):
        normals = np.stack([raw["nx"], raw["ny"], raw["nz"]], axis=1).astype(np.float64).reshape(-1, 3)
        return np.concatenate([xyz, normals], axis=1)
    return xyz


def load_points(path, *, frame: str = "LPS", scale_to_mm: float = 1.0) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a point cloud: returns ``(points_mm (N, 3) float64 LPS, normals (N, 3) float64 or None)``.

    Normals are turned with the points for ``frame="RAS"`` (x and y negated) and not rescaled.
    Wrong column counts, non-numeric or NaN content raise :class:`VesselfieldError`.
    """
    path = Path(path)
    if not path.is_file():
        raise VesselfieldError(f"point file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            table = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise VesselfieldError(f"cannot read point file {path}: {exc}") from None
    elif suffix in (".xyz", ".txt"):
        table = _read_text_points(path)
    elif suffix == ".csv":
        table = _read_csv_points(path)
    elif suffix == ".ply":
        table = _read_ply_points(path)
    else:
        raise VesselfieldError(f"unknown point file type {path.name!r}: use one of {', '.join(POINT_SUFFIXES)}")
    points, normals = _split_columns(np.asarray(table), path)
    points = to_lps_mm(points, frame, scale_to_mm)
    if normals is not None:
        normals = to_lps_mm(normals, frame, 1.0)
    return points, normals


def _ply_bytes(points: np.ndarray, normals: np.ndarray | None) -> bytes:
    names = ["x", "y", "z"] + (["nx", "ny", "nz"] if normals is not None else [])
    table = points if normals is None else np.concatenate([points, normals], axis=1)
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(points)}"]
    header += [f"property double {n}" for n in names] + ["end_header", ""]
    return "\n".join(header).encode("ascii") + np.ascontiguousarray(table, dtype="<f8").tobytes()


def save_points(path, points, normals=None) -> None:
    """Write (N, 3) points (and optional (N, 3) normals), LPS mm, atomically.

    ``.npy`` holds (N, 3) or (N, 6); ``.xyz``/``.txt`` and ``.csv`` hold shortest round-trip
    decimals (``.csv`` with an ``x,y,z[,nx,ny,nz]`` header); ``.ply`` is binary float64.
    """
    path = Path(path)
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0:
        raise VesselfieldError(f"points must have shape (N, 3) with N > 0, got {points.shape}")
    if normals is not None:
        normals = np.asarray(normals, dtype=np.float64)
        if normals.shape != points.shape:
            raise VesselfieldError(f"normals have shape {normals.shape}, points have {points.shape}")
    table = points if normals is None else np.concatenate([points, normals], axis=1)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, table)
    elif suffix in (".xyz", ".txt", ".csv"):
        sep = "," if suffix == ".csv" else " "
        lines = [sep.join(repr(float(v)) for v in row) for row in table]
        if suffix == ".csv":
            lines.insert(0, ",".join(["x", "y", "z"] + (["nx", "ny", "nz"] if normals is not None else [])))
        write_text_atomic(path, "\n".join(lines) + "\n")
    elif suffix == ".ply":
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(_ply_bytes(points, normals))
    else:
        raise VesselfieldError(f"unknown point file type {path.name!r}: use one of {', '.join(POINT_SUFFIXES)}")
