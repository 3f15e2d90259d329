"""Voxel footprints: which detector pixels a set of voxels can reach in a cone-beam view."""

from __future__ import annotations

import numpy as np

from vesselfield.grid import VolumeGrid

__all__ = ["voxel_footprint"]


def voxel_footprint(voxels: np.ndarray, grid: VolumeGrid, view) -> np.ndarray:
    """(H, W) bool: detector pixels whose ray can cross one of the ``voxels`` ((X, Y, Z) bool).

    A voxel's value reaches every ray that passes within one voxel of its centre (trilinear
    interpolation), so the eight corners of that (2 voxel)³ box are projected and the pixels
    of their bounding box are marked: a superset of the rays the voxel can reach.
    """
    h, w = view.detector_shape
    out = np.zeros((h, w), dtype=bool)
    ijk = np.argwhere(voxels)
    if len(ijk) == 0:
        return out
    corners = np.array([[a, b, c] for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)], dtype=np.float64)
    pts = (grid.origin + (ijk[:, None, :] + corners[None]) * grid.spacing).reshape(-1, 3)
    rc = view.project_points(pts).reshape(len(ijk), 8, 2)
    rc = np.nan_to_num(rc, nan=-1e9)
    lo = np.clip(np.floor(rc.min(axis=1) + 0.5), -1, [h, w]).astype(np.int64)
    hi = np.clip(np.floor(rc.max(axis=1) + 0.5), -1, [h, w]).astype(np.int64)
    size = (hi - lo).max(axis=0) + 1
    for dr in range(int(size[0])):
        for dc in range(int(size[1])):
            r = lo[:, 0] + dr
            c = lo[:, 1] + dc
            keep = (r <= hi[:, 0]) & (c <= hi[:, 1]) & (r >= 0) & (r < h) & (c >= 0) & (c < w)
            out[r[keep], c[keep]] = True
    return out
