"""What several jobs read the same way: a volume file and the grid it lives on."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid
from vesselfield.validate import require_finite

__all__ = ["grid_from_options", "read_volume", "training_report"]


def grid_from_options(
    geometry_path=None,
    spacing_mm: Sequence[float] | None = None,
    origin_mm: Sequence[float] | None = None,
    shape: Sequence[int] | None = None,
) -> VolumeGrid | None:
    """The grid a ``.npy`` volume lives on: from ``--spacing/--origin`` or a geometry file.

    ``shape`` (the array's) wins over the geometry's; a geometry whose grid shape disagrees with
    the array is an error rather than a silent reinterpretation.
    """
    if spacing_mm is not None:
        if shape is None:
            raise VesselfieldError("--spacing needs a volume to take its shape from")
        origin = origin_mm if origin_mm is not None else VolumeGrid.centered(shape, spacing_mm).origin_mm
        return VolumeGrid(shape, spacing_mm, origin)
    if geometry_path is not None:
        from vesselfield.geometry import load_geometry

        grid = load_geometry(geometry_path).volume
        if origin_mm is not None:
            grid = VolumeGrid(grid.shape, grid.spacing_mm, origin_mm)
        return grid
    return None


def read_volume(path, *, geometry_path=None, spacing_mm=None, origin_mm=None, what="volume"):
    """``(array, grid)`` of a volume file; ``.npy`` takes its grid from ``--spacing/--origin`` or a geometry."""
    from vesselfield.io import load_volume

    path = Path(path)
    grid = None
    if path.suffix.lower() == ".npy":
        if not path.is_file():
            raise VesselfieldError(f"{what} file not found: {path}")
        try:
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
        except Exception as exc:
            raise VesselfieldError(f"cannot read {what} {path}: {exc}") from None
        if len(shape) != 3:
            raise VesselfieldError(f"{what} {path} must be a 3D array, got shape {tuple(shape)}")
        grid = grid_from_options(geometry_path, spacing_mm, origin_mm, shape)
        if grid is None:
            raise VesselfieldError(
                f"{what} {path} is a .npy array without a grid: pass --geometry G.json or --spacing X Y Z"
            )
        grid.check_array(np.empty(shape, dtype=np.uint8), what=f"{what} {path.name}")
    array, grid = load_volume(path, grid, what=what) if grid is not None else load_volume(path, what=what)
    require_finite(array, f"{what} {path.name}")
    return np.asarray(array), grid


def training_report(out, result, model_path) -> tuple[dict, list[str], dict | None]:
    """What every dataset training's summary says of its trainer run: ``(files, lines, metrics)``.

    ``files``: config.yaml, log.csv, last.pt, the model file (``model_path``) and best.pt when there is
    one; ``lines``: epochs, why it stopped, the best monitored value, the time (and how to continue a
    run the time limit stopped); ``metrics``: the last epoch's validation values (None without any).
    ``result`` is the :class:`~vesselfield.training.TrainResult`.
    """
    from pathlib import Path

    out = Path(out)
    best = "none" if result.best_value is None else f"{result.best_value:.4g}"
    lines = [f"{result.epochs_done} epochs ({result.stopped_by}), best {result.monitor} {best} at epoch "
             f"{result.best_epoch}; {result.elapsed_s:.1f} s"]
    if result.stopped_by == "time_limit":
        lines.append(f"stopped by the time limit: `--resume` continues it; {Path(model_path).name} holds the best "
                     "weights so far")
    files = {"config": out / "config.yaml", "log": result.log_path, "last": result.last_checkpoint,
             "model": model_path}
    if result.best_checkpoint is not None:
        files["best"] = result.best_checkpoint
    last_row = result.rows[-1] if result.rows else {}
    metrics = {k: v for k, v in last_row.items() if k.startswith("val_")} or None
    return files, lines, metrics
