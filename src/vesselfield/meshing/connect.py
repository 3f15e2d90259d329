"""One connected tree from a reconstruction that came out in pieces, and how to count the pieces.

Two views cannot tell a chain of beads from a tube: where a thin branch's rays barely overlap, a
fit may leave it as disconnected blobs, and a user cannot measure, mesh or simulate flow in a
broken tree. :func:`connect_components` bridges the gaps along the cheapest path *through the
region the views allow* (the visual hull): a minimum-cost path (``skimage.graph.MCP_Geometric``,
cost per mm 1 through empty hull voxels deep in the hull, up to 2 at its border, and
``OCCUPIED_COST`` through occupied ones, impassable outside the hull) from the largest piece to every other piece. The path may cross other pieces;
a piece's gap is the empty stretch between it and the last piece the path crossed. A gap of at
most ``max_gap_mm`` is filled with a tube along the path whose radius is the smaller of the two
pieces' inscribed radii where the path leaves them; pieces left unjoined and smaller than
``min_fragment_fraction`` of the volume are floating fragments and are removed.

:func:`topology_report` counts what a user would see: components, the share of the largest one,
and, against a ground truth, the breaks of the true centreline (pieces of the true skeleton that
the reconstruction covers, minus the true skeleton's own pieces).
"""

from __future__ import annotations

import numpy as np

from vesselfield.errors import VesselfieldError

__all__ = ["OCCUPIED_COST", "connect_components", "topology_report"]

OCCUPIED_COST = 0.02
"""Cost per mm of a path through occupied voxels, relative to 1 through empty ones (so the path's
cost is about the length of its gap, in mm)."""

_STRUCTURE = np.ones((3, 3, 3), dtype=bool)


def _label(mask):
    from scipy import ndimage

    return ndimage.label(mask, structure=_STRUCTURE)


def connect_components(occupancy, grid, allowed=None, *, max_gap_mm: float = 4.0, min_fragment_fraction: float = 0.02,
                       level: float = 0.5):
    """Join the pieces of a reconstruction into one tree (module docstring).

    Args:
        occupancy: (X, Y, Z) float in [0, 1].
        grid: its :class:`~vesselfield.grid.VolumeGrid` (spacing for the path lengths).
        allowed: (X, Y, Z) bool region a bridge may cross (the visual hull); None: everywhere.
        max_gap_mm: the longest gap that is bridged (0: no bridging).
        min_fragment_fraction: pieces left unconnected and smaller than this share of the occupied
            volume are removed (0: none).
        level: the occupancy level that is inside.

    Returns:
        ``(occupancy, report)``: the new (X, Y, Z) float32 occupancy (bridges at 1, removed pieces at
        0, the rest unchanged) and a dict with ``components_before``, ``bridged``, ``removed``,
        ``components_after``, ``gaps_mm`` (the gap of every bridge).
    """
    from scipy import ndimage
    from skimage.graph import MCP_Geometric

    occ = np.asarray(occupancy, dtype=np.float32).copy()
    if occ.ndim != 3:
        raise VesselfieldError(f"occupancy must be a 3D volume, got shape {occ.shape}")
    inside = occ >= level
    labels, n = _label(inside)
    report = {"components_before": int(n), "bridged": 0, "removed": 0, "components_after": int(n), "gaps_mm": []}
    if n <= 1:
        return occ, report
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    main = int(np.argmax(sizes))
    allowed = np.ones_like(inside) if allowed is None else (np.asarray(allowed, dtype=bool) | inside)
    spacing = np.asarray(grid.spacing, dtype=np.float64)
    joined = set()
    if max_gap_mm > 0:
        # Work in the box of the allowed region (the hull is a few % of the volume).
        idx = np.argwhere(allowed)
        lo, hi = idx.min(0), idx.max(0) + 1
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        # Empty voxels cost 1 per mm deep inside the allowed region and up to 2 at its border, so bridges run
        # down the middle of the hull (where the vessel is when the hull is tight around it).
        depth_mm = ndimage.distance_transform_edt(allowed[box], sampling=spacing)
        cost = np.where(inside[box], OCCUPIED_COST, 1.0 + float(spacing.min()) / np.maximum(depth_mm, 1e-9))
        cost[~allowed[box]] = np.inf
        sub_labels = labels[box]
        starts = np.argwhere(sub_labels == main)
        mcp = MCP_Geometric(cost, sampling=tuple(spacing))
        cumulative, _ = mcp.find_costs(starts)
        radius_mm = ndimage.distance_transform_edt(inside[box], sampling=spacing)
        order = np.argsort(-sizes)
        for k in order:
            if k == 0 or k == main or sizes[k] == 0:
                continue
            voxels = np.argwhere(sub_labels == k)
            reach = cumulative[tuple(voxels.T)]
            best = int(np.argmin(reach))
            if not np.isfinite(reach[best]):
                continue
            # The path runs from the largest piece to this one and may cross other pieces on the way: this
            # piece's gap is the empty stretch after the last occupied voxel of another piece. Every piece is
            # bridged to its neighbour along its path, so chains of beads join up piece by piece.
            path = np.asarray(mcp.traceback(tuple(voxels[best])))
            on_path = inside[box][tuple(path.T)]
            other = np.flatnonzero(on_path[:-1] & (sub_labels[tuple(path[:-1].T)] != k))
            last = int(other[-1]) if len(other) else 0
            path, on_path = path[last:], on_path[last:]
            steps = np.linalg.norm(np.diff(path, axis=0) * spacing, axis=1)
            empty_mm = float(np.sum(steps[~on_path[1:]]))
            if empty_mm > max_gap_mm:
                continue
            # A path leaves a piece at its wall, where the inscribed radius is ~0: the piece's radius is the
            # largest within two voxels of that point.
            r = max(min(_local_radius(radius_mm, voxels[best]), _local_radius(radius_mm, path[0])),
                    0.5 * float(spacing.min()))
            _draw_tube(occ[box], path[~on_path], r, spacing, allowed[box])
            joined.add(int(k))
            report["gaps_mm"].append(round(empty_mm, 3))
    report["bridged"] = len(joined)
    if min_fragment_fraction > 0:
        total = float(sizes.sum())
        for k in range(1, n + 1):
            if k != main and k not in joined and sizes[k] < min_fragment_fraction * total:
                occ[labels == k] = 0.0
                report["removed"] += 1
    report["components_after"] = int(_label(occ >= level)[1])
    return occ, report


def _local_radius(radius_mm: np.ndarray, voxel, reach: int = 2) -> float:
    lo = np.maximum(np.asarray(voxel) - reach, 0)
    hi = np.asarray(voxel) + reach + 1
    return float(radius_mm[tuple(slice(a, b) for a, b in zip(lo, hi))].max())


def _draw_tube(volume: np.ndarray, points: np.ndarray, radius_mm: float, spacing: np.ndarray, allowed) -> None:
    """Set to 1 every ``allowed`` voxel within ``radius_mm`` of any of ``points`` (voxel indices) in ``volume``."""
    if len(points) == 0:
        return
    reach = np.ceil(radius_mm / spacing).astype(int)
    offsets = np.stack(np.meshgrid(*[np.arange(-k, k + 1) for k in reach], indexing="ij"), -1).reshape(-1, 3)
    offsets = offsets[np.linalg.norm(offsets * spacing, axis=1) <= radius_mm + 1e-9]
    cells = (points[:, None, :] + offsets[None]).reshape(-1, 3)
    ok = np.all((cells >= 0) & (cells < np.asarray(volume.shape)), axis=1)
    cells = cells[ok]
    cells = cells[allowed[tuple(cells.T)]]
    volume[tuple(cells.T)] = 1.0


def topology_report(pred, target=None) -> dict:
    """Components of a binary reconstruction, and its centreline breaks against a ground truth.

    Returns:
        ``components`` (26-connected), ``largest_component_fraction`` (share of the occupied voxels
        in the largest), and with ``target``: ``target_components`` and ``skeleton_breaks`` (pieces of
        the target's skeleton covered by ``pred`` dilated by one voxel (face neighbours: a prediction
        one voxel off the true centreline still covers it, so gaps of up to two voxels are forgiven),
        minus the skeleton's own pieces: 0 for a reconstruction that follows every branch unbroken).
    """
    from scipy import ndimage

    from vesselfield.metrics.topology import skeleton

    p = np.asarray(pred, dtype=bool)
    labels, n = _label(p)
    sizes = np.bincount(labels.ravel())[1:]
    out = {"components": int(n),
           "largest_component_fraction": float(sizes.max() / sizes.sum()) if n else 0.0}
    if target is not None:
        t = np.asarray(target, dtype=bool)
        skel = skeleton(t)
        covered = skel & ndimage.binary_dilation(p)
        out["target_components"] = int(_label(t)[1])
        out["skeleton_breaks"] = int(max(_label(covered)[1] - _label(skel)[1], 0))
    return out
