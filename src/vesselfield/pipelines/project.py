"""``vesselfield project``: the views of a volume in every view of a geometry, as files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vesselfield.io.run_folder import RunSummary
from vesselfield.pipelines.common import read_volume

__all__ = ["project_to_files"]


def project_to_files(
    volume_path,
    geometry_path,
    out_dir,
    *,
    spacing_mm=None,
    origin_mm=None,
    step_mm: float | None = None,
    threshold_mm: float | None = None,
    device: str = "auto",
    progress: bool = True,
) -> RunSummary:
    """Simulate every view of a geometry: ``view<i>.npy`` (float32 line integrals in mm, [H, W])
    and ``view<i>.png`` (binary masks, :func:`~vesselfield.render.projection_mask`) in ``out_dir``.

    ``step_mm`` and ``threshold_mm``: the projector's ray step and the mask threshold (None: their
    defaults, :mod:`vesselfield.render.projector`).
    """
    import torch

    from vesselfield.device import resolve_device
    from vesselfield.geometry import Geometry, check_views_see_volume, load_geometry
    from vesselfield.io.images import save_image_npy, save_mask_png
    from vesselfield.render import project_views, projection_mask

    geometry = load_geometry(geometry_path)
    volume, grid = read_volume(volume_path, geometry_path=geometry_path if spacing_mm is None else None,
                               spacing_mm=spacing_mm, origin_mm=origin_mm)
    geometry = Geometry(volume=grid, views=geometry.views)
    check_views_see_volume(geometry)
    dev = resolve_device(device)
    if progress:
        print(f"projecting {len(geometry.views)} views ...", flush=True)
    with torch.no_grad():
        step = {} if step_mm is None else {"step_mm": step_mm}
        images = [v.cpu() for v in project_views(torch.as_tensor(volume.astype(np.float32), device=dev), geometry,
                                                 **step)]
    threshold = {} if threshold_mm is None else {"threshold_mm": threshold_mm}
    out = Path(out_dir)
    summary = RunSummary(verb="project", out_dir=out)
    for i, image in enumerate(images, start=1):
        save_image_npy(out / f"view{i}.npy", image.numpy())
        save_mask_png(out / f"view{i}.png", np.asarray(projection_mask(image, **threshold)))
        summary.files[f"view{i}"] = out / f"view{i}.npy"
        summary.files[f"mask{i}"] = out / f"view{i}.png"
    return summary
