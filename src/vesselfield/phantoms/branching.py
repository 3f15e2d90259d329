"""A seeded, binary branching vessel tree with an exact SDF: the test shape for fits from bare points.

Implicit vessel models are fitted to points on branching trees (a pulmonary artery, an
aorto-iliac model) whose branches run close together; :func:`branching_tree` draws such a tree:

- a root trunk of radius ``root_radius_mm`` along -z (downwards, LPS);
- every branch ends in a bifurcation into two children until ``generations`` levels exist, so
  the tree has ``2^generations - 1`` branches and ``2^(generations - 1)`` outlets;
- children follow Murray's law with equal flow split: ``r_child = r_parent / 2^(1/3)``; a branch
  is ``length_per_radius`` radii long;
- each child leaves its parent's direction at an angle drawn from ``angle_deg`` (uniform), the
  two on opposite sides of a plane through the parent's axis, rolled by a random angle;
- branches bend gently: the direction turns by up to 10 degrees along a branch;
- a draw whose branches come closer than ``clearance_mm`` to a non-adjacent branch (surface to
  surface) is drawn again (a new roll, up to 50 tries per bifurcation), so branches never touch
  except at their bifurcations.

Nodes are about every ``step_mm`` along each branch; radii are constant along a branch, and a
child's first node hangs from its parent's last one, so the round cones of
:class:`~vesselfield.phantoms.coronary.TreePhantom` join without gaps.
"""

from __future__ import annotations

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.tree import VesselTree

__all__ = ["branching_tree"]

#: Murray's law with two equal children: r_child^3 = r_parent^3 / 2.
MURRAY_RATIO = 2.0 ** (-1.0 / 3.0)


def _rotate(v: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues' rotation of ``v`` about the unit ``axis`` by ``angle`` radians."""
    return v * np.cos(angle) + np.cross(axis, v) * np.sin(angle) + axis * axis.dot(v) * (1 - np.cos(angle))


def _perpendicular(d: np.ndarray) -> np.ndarray:
    a = np.array([1.0, 0.0, 0.0]) if abs(d[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    p = np.cross(d, a)
    return p / np.linalg.norm(p)


def _branch(rng, start: np.ndarray, direction: np.ndarray, length: float, step: float) -> np.ndarray:
    """(M, 3) nodes from ``start`` (excluded) along a gently bending path of ``length`` mm."""
    n = max(2, int(np.ceil(length / step)))
    bend_axis = _perpendicular(direction)
    bend_axis = _rotate(bend_axis, direction, rng.uniform(0, 2 * np.pi))
    total = np.radians(rng.uniform(-10, 10))
    nodes, p, d = [], start.copy(), direction.copy()
    for _ in range(n):
        d = _rotate(d, bend_axis, total / n)
        p = p + d * (length / n)
        nodes.append(p.copy())
    return np.asarray(nodes)


def branching_tree(seed: int = 0, *, generations: int = 5, root_radius_mm: float = 4.0,
                   length_per_radius: float = 7.0, angle_deg: tuple[float, float] = (25.0, 45.0),
                   clearance_mm: float = 1.5, step_mm: float = 0.5) -> VesselTree:
    """A :class:`VesselTree` of ``2^generations - 1`` branches (see the module docstring), centred
    on the origin (LPS mm); the same seed gives the same tree."""
    from scipy.spatial import cKDTree

    if int(generations) < 1 or int(generations) > 8:
        raise VesselfieldError(f"generations must be in [1, 8], got {generations}")
    if not (root_radius_mm > 0 and length_per_radius > 0 and step_mm > 0 and clearance_mm >= 0):
        raise VesselfieldError("root_radius_mm, length_per_radius and step_mm must be positive, clearance_mm >= 0")
    lo_deg, hi_deg = float(angle_deg[0]), float(angle_deg[1])
    if not 0 <= lo_deg <= hi_deg < 90:
        raise VesselfieldError(f"angle_deg must be (low, high) with 0 <= low <= high < 90, got {angle_deg}")
    rng = np.random.default_rng(int(seed))
    points = [np.zeros(3)]
    radius = [float(root_radius_mm)]
    parent = [-1]
    labels = [1]
    trunk = _branch(rng, np.zeros(3), np.array([0.0, 0.0, -1.0]), length_per_radius * root_radius_mm, step_mm)

    def add(nodes, r, attach, label) -> list[int]:
        ids = []
        for p in nodes:
            points.append(p)
            radius.append(r)
            parent.append(attach)
            labels.append(label)
            attach = len(points) - 1
            ids.append(attach)
        return ids

    trunk_ids = add(trunk, float(root_radius_mm), 0, 1)
    # (last node id, direction, radius, generation, ids of the branch)
    tips = [(trunk_ids[-1], trunk[-1] - trunk[-2], float(root_radius_mm), 1, trunk_ids)]
    label = 1
    while tips:
        tip, direction, r, gen, own = tips.pop(0)
        if gen >= int(generations):
            continue
        direction = direction / np.linalg.norm(direction)
        rc = r * MURRAY_RATIO
        length = length_per_radius * rc
        for _ in range(50):
            normal = _rotate(_perpendicular(direction), direction, rng.uniform(0, 2 * np.pi))
            children = []
            for sign in (1.0, -1.0):
                d = _rotate(direction, normal, sign * np.radians(rng.uniform(lo_deg, hi_deg)))
                children.append((d, _branch(rng, points[tip], d, length, step_mm)))
            # Clearance against every node not on this branch or its parent's last stretch.
            others = np.setdiff1d(np.arange(len(points)), own)
            tree = cKDTree(np.asarray(points)[others])
            ok = True
            for d, nodes in children:
                far = nodes[np.linalg.norm(nodes - points[tip], axis=1) > 3 * r]
                if len(far):
                    dist, j = tree.query(far)
                    if np.any(dist - rc - np.asarray(radius)[others][j] < clearance_mm):
                        ok = False
            a, b = children[0][1], children[1][1]
            far_a = a[np.linalg.norm(a - points[tip], axis=1) > 3 * r]
            if len(far_a) and np.min(np.linalg.norm(far_a[:, None] - b[None], axis=2)) - 2 * rc < clearance_mm:
                ok = False
            if ok:
                break
        else:
            raise VesselfieldError(f"branching_tree(seed={seed}): no clear placement for a generation-{gen + 1} branch")
        for d, nodes in children:
            label += 1
            ids = add(nodes, rc, tip, label)
            tips.append((ids[-1], nodes[-1] - nodes[-2], rc, gen + 1, ids))
    pts = np.asarray(points)
    r_all = np.asarray(radius)
    lo, hi = (pts - r_all[:, None]).min(0), (pts + r_all[:, None]).max(0)
    return VesselTree(pts - (lo + hi) / 2, r_all, np.asarray(parent), np.asarray(labels))
