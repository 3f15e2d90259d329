"""Centreline accuracy against a reference centreline (Schaap et al., Medical Image Analysis 2009:
the Rotterdam coronary artery centreline evaluation framework).

Both centrelines are point sets sampled densely along their curves (<= 0.5 mm apart). A point is
matched when the other centreline passes within the reference radius there (the framework's
tolerance: the annotated lumen radius). Order of arguments: ``(pred, target)``.

- **OV** (overlap): (TPM + TPR) / (TPM + TPR + FN + FP): TPR reference points matched, FN not;
  TPM predicted points matched, FP not.
- **OF** (overlap until first error): the share of the reference, from its first point, matched
  before the first unmatched reference point (reference points ordered from the root).
- **OT** (overlap with the clinically relevant part): OV restricted to reference points of
  radius >= 0.75 mm (and the predicted points matched to or lying near them).
- **AI** (average inside): mean distance (mm) from each matched predicted point to the reference
  centreline.
"""

from __future__ import annotations

import numpy as np

CLINICAL_RADIUS_MM = 0.75  # Schaap et al. 2009: vessels of 1.5 mm diameter and more are clinically relevant


def centerline_overlap(pred_points_mm, target_points_mm, target_radius_mm) -> dict:
    """OV, OF, OT and AI of a predicted centreline against a reference (module docstring).

    Args:
        pred_points_mm: (M, 3) predicted centreline samples, LPS mm.
        target_points_mm: (N, 3) reference samples, ordered from the root for OF, mm.
        target_radius_mm: (N,) reference radius at each sample (the matching tolerance), mm.

    Returns:
        ``{"OV", "OF", "OT", "AI_mm", "recall", "precision"}`` (fractions in [0, 1]; AI in mm).
    """
    from scipy.spatial import cKDTree

    pred = np.asarray(pred_points_mm, float).reshape(-1, 3)
    ref = np.asarray(target_points_mm, float).reshape(-1, 3)
    rad = np.asarray(target_radius_mm, float).reshape(-1)
    if len(ref) == 0 or len(rad) != len(ref):
        raise ValueError("the reference needs one radius per point and at least one point")
    if len(pred) == 0:
        return {"OV": 0.0, "OF": 0.0, "OT": 0.0, "AI_mm": float("nan"), "recall": 0.0, "precision": 0.0}
    d_ref, _ = cKDTree(pred).query(ref)  # reference point -> nearest predicted point
    d_pred, nearest_ref = cKDTree(ref).query(pred)  # predicted point -> nearest reference point
    tpr = d_ref <= rad
    tpm = d_pred <= rad[nearest_ref]
    ov = (tpm.sum() + tpr.sum()) / (len(pred) + len(ref))
    first_miss = np.argmin(tpr) if not tpr.all() else len(tpr)
    of = first_miss / len(ref)
    clinical_ref = rad >= CLINICAL_RADIUS_MM
    clinical_pred = rad[nearest_ref] >= CLINICAL_RADIUS_MM
    denom = clinical_ref.sum() + clinical_pred.sum()
    ot = (tpr[clinical_ref].sum() + tpm[clinical_pred].sum()) / denom if denom else float("nan")
    ai = float(_distance_to_polyline_points(pred[tpm], ref).mean()) if tpm.any() else float("nan")
    return {"OV": float(ov), "OF": float(of), "OT": float(ot), "AI_mm": ai, "recall": float(tpr.mean()),
            "precision": float(tpm.mean())}


def _distance_to_polyline_points(points: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Distance from each point to the reference, refined from the nearest reference sample to the
    nearer of its two adjacent chords (so a reference sampled every 0.5 mm does not add up to
    0.25 mm of sampling error)."""
    from scipy.spatial import cKDTree

    _, idx = cKDTree(ref).query(points)
    best = np.linalg.norm(points - ref[idx], axis=1)
    for shift in (-1, 1):
        j = np.clip(idx + shift, 0, len(ref) - 1)
        a, b = ref[idx], ref[j]
        ab = b - a
        denom = np.maximum((ab * ab).sum(1), 1e-18)
        t = np.clip(((points - a) * ab).sum(1) / denom, 0.0, 1.0)
        # only chords between consecutive samples of one curve (short chords)
        close = np.linalg.norm(ab, axis=1) < 2.0
        d = np.linalg.norm(points - (a + t[:, None] * ab), axis=1)
        best = np.where(close, np.minimum(best, d), best)
    return best
