"""Exact signed distances of round cones and of vessel trees built from them.

A *round cone* (tapered capsule) is the convex hull of two spheres ``(a, ra)`` and ``(b, rb)``;
a :class:`~vesselfield.tree.VesselTree` is the union of one round cone per node-to-parent
segment. Distances are in mm, negative inside.

Formula (derived here; it is the "round cone" of I. Quilez, "distance functions",
iquilezles.org/articles/distfunctions, restated in our notation). The solid is a body of
revolution about the axis ``u = (b - a) / L``, ``L = |b - a|``, so the distance is a 2D distance
in the meridian half-plane of the point: ``x = (p - a).u`` (along the axis) and ``y = |p - a - x u|``
(off the axis). In that plane the solid is the hull of two discs, bounded by arc ``a``, the common
tangent line and arc ``b``. With ``s = (ra - rb) / L`` and ``c = sqrt(1 - s^2)`` the tangent line
has outward unit normal ``n = (s, c)`` and touches the discs at ``ra n`` and ``(L, 0) + rb n``;
its direction is ``t = (c, -s)`` and ``k = (x, y).t`` runs from 0 (arc ``a``) to ``L c`` (arc ``b``):

    k < 0:          d = |p - a| - ra
    k > L c:        d = |p - b| - rb
    otherwise:      d = x s + y c - ra            (distance to the tangent line)

Exact on both sides. For any convex solid K, sdf_K(p) = max over unit n of (n.p - h_K(n)),
with support function h_K(n) = max(n.a + ra, n.b + rb) here; the maximising n is the normal of
the nearest feature: (p - a)/|p - a| in the first case, (p - b)/|p - b| in the second, the
side's normal in p's meridian plane in the third, which gives the three expressions inside
and outside alike (tests check this against a brute-force maximisation over n).
Degenerate cones, ``L <= |ra - rb|`` (one sphere holds the other, zero length included), are
replaced by the larger sphere, which is then the whole solid.

A tree's signed distance here is ``min_i d_i`` over its round cones. Outside the union this is
the exact distance, and its zero level set is exactly the union's surface. Inside, ``min_i d_i``
is ``-(depth of the deepest single member)``, which is >= the true signed distance (the union
is at least as deep as any member): it never overstates the distance to the surface (safe for
sphere tracing), and it is exact wherever the largest ball about the point inside the union
fits in one member, e.g. everywhere except near junctions of tubes.

Points may be NumPy arrays (the result is NumPy, float32 kept, otherwise float64) or torch
tensors (float32/float64, any device; the result follows their dtype/device and is
differentiable with respect to the points).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

import numpy as np
import torch

from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid
from vesselfield.tree import VesselTree

# Group sizes of the point hierarchy in tree_sdf: each level splits a group of the level above
# into 8 Morton-consecutive children. Stopping at 64 instead of 8 was 3x slower on a 128^3 grid;
# going on to single points added more filtering than it saved.
_LEVELS = (4096, 512, 64, 8)


# --------------------------------------------------------------------------------- inputs
def _points_in(points_mm) -> tuple[torch.Tensor, Callable]:
    """(..., 3) points as a floating tensor, and a function turning a (...,) result back."""
    if isinstance(points_mm, torch.Tensor):
        p = points_mm if points_mm.is_floating_point() else points_mm.to(torch.float64)
        back = lambda t: t  # noqa: E731
    else:
        arr = np.asarray(points_mm)
        if arr.dtype.kind not in "fiu":
            raise VesselfieldError(f"points must be numeric, got dtype {arr.dtype}")
        arr = arr.astype(np.float32 if arr.dtype == np.float32 else np.float64, copy=False)
        p = torch.from_numpy(np.ascontiguousarray(arr))
        back = lambda t: t.detach().cpu().numpy()  # noqa: E731
    if p.ndim == 0 or p.shape[-1] != 3:
        raise VesselfieldError(f"points must have shape (..., 3), got {tuple(p.shape)}")
    if not bool(torch.isfinite(p.detach()).all()):
        raise VesselfieldError("points contain NaN or infinite coordinates")
    return p, back


def _sqrt_safe(x2: torch.Tensor) -> torch.Tensor:
    # sqrt of a clamped square: no inf/NaN gradient on the axis or at a sphere's centre, where
    # the gradient is undefined anyway (we return 0 there); the value shifts by <1e-18 mm.
    return torch.sqrt(torch.clamp(x2, min=torch.finfo(x2.dtype).tiny))


@dataclass
class RoundCones:
    """M round cones in the form the distance kernel needs (all tensors on one device/dtype).

    Attributes:
        a: (M, 3) first sphere centre, mm (the larger sphere's centre for degenerate cones).
        u: (M, 3) unit axis a -> b ((1, 0, 0) for zero length).
        length: (M,) axis length L, mm (0 for degenerate cones).
        ra, rb: (M,) radii, mm.
        s, c: (M,) sine and cosine of the side's slope, s = (ra - rb) / L.
    """

    a: torch.Tensor
    u: torch.Tensor
    length: torch.Tensor
    ra: torch.Tensor
    rb: torch.Tensor
    s: torch.Tensor
    c: torch.Tensor

    @classmethod
    def from_spheres(cls, a, b, ra, rb) -> "RoundCones":
        """From sphere pairs: a, b (M, 3) mm; ra, rb (M,) mm (NumPy or torch; float64 inside)."""
        try:
            a, b, ra, rb = (torch.as_tensor(np.asarray(v, float) if not isinstance(v, torch.Tensor) else v)
                            .to(torch.float64) for v in (a, b, ra, rb))
        except (TypeError, ValueError):
            raise VesselfieldError("round cone centres and radii must be numbers") from None
        a, b = a.reshape(-1, 3), b.reshape(-1, 3)
        ra, rb = torch.broadcast_to(ra.reshape(-1), a.shape[:1]), torch.broadcast_to(rb.reshape(-1), a.shape[:1])
        if a.shape != b.shape:
            raise VesselfieldError(f"round cone ends differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
        if not (torch.isfinite(a).all() and torch.isfinite(b).all() and torch.isfinite(ra).all() and torch.isfinite(rb).all()):
            raise VesselfieldError("round cone centres or radii contain NaN or infinite values")
        if bool((ra < 0).any() or (rb < 0).any()):
            raise VesselfieldError("round cone radii must be >= 0")
        d = b - a
        length = _sqrt_safe((d * d).sum(-1))
        degenerate = length <= (ra - rb).abs()
        # The larger sphere contains the smaller one: the hull is that sphere alone.
        a_big = torch.where((ra >= rb)[:, None], a, b)
        r_big = torch.maximum(ra, rb)
        a = torch.where(degenerate[:, None], a_big, a)
        ra = torch.where(degenerate, r_big, ra)
        rb = torch.where(degenerate, r_big, rb)
        length = torch.where(degenerate, torch.zeros_like(length), length)
        ok = length > 0
        safe_len = torch.where(ok, length, torch.ones_like(length))
        ex = torch.zeros_like(a)
        ex[:, 0] = 1.0
        u = torch.where(ok[:, None], d / safe_len[:, None], ex)
        s = torch.where(ok, (ra - rb) / safe_len, torch.zeros_like(length))
        c = _sqrt_safe(1.0 - s * s)
        return cls(a, u, length, ra, rb, s, c)

    @classmethod
    def from_tree(cls, tree: VesselTree) -> "RoundCones":
        """One round cone per segment of ``tree`` (a lone root is a sphere)."""
        if not isinstance(tree, VesselTree):
            raise VesselfieldError(f"expected a VesselTree, got {type(tree).__name__}")
        return cls.from_spheres(*tree.segments())

    def __len__(self) -> int:
        return self.a.shape[0]

    def to(self, like: torch.Tensor) -> "RoundCones":
        """The same cones in ``like``'s dtype and device."""
        kw = dict(dtype=like.dtype, device=like.device)
        return RoundCones(*(getattr(self, f).to(**kw) for f in ("a", "u", "length", "ra", "rb", "s", "c")))

    def packed(self) -> torch.Tensor:
        """(11, M) constants, rows a(3), u(3), L, ra, rb, s, c: what the kernel gathers per pair."""
        return torch.cat([self.a.T, self.u.T, torch.stack([self.length, self.ra, self.rb, self.s, self.c])], 0).contiguous()

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) box holding every cone, mm."""
        b = self.a + self.u * self.length[:, None]
        lo = torch.minimum(self.a - self.ra[:, None], b - self.rb[:, None]).amin(0)
        hi = torch.maximum(self.a + self.ra[:, None], b + self.rb[:, None]).amax(0)
        return lo.detach().cpu().numpy().astype(float), hi.detach().cpu().numpy().astype(float)


def _round_cone_kernel(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Signed distance by the module docstring's formula.

    q: (3, *S) point coordinate planes; k: (11, *S') packed cone constants (RoundCones.packed),
    S' broadcasting to S. Planes instead of (..., 3) rows: the dot products become fused
    multiply-adds over contiguous memory (~25% faster than summing over a last axis of 3).
    """
    length, ra, rb, s, c = k[6], k[7], k[8], k[9], k[10]
    wx, wy, wz = q[0] - k[0], q[1] - k[1], q[2] - k[2]
    x = (wx * k[3]).addcmul_(wy, k[4]).addcmul_(wz, k[5])
    # y from the perpendicular component, not sqrt(|w|^2 - x^2): that difference cancels
    # near the axis and would cost ~1e-3 mm in float32.
    px, py, pz = torch.addcmul(wx, x, k[3], value=-1), torch.addcmul(wy, x, k[4], value=-1), torch.addcmul(wz, x, k[5], value=-1)
    y2 = (px * px).addcmul_(py, py).addcmul_(pz, pz)
    y = _sqrt_safe(y2)
    along = x * c - y * s
    d_a = _sqrt_safe(x * x + y2) - ra
    xb = x - length
    d_b = _sqrt_safe(xb * xb + y2) - rb
    d_side = x * s + y * c - ra
    return torch.where(along < 0, d_a, torch.where(along > length * c, d_b, d_side))


# ------------------------------------------------------------------------------- public API
def round_cone_sdf(points_mm, a_mm, b_mm, ra_mm, rb_mm):
    """Exact signed distance to the round cone hull{sphere(a, ra), sphere(b, rb)}.

    Args:
        points_mm: (..., 3) query points, mm (NumPy or torch).
        a_mm, b_mm: (3,) sphere centres, mm.
        ra_mm, rb_mm: sphere radii, mm (>= 0; ra == rb is a capsule, a == b a sphere).

    Returns:
        (...,) signed distance, mm, negative inside; NumPy for NumPy points, else a tensor on the
        points' device and dtype, differentiable w.r.t. the points. Formula: module docstring.
    """
    p, back = _points_in(points_mm)
    cones = RoundCones.from_spheres(a_mm, b_mm, ra_mm, rb_mm)
    if len(cones) != 1:
        raise VesselfieldError("round_cone_sdf takes one cone; use tree_sdf for many")
    k = cones.to(p).packed().reshape((11,) + (1,) * (p.ndim - 1))
    return back(_round_cone_kernel(torch.movedim(p, -1, 0), k))


def _part1by2(v: torch.Tensor) -> torch.Tensor:
    # Spread the low 10 bits of v so that two zero bits separate each (Morton interleave).
    v = (v | (v << 16)) & 0x030000FF
    v = (v | (v << 8)) & 0x0300F00F
    v = (v | (v << 4)) & 0x030C30C3
    v = (v | (v << 2)) & 0x09249249
    return v


def _morton_order(p: torch.Tensor) -> torch.Tensor:
    """(N,) permutation sorting (N, 3) points along a Z-order curve (compact runs of points)."""
    lo = p.amin(0)
    extent = float((p.amax(0) - lo).max())
    if extent <= 0:
        return torch.arange(p.shape[0], device=p.device)
    q = ((p - lo) * (1023.999 / extent)).to(torch.int64).clamp_(0, 1023)
    code = _part1by2(q[:, 0]) | (_part1by2(q[:, 1]) << 1) | (_part1by2(q[:, 2]) << 2)
    return torch.argsort(code)


def _group_boxes(pts: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres (G, 3) and half-diagonals (G,) of the boxes of consecutive groups of ``size``."""
    g = pts.view(-1, size, 3)
    lo, hi = g.amin(1), g.amax(1)
    return 0.5 * (lo + hi), 0.5 * torch.linalg.vector_norm(hi - lo, dim=-1)


def _pair_min(planes, packed, group, cone, chunk, init, keep_values=True, track=False):
    """Values of cone[i] at the r points of group[i], and their min per point (no autograd).

    planes: (3, G, r) point coordinates; packed: (11, M) cone constants; group, cone: (P,)
    pair indices. Returns the list of value batches (each (P_batch, r); empty unless
    ``keep_values``), the (G, r) minimum over the pairs (``init`` where a group has none) and,
    with ``track``, the (G, r) cone attaining it (-1 where none; any one of tied cones).
    """
    n_groups, r = planes.shape[1], planes.shape[2]
    best = torch.full((n_groups, r), init, dtype=planes.dtype, device=planes.device)
    arg = torch.full((n_groups, r), -1, dtype=torch.long, device=planes.device) if track else None
    vals = []
    step = max(1, chunk // r)
    for i in range(0, group.numel(), step):
        gi, ci = group[i:i + step], cone[i:i + step]
        v = _round_cone_kernel(planes[:, gi], packed[:, ci, None])
        best.scatter_reduce_(0, gi[:, None].expand(-1, r), v, reduce="amin")
        if track:
            # Pairs equal to the running minimum (this batch included) claim it; a later
            # batch only overwrites with a value as small.
            row, col = (v == best[gi]).nonzero(as_tuple=True)
            arg[gi[row], col] = ci[row]
        if keep_values:
            vals.append(v)
    return vals, best, arg


def _min_over_cones(cones: RoundCones, p: torch.Tensor, chunk: int, max_distance: float | None) -> torch.Tensor:
    """min_i d_i(p) for (N, 3) points p (optionally clamped above at max_distance), (N,).

    Culling is exact, not approximate: each d_i is 1-Lipschitz, so over a group of points with
    box centre m and half-diagonal h, d_i >= d_i(m) - h and min_j d_j <= min_j d_j(m) + h; cone
    i can be the minimum somewhere in the group only if d_i(m) <= min_j d_j(m) + 2h. Points are
    sorted along a Z-order curve and grouped 4096 -> 512 -> 64 -> 8 (each group splits into 8
    children); the (group, cone) pairs are filtered level by level, the cone constants of a
    parent pair serving its 8 children, and only the survivors are evaluated point by point.
    """
    n = p.shape[0]
    m = len(cones)
    levels = [b for b in _LEVELS if b <= max(n, _LEVELS[-1])] or [_LEVELS[-1]]
    top = levels[0]
    order = _morton_order(p.detach())
    n_pad = -(-n // top) * top
    idx = torch.cat([order, order[-1:].expand(n_pad - n)]) if n_pad > n else order
    pts = p[idx]
    pts_d = pts.detach()
    scale = float(pts_d.abs().max()) + float(cones.ra.abs().max()) + 1.0
    tol = 64.0 * torch.finfo(p.dtype).eps * scale
    big = torch.finfo(p.dtype).max
    packed = cones.packed()
    device = p.device

    with torch.no_grad():
        # Level 0 is one virtual parent holding all top groups, paired with every cone.
        group = torch.zeros(m, dtype=torch.long, device=device)
        cone = torch.arange(m, device=device)
        parent = n_pad
        for size in levels:
            r = parent // size
            centre, half = _group_boxes(pts_d, size)
            planes = centre.T.reshape(3, -1, r)
            vals, best, _ = _pair_min(planes, packed, group, cone, chunk, big)
            v = torch.cat(vals) if vals else best.new_zeros((0, r))
            h = half.view(-1, r)[group]
            ok = v <= best[group] + 2.0 * h + tol
            if max_distance is not None:
                ok &= v - h <= max_distance
            pair, child = ok.nonzero(as_tuple=True)
            group, cone = group[pair] * r + child, cone[pair]
            parent = size

        planes = pts_d.view(-1, levels[-1], 3).permute(2, 0, 1)
        grad = p.requires_grad or packed.requires_grad
        _, out, arg = _pair_min(planes, packed.detach(), group, cone, chunk,
                                big if max_distance is None else max_distance, keep_values=False, track=grad)
        out = out.reshape(-1)
        if max_distance is not None:
            out = torch.clamp(out, max=max_distance)

    if grad:
        # The min's gradient is its attaining cone's: re-evaluate that one cone per point with
        # autograd on (one kernel call instead of differentiating every pair).
        arg = arg.reshape(-1)
        found = arg >= 0
        value = _round_cone_kernel(pts.T, packed[:, arg.clamp(min=0)])
        keep = found if max_distance is None else found & (out < max_distance)
        out = torch.where(keep, value, out)
    # Undo the Morton sort (padding rows were copies of a real point and are dropped).
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(n, device=device)
    return out[:n][inverse]


def tree_sdf(tree, points_mm, *, chunk: int = 1 << 21, max_distance_mm: float | None = None):
    """Signed distance of a vessel tree, ``min_i d_i`` over its round cones (mm, negative inside).

    Exact outside the union and on its surface; inside, >= the true signed distance (the depth
    of the deepest single tube, see the module docstring).

    Args:
        tree: a :class:`VesselTree` (or :class:`RoundCones`).
        points_mm: (..., 3) query points, mm; NumPy in -> NumPy out, torch in -> torch out (same
            device and dtype, differentiable w.r.t. the points).
        chunk: largest number of point-cone evaluations held in memory at once.
        max_distance_mm: if given, values are clamped to at most this (a narrow band: far
            groups of points are then filled without evaluating any cone, which is faster).

    Returns:
        (...,) signed distances, mm.

    Cost: cones are culled per group of points by exact Lipschitz bounds (see
    ``_min_over_cones``), so a point meets ~20 cones on average instead of all of them.
    Measured on the 128^3 x 0.8 mm default grid (2.1 M points) against the left coronary tree
    (575 segments): 1.5-1.8 s exact, 0.35 s with ``max_distance_mm=5`` on 2 CPU cores; 0.06 s
    on an H100. With autograd on, the gradient is that of the attaining cone, re-evaluated
    once per point (1.9 s for the same grid on 2 cores).
    """
    if chunk < 1:
        raise VesselfieldError(f"chunk must be >= 1, got {chunk}")
    if max_distance_mm is not None and not np.isfinite(max_distance_mm):
        raise VesselfieldError(f"max_distance_mm must be finite, got {max_distance_mm}")
    p, back = _points_in(points_mm)
    cones = tree if isinstance(tree, RoundCones) else RoundCones.from_tree(tree)
    shape = p.shape[:-1]
    flat = p.reshape(-1, 3)
    if flat.shape[0] == 0:
        return back(flat.new_zeros(shape))
    out = _min_over_cones(cones.to(flat), flat, int(chunk), max_distance_mm)
    return back(out.reshape(shape))


# ---------------------------------------------------------------------------------- volumes
SdfSource = Union[VesselTree, RoundCones, Callable]


def _evaluator(source, device: str, max_distance_mm: float | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """A function (N, 3) float32 mm -> (N,) float32 signed distance for a tree or a callable."""
    if isinstance(getattr(source, "cones", None), RoundCones):  # a TreePhantom
        source = source.cones
    if isinstance(source, (VesselTree, RoundCones)):
        cones = source if isinstance(source, RoundCones) else RoundCones.from_tree(source)
        from vesselfield.device import resolve_device

        dev = resolve_device(device)

        def evaluate(points: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                p = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32)).to(dev)
                return tree_sdf(cones, p, max_distance_mm=max_distance_mm).cpu().numpy()

        return evaluate
    if not callable(source) and callable(getattr(source, "sdf", None)):  # a phantom object
        source = source.sdf
    if not callable(source):
        raise VesselfieldError(f"expected a VesselTree or an SDF function, got {type(source).__name__}")

    def evaluate(points: np.ndarray) -> np.ndarray:
        out = source(points)
        if isinstance(out, torch.Tensor):
            out = out.detach().cpu().numpy()
        out = np.asarray(out, dtype=np.float32).reshape(-1)
        if out.shape[0] != points.shape[0]:
            raise VesselfieldError(f"SDF function returned {out.shape[0]} values for {points.shape[0]} points")
        return out

    return evaluate


def _in_batches(evaluate, points: np.ndarray, batch: int = 1 << 22) -> np.ndarray:
    if points.shape[0] <= batch:
        return evaluate(points)
    return np.concatenate([evaluate(points[i:i + batch]) for i in range(0, points.shape[0], batch)])


def sdf_volume(source: SdfSource, grid: VolumeGrid, *, max_distance_mm: float | None = None,
               device: str = "cpu") -> np.ndarray:
    """Signed distance at every voxel centre of ``grid``: float32 (X, Y, Z), mm.

    Args:
        source: a :class:`VesselTree` or :class:`TreePhantom` (exact, via :func:`tree_sdf`), a
            function mapping (N, 3) float32 NumPy points in mm to (N,) signed distances (NumPy
            or tensor), or an object with such an ``sdf`` method (e.g. an AAAPhantom: wall).
        grid: the voxel grid (LPS mm).
        max_distance_mm: clamp values above this (trees only; faster narrow band).
        device: torch device for trees ("cpu", "cuda", "auto").
    """
    if not isinstance(grid, VolumeGrid):
        raise VesselfieldError(f"grid must be a VolumeGrid, got {type(grid).__name__}")
    evaluate = _evaluator(source, device, max_distance_mm)
    points = grid.voxel_centers_mm(np.float32).reshape(-1, 3)
    return _in_batches(evaluate, points).reshape(grid.shape).astype(np.float32, copy=False)


def occupancy_volume(source: SdfSource, grid: VolumeGrid, supersample: int = 3, *, device: str = "cpu") -> np.ndarray:
    """Partial-volume fraction of each voxel inside the surface: float32 (X, Y, Z) in [0, 1].

    A voxel whose centre is at least one voxel diagonal from the surface (|sdf| >= diagonal) is
    exactly 0 or 1 (the SDF is 1-Lipschitz and, inside a tree, never overstates depth, so the
    whole voxel is on one side). Near the surface the fraction is the mean of the inside
    indicator (sdf < 0) at ``supersample^3`` sub-voxel centres (a midpoint-rule estimate).
    """
    if not isinstance(grid, VolumeGrid):
        raise VesselfieldError(f"grid must be a VolumeGrid, got {type(grid).__name__}")
    if isinstance(supersample, bool) or not isinstance(supersample, (int, np.integer)) or supersample < 1:
        raise VesselfieldError(f"supersample must be an integer >= 1, got {supersample!r}")
    s = int(supersample)
    diagonal = float(np.linalg.norm(grid.spacing))
    # The band test only needs values up to one diagonal: clamp there to skip far tubes.
    evaluate = _evaluator(source, device, max_distance_mm=2.0 * diagonal)
    centres = grid.voxel_centers_mm(np.float32).reshape(-1, 3)
    sdf = _in_batches(evaluate, centres)
    occ = (sdf < 0).astype(np.float32)
    band = np.nonzero(np.abs(sdf) < diagonal)[0]
    if band.size and s > 1:
        offs = (np.arange(s) + 0.5) / s - 0.5
        sub = np.stack(np.meshgrid(offs, offs, offs, indexing="ij"), -1).reshape(-1, 3) * grid.spacing
        per_batch = max(1, (1 << 21) // sub.shape[0])
        for i in range(0, band.size, per_batch):
            ids = band[i:i + per_batch]
            pts = (centres[ids, None, :].astype(np.float64) + sub[None]).reshape(-1, 3).astype(np.float32)
            inside = evaluate(pts).reshape(len(ids), -1) < 0
            occ[ids] = inside.mean(1)
    return occ.reshape(grid.shape)
