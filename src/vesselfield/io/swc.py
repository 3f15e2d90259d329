"""SWC trees: ``id type x y z radius parent`` rows, ``#`` comments.

The SWC format (Cannon et al., J Neurosci Methods 1998) comes from neuron morphology; vessel
tools use it for centreline trees. Ids need not be 1..N nor sorted, and parents may come after
their children; parent ``-1`` (any negative id) marks a root. Coordinates and radii are read as
LPS mm unless ``frame`` / ``scale_to_mm`` say otherwise (neuron files are usually in um: 1e-3).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.io.atomic import write_text_atomic
from vesselfield.io.points import from_lps_mm, to_lps_mm
from vesselfield.tree import VesselTree


def _parse_int(text: str) -> int:
    value = float(text)  # some writers print ids as "12.0"
    if not value.is_integer():
        raise ValueError(text)
    return int(value)


def load_swc(path, *, frame: str = "LPS", scale_to_mm: float = 1.0) -> VesselTree:
    """Read an SWC file as a :class:`VesselTree` (node order = row order, labels = SWC type).

    Bad rows (fewer than 7 columns, non-numeric values, non-positive or NaN radius, duplicate
    ids, unknown parents) and parent cycles raise :class:`VesselfieldError` naming the line.
    """
    path = Path(path)
    if not path.is_file():
        raise VesselfieldError(f"SWC file {path} does not exist")
    ids, types, xyz, radius, parents, line_of = [], [], [], [], [], []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) < 7:
            raise VesselfieldError(f"SWC {path} line {number}: expected 7 columns (id type x y z radius parent), got {len(fields)}")
        try:
            row_id, row_type, row_parent = _parse_int(fields[0]), _parse_int(fields[1]), _parse_int(fields[6])
            row_xyz = [float(v) for v in fields[2:5]]
            row_radius = float(fields[5])
        except ValueError:
            raise VesselfieldError(f"SWC {path} line {number}: non-numeric or non-integer value in {line.strip()!r}") from None
        if not (np.all(np.isfinite(row_xyz)) and np.isfinite(row_radius) and row_radius > 0):
            raise VesselfieldError(f"SWC {path} line {number}: coordinates must be finite and the radius positive")
        ids.append(row_id)
        types.append(row_type)
        xyz.append(row_xyz)
        radius.append(row_radius)
        parents.append(row_parent)
        line_of.append(number)
    if not ids:
        raise VesselfieldError(f"SWC {path} holds no nodes")
    index_of: dict[int, int] = {}
    for i, row_id in enumerate(ids):
        if row_id in index_of:
            raise VesselfieldError(f"SWC {path} line {line_of[i]}: id {row_id} already used on line {line_of[index_of[row_id]]}")
        index_of[row_id] = i
    parent = np.full(len(ids), -1, dtype=np.int64)
    for i, p in enumerate(parents):
        if p >= 0:
            if p not in index_of:
                raise VesselfieldError(f"SWC {path} line {line_of[i]}: parent {p} is not an id in the file")
            if index_of[p] == i:
                raise VesselfieldError(f"SWC {path} line {line_of[i]}: node {p} is its own parent")
            parent[i] = index_of[p]
    _require_acyclic(parent, lambda i: f"SWC {path} line {line_of[i]}")
    return VesselTree(
        points_mm=to_lps_mm(np.array(xyz), frame, scale_to_mm),
        radius_mm=np.array(radius) * scale_to_mm,
        parent=parent,
        labels=np.array(types, dtype=np.int64),
    )


def _require_acyclic(parent: np.ndarray, where) -> None:
    """Raise when following parents from some node never reaches a root."""
    n = len(parent)
    children = [[] for _ in range(n)]
    for i, p in enumerate(parent.tolist()):
        if p >= 0:
            children[p].append(i)
    reached = np.zeros(n, dtype=bool)
    stack = list(np.nonzero(parent < 0)[0])
    while stack:
        i = stack.pop()
        reached[i] = True
        stack.extend(children[i])
    if not reached.all():
        first = int(np.argmin(reached))
        raise VesselfieldError(f"{where(first)}: parent links form a cycle (no path to a root)")


def save_swc(path, tree: VesselTree, *, frame: str = "LPS") -> None:
    """Write ``tree`` as SWC (ids 1..N in node order, type = label), atomically.

    Numbers are written as shortest round-trip decimals, so ``load_swc`` returns the same tree.
    """
    points = from_lps_mm(tree.points_mm, frame)
    lines = [
        "# SWC written by vesselfield: id type x y z radius parent (mm, " + frame.upper() + ")",
    ]
    for i in range(len(tree)):
        p = int(tree.parent[i])
        x, y, z = (repr(float(v)) for v in points[i])
        lines.append(f"{i + 1} {int(tree.labels[i])} {x} {y} {z} {float(tree.radius_mm[i])!r} {p + 1 if p >= 0 else -1}")
    write_text_atomic(path, "\n".join(lines) + "\n")
