"""``vesselfield project``: the views of a volume in every view of a geometry, as files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vesselfield.errors import VesselfieldError
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
    degradation=None,
) -> RunSummary:
    """Simulate every view of a geometry: ``view<i>.npy`` (float32 line integrals in mm, [H, W])
    and ``view<i>.png`` (binary masks, :func:`~vesselfield.render.projection_mask`) in ``out_dir``.

    ``step_mm`` and ``threshold_mm``: the projector's ray step and the mask threshold (None: their
    defaults, :mod:`vesselfield.render.projector`). ``degradation``: a
    :class:`~vesselfield.render.degrade.Degradation` (or its ``--degrade`` text): the views are then
    those of a real acquisition (true poses off the recorded geometry, blur, background, noise; the
    masks the noise-aware :func:`~vesselfield.render.preprocess.vessel_mask` of each view, then broken
    and blotted) and ``degradation.json`` records the degradation and the true pose of every view
    (``geometry_true.json`` is the geometry they were simulated from).
    """
    import torch

    from vesselfield.device import resolve_device
    from vesselfield.geometry import Geometry, check_views_see_volume, load_geometry
    from vesselfield.io.images import save_image_npy, save_mask_png
    from vesselfield.render import project_views, projection_mask

    from vesselfield.render.degrade import Degradation, parse_degradation

    if degradation is not None and not isinstance(degradation, Degradation):
        degradation = parse_degradation(str(degradation))
    if degradation is not None and step_mm is not None:
        raise VesselfieldError("--step-mm is not available with --degrade (the degraded views use the default step)")
    geometry = load_geometry(geometry_path)
    volume, grid = read_volume(volume_path, geometry_path=geometry_path if spacing_mm is None else None,
                               spacing_mm=spacing_mm, origin_mm=origin_mm)
    geometry = Geometry(volume=grid, views=geometry.views)
    check_views_see_volume(geometry)
    dev = resolve_device(device)
    if degradation is not None:
        return _project_degraded(volume, geometry, out_dir, degradation, threshold_mm, dev, progress)
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


def _project_degraded(volume, geometry, out_dir, degradation, threshold_mm, device, progress) -> RunSummary:
    import json

    from vesselfield.geometry import save_geometry
    from vesselfield.io.atomic import write_text_atomic
    from vesselfield.io.images import save_image_npy, save_mask_png
    from vesselfield.render.degrade import degrade_masks, simulate_views
    from vesselfield.render.preprocess import vessel_mask

    if progress:
        print(f"projecting {len(geometry.views)} views, degraded ({degradation.to_text() or 'none'}) ...", flush=True)
    sim = simulate_views(volume.astype(np.float32), geometry, degradation, device=device)
    threshold = {} if threshold_mm is None else {"threshold_mm": float(threshold_mm)}
    masks = degrade_masks([vessel_mask(image, **threshold).mask for image in sim.images], degradation)
    out = Path(out_dir)
    summary = RunSummary(verb="project", out_dir=out)
    for i, (image, mask) in enumerate(zip(sim.images, masks), start=1):
        save_image_npy(out / f"view{i}.npy", image)
        save_mask_png(out / f"view{i}.png", mask)
        summary.files[f"view{i}"] = out / f"view{i}.npy"
        summary.files[f"mask{i}"] = out / f"view{i}.png"
    save_geometry(out / "geometry_true.json", sim.true_geometry)
    record = {"degradation": degradation.to_text(), "settings": {k: v for k, v in vars(degradation).items()},
              "true_poses": sim.poses}
    write_text_atomic(out / "degradation.json", json.dumps(record, indent=2) + "\n")
    summary.files["degradation"] = out / "degradation.json"
    summary.files["geometry_true"] = out / "geometry_true.json"
    return summary
