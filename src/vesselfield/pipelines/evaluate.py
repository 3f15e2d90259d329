"""``vesselfield evaluate``: every metric of a predicted volume file against a ground-truth file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.io.run_folder import RunSummary, write_json
from vesselfield.pipelines.common import read_volume
from vesselfield.validate import require_binary

__all__ = ["evaluate_files"]


def evaluate_files(
    pred_path,
    gt_path,
    *,
    threshold: float = 0.5,
    json_path=None,
    geometry_path=None,
    spacing_mm=None,
    origin_mm=None,
) -> RunSummary:
    """Every metric of a predicted volume against a binary ground truth on the same grid.

    ``pred``: occupancy/probability in [0, 1] (binarised at ``threshold``) or a binary mask.
    ``gt``: a binary mask (0/1). The summary's ``metrics`` are
    :func:`~vesselfield.metrics.evaluate_volumes`'s (also written to ``json_path`` as strict JSON).
    """
    from vesselfield.metrics import evaluate_volumes

    if not 0.0 < threshold <= 1.0:
        raise VesselfieldError(f"--threshold must be in (0, 1], got {threshold}")
    pred, pgrid = read_volume(pred_path, geometry_path=geometry_path, spacing_mm=spacing_mm,
                              origin_mm=origin_mm, what="prediction")
    gt, ggrid = read_volume(gt_path, geometry_path=geometry_path, spacing_mm=spacing_mm,
                            origin_mm=origin_mm, what="ground truth")
    pgrid.require_same(ggrid, what="prediction and ground truth")
    gt = require_binary(gt, f"ground truth {Path(gt_path).name}")
    if pred.min() < 0 or pred.max() > 1:
        raise VesselfieldError(
            f"prediction {Path(pred_path).name} has values outside [0, 1] ({pred.min():g} to {pred.max():g}): "
            "pass an occupancy/probability map or a binary mask, not an SDF or an image"
        )
    metrics = evaluate_volumes(pred.astype(np.float32), gt, pgrid, threshold=threshold)
    summary = RunSummary(verb="evaluate", out_dir=Path(json_path).parent if json_path else Path.cwd(),
                         metrics=metrics)
    if json_path is not None:
        summary.files["metrics"] = write_json(json_path, metrics)
    return summary
