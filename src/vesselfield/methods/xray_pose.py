"""Self-calibration of a two-view C-arm geometry from the vessel trees themselves.

C-arm angle read-outs and isocenter calibration are off by 1-2° and 1-3 mm, and the heart and
table move between two single-plane acquisitions. Views that disagree by that much have a visual
hull that no longer holds the vessel (docs/methods/sdf-car.md, "Pose refinement"), so the pose is
corrected *before* the field is fitted, from what two views can tell about it: **epipolar
consistency of the trees' landmarks**.

1. Landmarks: each view's mask is thinned to its centreline (scikit-image ``skeletonize``), spurs
   shorter than ``min_branch_px`` are pruned, and its endpoints and bifurcations (centroids of the
   skeleton pixels with three or more neighbours) are the landmarks.
2. A landmark of view 0 and its counterpart in view v are the same 3D point, so the counterpart
   lies on the epipolar line of the first: the projection into view v of the ray through it,
   clipped to the volume's box. For a candidate pose of view v, every landmark's distance (in view
   v's pixels) to the nearest epipolar segment of a landmark of the same kind in the other view is
   its residual, in both directions (view 0 -> v and v -> 0).
3. The pose of view v (v >= 1) is its two angles and a 3D shift of the object it sees (written as
   the view's ``isocenter_mm``); view 0 is the reference: two views fix the scene only up to a
   rigid motion of everything, which no image can reveal. The cost is the mean truncated square
   residual ``min(r, τ)²`` (landmarks without a counterpart cost τ² whatever the pose) plus a
   quadratic pull to the recorded pose (``(δ/σ_angle)² + (|t|/σ_shift)²``, in units of τ²), minimised
   by Nelder-Mead from the recorded pose with τ shrinking from ``coarse`` to ``fine`` pixels. The
   parameters are bounded smoothly (``max x tanh``); a pose that ends within 5 % of a bound is a
   divergence, reported with the view's number. A correction that lowers the median landmark
   residual by less than ``min_improvement`` (25 %) is landmark noise, not a pose error: the
   recorded pose is kept, so exact geometry stays exact.

The residual along an epipolar line (depth) says nothing, so two views cannot see every pose
error: a shift of the object along the baseline (a change of scale, 0.2 % for 1.5 mm) stays, and
angle and shift errors that move the image alike are told apart only by parallax.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from vesselfield.errors import VesselfieldError

__all__ = ["Landmarks", "PoseRefinement", "landmarks", "refine_poses", "relative_rotation_error_deg"]


@dataclass
class Landmarks:
    """Centreline endpoints and bifurcations of one view: (N, 2) and (M, 2) float (row, column) pixels."""

    endpoints: np.ndarray
    junctions: np.ndarray

    def __len__(self) -> int:
        return len(self.endpoints) + len(self.junctions)


def _neighbour_count(skel: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.convolve(skel.astype(np.int32), np.ones((3, 3), np.int32), mode="constant") - skel


def _prune_spurs(skel: np.ndarray, min_branch_px: int) -> np.ndarray:
    """Remove skeleton branches that end free and are shorter than ``min_branch_px`` pixels."""
    skel = skel.copy()
    h, w = skel.shape
    offsets = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
    for _ in range(2):
        count = _neighbour_count(skel)
        ends = np.argwhere(skel & (count == 1))
        removed = False
        for r, c in ends:
            path = [(r, c)]
            seen = {(r, c)}
            cur = (r, c)
            reached_junction = False
            while len(path) <= min_branch_px:
                nxt = [(cur[0] + dr, cur[1] + dc) for dr, dc in offsets
                       if 0 <= cur[0] + dr < h and 0 <= cur[1] + dc < w and skel[cur[0] + dr, cur[1] + dc]
                       and (cur[0] + dr, cur[1] + dc) not in seen]
                if len(nxt) != 1:
                    reached_junction = len(nxt) > 1
                    break
                cur = nxt[0]
                if count[cur] >= 3:
                    reached_junction = True
                    break
                seen.add(cur)
                path.append(cur)
            if reached_junction and len(path) < min_branch_px:
                for p in path:
                    skel[p] = False
                removed = True
        if not removed:
            break
    return skel


def landmarks(mask, *, min_branch_px: int = 10) -> Landmarks:
    """Endpoints and bifurcations of a vessel mask's centreline (module docstring, step 1)."""
    from scipy import ndimage
    from skimage.morphology import skeletonize

    mask = np.asarray(mask, dtype=bool)
    skel = _prune_spurs(skeletonize(mask), int(min_branch_px))
    count = _neighbour_count(skel)
    endpoints = np.argwhere(skel & (count == 1)).astype(np.float64)
    labels, n = ndimage.label(skel & (count >= 3), structure=np.ones((3, 3)))
    junctions = (np.asarray(ndimage.center_of_mass(np.ones_like(labels), labels, range(1, n + 1)), np.float64)
                 if n else np.zeros((0, 2)))
    return Landmarks(endpoints.reshape(-1, 2), junctions.reshape(-1, 2))


def _epipolar_segments(points_rc: np.ndarray, view_from, view_to, grid, samples: int) -> np.ndarray:
    """(N, samples, 2) projections into ``view_to`` of the rays of ``view_from`` through ``points_rc``,
    sampled between where each ray enters and leaves the volume's box (NaN where it misses)."""
    lo, hi = grid.bounds_mm
    origins, dirs = view_from.rays(np.clip(points_rc, -0.5, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / dirs
        t1, t2 = (lo - origins) * inv, (hi - origins) * inv
    t_near = np.nanmax(np.minimum(t1, t2), axis=1)
    t_far = np.nanmin(np.maximum(t1, t2), axis=1)
    s = np.linspace(0.0, 1.0, samples)
    t = t_near[:, None] + (t_far - t_near)[:, None] * s[None, :]
    pts = origins[:, None, :] + t[..., None] * dirs[:, None, :]
    out = view_to.project_points(pts.reshape(-1, 3)).reshape(len(points_rc), samples, 2)
    out[t_far <= t_near] = np.nan
    return out


def _distance_to_polylines(points: np.ndarray, polylines: np.ndarray) -> np.ndarray:
    """(P,) distance of each point (P, 2) to the nearest of the polylines (N, S, 2) (inf if none)."""
    if len(points) == 0:
        return np.zeros(0)
    if len(polylines) == 0:
        return np.full(len(points), np.inf)
    a = polylines[:, :-1, :].reshape(-1, 2)
    b = polylines[:, 1:, :].reshape(-1, 2)
    ok = np.all(np.isfinite(a) & np.isfinite(b), axis=1)
    a, b = a[ok], b[ok]
    if len(a) == 0:
        return np.full(len(points), np.inf)
    ab = b - a
    denom = np.maximum((ab**2).sum(1), 1e-12)
    ap = points[:, None, :] - a[None, :, :]
    u = np.clip((ap * ab[None]).sum(-1) / denom[None], 0.0, 1.0)
    closest = a[None] + u[..., None] * ab[None]
    return np.sqrt(((points[:, None, :] - closest) ** 2).sum(-1)).min(axis=1)


def relative_rotation_error_deg(view0_a, view1_a, view0_b, view1_b) -> float:
    """Angle (deg) between the relative rotations of two view pairs: how far pair a's view 1 is turned
    from pair b's, seen from each pair's view 0 (the rotation two views can determine)."""
    rel_a = view1_a.rotation @ view0_a.rotation.T
    rel_b = view1_b.rotation @ view0_b.rotation.T
    m = rel_a @ rel_b.T
    return math.degrees(math.acos(float(np.clip((np.trace(m) - 1.0) / 2.0, -1.0, 1.0))))


@dataclass
class PoseRefinement:
    """What :func:`refine_poses` found.

    Attributes:
        geometry: the refined geometry (view 0 unchanged).
        corrections: per view, ``primary_offset_deg``, ``secondary_offset_deg``, ``shift_mm`` (3,)
            (the object shift the view sees), ``landmarks`` (in both views), ``residual_px_before`` and
            ``residual_px_after`` (median residual of the landmarks that found a counterpart within
            the coarse radius, before and after), ``inliers`` (landmarks within the fine radius after).
    """

    geometry: object
    corrections: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"reference_view": 0, "views": self.corrections, "geometry": self.geometry.to_dict()}


def _unpack(x: np.ndarray, max_angle_deg: float, max_shift_mm: float) -> tuple[float, float, np.ndarray]:
    return (max_angle_deg * math.tanh(x[0]), max_angle_deg * math.tanh(x[1]),
            max_shift_mm * np.tanh(np.asarray(x[2:5])))


def refine_poses(geometry, masks, *, max_angle_deg: float = 5.0, max_shift_mm: float = 10.0,
                 sigma_angle_deg: float = 2.0, sigma_shift_mm: float = 5.0, coarse_px: float | None = None,
                 fine_px: float | None = None, min_branch_px: int | None = None, samples: int = 48,
                 min_landmarks: int = 6, min_improvement: float = 0.25) -> PoseRefinement:
    """Correct the pose of views 1, 2, ... against view 0 (module docstring).

    Args:
        geometry: the recorded :class:`~vesselfield.geometry.Geometry`.
        masks: one (H, W) bool vessel mask per view.
        max_angle_deg, max_shift_mm: bounds of the correction of each angle and of each shift
            component.
        sigma_angle_deg, sigma_shift_mm: scale of the pull towards the recorded pose.
        coarse_px, fine_px: the truncation radius τ at the start and the end (pixels of the view;
            None: 3 mm and 0.5 mm at the isocenter, in pixels).
        min_branch_px: spurs shorter than this are pruned (None: 2 mm at the isocenter, in pixels).
        samples: points along each epipolar segment.
        min_landmarks: with fewer landmarks than this in view 0 or view v, view v keeps its recorded
            pose and its correction says why (``skipped``).
        min_improvement: the correction is kept only when it lowers the median landmark residual by
            at least this fraction; otherwise the views already agree to within the landmarks'
            localisation noise, and the recorded pose stays (``kept``).

    Raises:
        VesselfieldError: a correction that ran to its bound (naming the view).
    """
    from scipy.optimize import minimize

    from vesselfield.geometry import Geometry

    views = list(geometry.views)
    grid = geometry.volume
    mm_per_px = [float(np.mean(v.pixel_spacing_mm)) / v.magnification for v in views]
    marks = []
    for i, (mask, view) in enumerate(zip(masks, views)):
        branch = int(round(2.0 / mm_per_px[i])) if min_branch_px is None else int(min_branch_px)
        marks.append(landmarks(mask, min_branch_px=branch))
    refined = [views[0]]
    corrections = [{"view": 1, "primary_offset_deg": 0.0, "secondary_offset_deg": 0.0, "shift_mm": [0.0, 0.0, 0.0],
                    "reference": True, "landmarks": len(marks[0])}]
    ref, ref_marks = views[0], marks[0]
    for v in range(1, len(views)):
        view, vm = views[v], marks[v]
        few = min(len(ref_marks), len(vm))
        if few < min_landmarks:
            # A single vessel or a tiny tree: nothing to calibrate on. The recorded pose stays, and says so.
            refined.append(view)
            corrections.append({"view": v + 1, "primary_offset_deg": 0.0, "secondary_offset_deg": 0.0,
                                "shift_mm": [0.0, 0.0, 0.0], "landmarks": len(vm), "residual_px_before": None,
                                "residual_px_after": None,
                                "skipped": f"views 1 and {v + 1} show {len(ref_marks)} and {len(vm)} centreline "
                                           f"endpoints and bifurcations, fewer than {min_landmarks}: the recorded "
                                           f"pose is kept"})
            continue
        px = mm_per_px[v]
        tau_hi = 3.0 / px if coarse_px is None else float(coarse_px)
        tau_lo = 0.5 / px if fine_px is None else float(fine_px)

        def residuals(x, view=view, vm=vm):
            da, db, t = _unpack(x, max_angle_deg, max_shift_mm)
            cand = view.moved(primary_deg=da, secondary_deg=db, shift_mm=t)
            out = []
            for kind in ("endpoints", "junctions"):
                a, b = getattr(ref_marks, kind), getattr(vm, kind)
                out.append(_distance_to_polylines(b, _epipolar_segments(a, ref, cand, grid, samples)))
                # view v -> view 0, measured in view 0's pixels, scaled to view v's.
                out.append(_distance_to_polylines(a, _epipolar_segments(b, cand, ref, grid, samples))
                           * mm_per_px[0] / px)
            return np.concatenate(out)

        def cost(x, tau):
            da, db, t = _unpack(x, max_angle_deg, max_shift_mm)
            r = np.minimum(residuals(x), tau)
            prior = (da**2 + db**2) / sigma_angle_deg**2 + float(t @ t) / sigma_shift_mm**2
            return float(np.mean(r**2)) + prior * tau_lo**2

        before = residuals(np.zeros(5))
        x = np.zeros(5)
        # First simplex steps: 1° and 1.5 mm, or half the bound when the bound is smaller.
        step = np.array([math.atanh(min(1.0 / max_angle_deg, 0.5))] * 2 + [math.atanh(min(1.5 / max_shift_mm, 0.5))] * 3)
        tau = tau_hi
        while True:
            simplex = np.vstack([x, x + np.diag(step)])
            res = minimize(cost, x, args=(tau,), method="Nelder-Mead",
                           options={"initial_simplex": simplex, "xatol": 1e-4, "fatol": 1e-6, "maxfev": 4000})
            x = res.x
            if tau <= tau_lo:
                break
            tau = max(tau_lo, tau / 2.0)
            step = step / 2.0
        da, db, t = _unpack(x, max_angle_deg, max_shift_mm)
        bounded = [abs(da) / max_angle_deg, abs(db) / max_angle_deg, *(np.abs(t) / max_shift_mm)]
        if max(bounded) > 0.95:
            raise VesselfieldError(
                f"pose refinement of view {v + 1} diverged: the correction ran to its bound (angles "
                f"{da:+.2f}°, {db:+.2f}°, shift {np.round(t, 2).tolist()} mm; bounds ±{max_angle_deg:g}°, "
                f"±{max_shift_mm:g} mm): the views may not show the same vessels; check the geometry or use "
                f"--no-refine-pose")
        after = residuals(x)
        matched_before = before[before < tau_hi]
        matched_after = after[after < tau_hi]
        med_before = float(np.median(matched_before)) if len(matched_before) else math.inf
        med_after = float(np.median(matched_after)) if len(matched_after) else math.inf
        if not med_after <= (1.0 - min_improvement) * med_before:
            # Landmark noise, not a pose error: a correction here would only move a good geometry.
            refined.append(view)
            corrections.append({
                "view": v + 1, "primary_offset_deg": 0.0, "secondary_offset_deg": 0.0, "shift_mm": [0.0, 0.0, 0.0],
                "landmarks": len(vm), "residual_px_before": med_before if math.isfinite(med_before) else None,
                "residual_px_after": med_before if math.isfinite(med_before) else None,
                "kept": f"the best correction lowers the median landmark residual from {med_before:.2f} to "
                        f"{med_after:.2f} px, less than {100 * min_improvement:.0f} %: the recorded pose agrees "
                        f"with view 1 to within the landmarks' noise"})
            continue
        refined.append(view.moved(primary_deg=da, secondary_deg=db, shift_mm=t))
        corrections.append({
            "view": v + 1, "primary_offset_deg": float(da), "secondary_offset_deg": float(db),
            "shift_mm": [float(s) for s in t], "landmarks": len(vm),
            "residual_px_before": float(np.median(matched_before)) if len(matched_before) else None,
            "residual_px_after": float(np.median(matched_after)) if len(matched_after) else None,
            "inliers_before": int((before < tau_lo).sum()), "inliers_after": int((after < tau_lo).sum()),
            "residuals": int(len(after)),
        })
    return PoseRefinement(Geometry(grid, refined), corrections)
