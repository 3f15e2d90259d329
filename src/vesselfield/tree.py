"""Vessel centreline trees: points with radii and parent links (the SWC model).

A :class:`VesselTree` is what SWC files, centreline VTP files and the synthetic coronary
phantoms all produce: node ``i`` sits at ``points_mm[i]`` (LPS, mm) with radius
``radius_mm[i]`` and joins its parent ``parent[i]`` (``-1`` for a root) by a tapered tube.
The exact signed distance of the tube union lives in :mod:`vesselfield.phantoms`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vesselfield.errors import VesselfieldError


@dataclass
class VesselTree:
    """A forest of tapered tubes.

    Attributes:
        points_mm: (N, 3) node positions, LPS mm.
        radius_mm: (N,) node radii, mm (> 0).
        parent: (N,) index of each node's parent, -1 for roots; parents may come in any order.
        labels: (N,) integer label per node (e.g. SWC type or branch id), 0 when unknown.
    """

    points_mm: np.ndarray
    radius_mm: np.ndarray
    parent: np.ndarray
    labels: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self):
        self.points_mm = np.asarray(self.points_mm, dtype=np.float64).reshape(-1, 3)
        n = len(self.points_mm)
        self.radius_mm = np.asarray(self.radius_mm, dtype=np.float64).reshape(-1)
        self.parent = np.asarray(self.parent, dtype=np.int64).reshape(-1)
        if self.labels is None:
            self.labels = np.zeros(n, dtype=np.int64)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if n == 0:
            raise VesselfieldError("vessel tree has no nodes")
        if not (len(self.radius_mm) == len(self.parent) == len(self.labels) == n):
            raise VesselfieldError("vessel tree arrays (points, radius, parent, labels) differ in length")
        if not np.all(np.isfinite(self.points_mm)) or not np.all(np.isfinite(self.radius_mm)):
            raise VesselfieldError("vessel tree has NaN or infinite coordinates or radii")
        if np.any(self.radius_mm <= 0):
            raise VesselfieldError("vessel tree radii must be positive")
        if np.any((self.parent < -1) | (self.parent >= n)) or np.any(self.parent == np.arange(n)):
            raise VesselfieldError("vessel tree has a parent index outside the tree or a node that is its own parent")

    def __len__(self) -> int:
        return len(self.points_mm)

    def segments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every node-to-parent tube as ``(a_mm, b_mm, ra_mm, rb_mm)``: (M, 3), (M, 3), (M,), (M,).

        A tree with a single node (or isolated roots) yields a zero-length segment for each root
        with no children, so it is still a sphere.
        """
        child = np.nonzero(self.parent >= 0)[0]
        par = self.parent[child]
        has_child = np.zeros(len(self), bool)
        has_child[par] = True
        lonely = np.nonzero((self.parent < 0) & ~has_child)[0]
        idx_a = np.r_[child, lonely]
        idx_b = np.r_[par, lonely]
        return (
            self.points_mm[idx_a],
            self.points_mm[idx_b],
            self.radius_mm[idx_a],
            self.radius_mm[idx_b],
        )

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) of the tree including its radii, mm."""
        r = self.radius_mm[:, None]
        return (self.points_mm - r).min(0), (self.points_mm + r).max(0)

    def translated(self, offset_mm) -> "VesselTree":
        return VesselTree(self.points_mm + np.asarray(offset_mm, float), self.radius_mm.copy(),
                          self.parent.copy(), self.labels.copy())
