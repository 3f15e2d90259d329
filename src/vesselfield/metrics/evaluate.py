"""Every metric on one pair of volumes, and a plain-text table of the results.

:func:`evaluate_volumes` is what ``vesselfield evaluate`` and the benchmark harness call: it
takes a predicted and a target occupancy volume on one :class:`VolumeGrid` and returns an
ordered ``{name: float}``; :data:`METRIC_INFO` says what each name is, its unit and which way is
better; :func:`format_metrics_table` prints them.
"""

from __future__ import annotations

import math

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid
from vesselfield.validate import require_finite

#: Accuracy percentile and completion threshold used by :func:`evaluate_volumes` (NUDF's choices).
ACCURACY_PERCENTILE = 90.0
COMPLETION_THRESHOLD_MM = 2.0

#: name -> (one-line description, unit, higher_is_better), in the order evaluate_volumes returns.
#: Unit "1" means dimensionless.
METRIC_INFO: dict[str, tuple[str, str, bool]] = {
    "dice": ("Dice 2|P∩T|/(|P|+|T|) of the thresholded masks (Dice 1945)", "1", True),
    "iou": ("intersection over union |P∩T|/|P∪T| (Jaccard 1912)", "1", True),
    "jaccard_distance": ("Jaccard distance 1 - IoU", "1", False),
    "cldice": ("centreline Dice, harmonic mean of Tprec and Tsens (Shit et al. 2021)", "1", True),
    "topology_precision": ("Tprec: fraction of the predicted skeleton inside the target", "1", True),
    "topology_sensitivity": ("Tsens: fraction of the target skeleton inside the prediction", "1", True),
    "chamfer_mm": ("surface Chamfer distance, mean of the two directed mean distances", "mm", False),
    "chamfer_voxel_mm": ("voxel-set Chamfer l2 as in the NeCA / SDF-CAR code", "mm", False),
    "hausdorff_mm": ("Hausdorff distance between voxel boundaries", "mm", False),
    "hausdorff95_mm": ("95th-percentile Hausdorff distance (HD95)", "mm", False),
    "assd_mm": ("average symmetric surface distance between voxel boundaries", "mm", False),
    "mesh_accuracy_mm": ("90th percentile of the pred -> target surface distance (NUDF)", "mm", False),
    "mesh_completion": ("fraction of the target surface within 2 mm of the prediction (NUDF)", "1", True),
    "re_error": ("reError: mean absolute voxel error of the occupancies (NeCA)", "1", False),
    "re_mse": ("reMSE: mean squared voxel error of the occupancies (NeCA)", "1", False),
}


def _weighted_percentile(values: np.ndarray, weights: np.ndarray, percentile: float) -> float:
    """Smallest value v with (weight of values <= v) >= percentile % of the total weight."""
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    i = int(np.searchsorted(cumulative, percentile / 100.0 * cumulative[-1], side="left"))
    return float(values[order][min(i, len(values) - 1)])


def _check_occupancy(volume, what: str) -> np.ndarray:
    v = np.asarray(volume)
    if v.dtype == bool:
        return v
    if v.dtype.kind not in "iuf":
        raise VesselfieldError(f"{what} must hold numbers, got dtype {v.dtype}")
    require_finite(v, what)
    lo, hi = float(v.min()), float(v.max())
    if lo < 0.0 or hi > 1.0:
        raise VesselfieldError(
            f"{what} holds values in [{lo:g}, {hi:g}] but evaluation expects occupancies in [0, 1]; "
            "convert an SDF with an occupancy map first, or rescale a 0/255 mask"
        )
    return v


def evaluate_volumes(pred, target, grid: VolumeGrid, *, threshold: float = 0.5,
                     target_grid: VolumeGrid | None = None) -> dict[str, float]:
    """All metrics of :data:`METRIC_INFO`, in that order, for one predicted and one target volume.

    Args:
        pred: (X, Y, Z) predicted occupancy or probability in [0, 1] (bool masks are fine).
        target: (X, Y, Z) ground-truth occupancy in [0, 1], usually a binary mask.
        grid: the :class:`VolumeGrid` both volumes live on; its spacing turns voxels into mm.
        threshold: foreground is ``volume >= threshold`` for every overlap, topology and distance
            metric (NeCA binarises its sigmoid output at 0.5 too); must lie in (0, 1].
        target_grid: the target's own grid when it was loaded separately; it must equal ``grid``
            (no resampling happens here).

    Returns:
        ``{name: float}`` with the keys of :data:`METRIC_INFO` in order. Distances are in mm.
        The binary metrics use the thresholded masks; ``re_error`` / ``re_mse`` use the values
        as given, neither thresholded nor clipped (out-of-range values are refused rather than
        clipped, because they mean the input is not an occupancy, e.g. an SDF or a 0/255 mask,
        and the threshold would be wrong too). The surface metrics (Chamfer, accuracy,
        completion) are integrals over the marching-cubes surfaces of the two masks with exact
        point-to-mesh distances; accuracy and completion are therefore the area-weighted limits of
        :func:`~vesselfield.metrics.surface.mesh_accuracy_mm` and
        :func:`~vesselfield.metrics.surface.mesh_completion` on uniformly sampled points.
        Empty masks: see each metric's docstring; a distance from an empty mask to a non-empty
        one is ``inf``, completion of an empty target is 1.0.
    """
    from vesselfield.metrics.reconstruction import re_error, re_mse
    from vesselfield.metrics.surface import _boundary_distances, _surface_distance_samples, chamfer_voxel_mm
    from vesselfield.metrics.topology import cldice_scores

    if not isinstance(grid, VolumeGrid):
        raise VesselfieldError(f"grid must be a VolumeGrid, got {type(grid).__name__}")
    if target_grid is not None:
        grid.require_same(target_grid, "pred and target")
    grid.check_array(np.asarray(pred), "pred")
    grid.check_array(np.asarray(target), "target")
    thr = float(threshold)
    if not 0.0 < thr <= 1.0:
        raise VesselfieldError(f"threshold must be in (0, 1], got {threshold}")
    pred_v = _check_occupancy(pred, "pred")
    target_v = _check_occupancy(target, "target")
    p, t = pred_v >= thr, target_v >= thr
    spacing = grid.spacing

    n_p, n_t = int(np.count_nonzero(p)), int(np.count_nonzero(t))
    n_both, n_union = int(np.count_nonzero(p & t)), int(np.count_nonzero(p | t))
    out: dict[str, float] = {}
    out["dice"] = 2.0 * n_both / (n_p + n_t) if n_p + n_t else 1.0
    out["iou"] = n_both / n_union if n_union else 1.0
    out["jaccard_distance"] = 1.0 - out["iou"]
    tprec, tsens, cl = cldice_scores(p, t)
    out["cldice"], out["topology_precision"], out["topology_sensitivity"] = cl, tprec, tsens

    if n_p and n_t:
        d_pt, w_p, d_tp, w_t = _surface_distance_samples(p, t, spacing)
        out["chamfer_mm"] = 0.5 * (float(np.average(d_pt, weights=w_p)) + float(np.average(d_tp, weights=w_t)))
        out["chamfer_voxel_mm"] = chamfer_voxel_mm(p, t, spacing)
        b_pt, b_tp = _boundary_distances(p, t, spacing)
        out["hausdorff_mm"] = float(max(b_pt.max(), b_tp.max()))
        out["hausdorff95_mm"] = float(max(np.percentile(b_pt, 95), np.percentile(b_tp, 95)))
        out["assd_mm"] = float((b_pt.sum() + b_tp.sum()) / (len(b_pt) + len(b_tp)))
        out["mesh_accuracy_mm"] = _weighted_percentile(d_pt, w_p, ACCURACY_PERCENTILE)
        out["mesh_completion"] = float(w_t[d_tp <= COMPLETION_THRESHOLD_MM].sum() / w_t.sum())
    else:
        distance = 0.0 if n_p == n_t == 0 else math.inf
        for key in ("chamfer_mm", "chamfer_voxel_mm", "hausdorff_mm", "hausdorff95_mm", "assd_mm",
                    "mesh_accuracy_mm"):
            out[key] = distance
        out["mesh_completion"] = 1.0 if n_t == 0 else 0.0

    out["re_error"] = re_error(pred_v, target_v)
    out["re_mse"] = re_mse(pred_v, target_v)
    return {key: float(out[key]) for key in METRIC_INFO}


def _format_value(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.3e}"
    return f"{value:.4f}"


def format_metrics_table(metrics: dict[str, float]) -> str:
    """A fixed-width text table: metric, value, unit, which way is better, description.

    Names missing from :data:`METRIC_INFO` are printed with an empty unit and description, so a
    caller may add its own entries (e.g. a runtime). Rows keep the dict's order.
    """
    rows = [("metric", "value", "unit", "better", "description")]
    for name, value in metrics.items():
        description, unit, higher = METRIC_INFO.get(name, ("", "", None))
        better = "" if higher is None else ("higher" if higher else "lower")
        rows.append((name, _format_value(float(value)), unit, better, description))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].ljust(widths[2]),
                 row[3].ljust(widths[3]), row[4]]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * len("description"))
    return "\n".join(lines)
