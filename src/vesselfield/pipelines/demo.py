"""``vesselfield demo``: the main job on a built-in case, end to end.

A left coronary phantom on the papers' default geometry, its two simulated views (line integrals
and masks), a two-view reconstruction by the reconstruction pipeline
(:func:`~vesselfield.pipelines.reconstruct_xray.reconstruct_xray_run`, SDF-CAR's cpu preset by
default), every metric against the truth, a mesh, figures and ``report.html``::

    DIR/phantom_occupancy.nii.gz, phantom_sdf.nii.gz, phantom_mesh.stl, geometry.json
    DIR/view<i>.npy, view<i>.png   the simulated views (line integrals in mm; masks)
    DIR/reconstruction/            the reconstruction's run folder (its config.yaml reruns it)
    DIR/metrics.json               the reconstruction's metrics against the phantom
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vesselfield.io.run_folder import RunSummary, write_json

__all__ = ["run_demo"]


def run_demo(out_dir, *, seed: int = 0, config=None, masks_only: bool = False, device: str = "auto",
             progress: bool = True) -> RunSummary:
    """Run the demo into ``out_dir`` (module docstring).

    Args:
        out_dir: output folder.
        seed: seed of the phantom's shape.
        config: :class:`~vesselfield.methods.sdf_car.SdfCarConfig` of the reconstruction (default:
            SDF-CAR, cpu preset).
        masks_only: reconstruct from the binary masks instead of the line integrals.
        device: ``auto``, ``cpu`` or ``cuda``.
        progress: show the reconstruction's progress bar.

    Returns:
        The reconstruction's :class:`RunSummary`, with ``DIR/metrics.json`` and the demo's own files added.
    """
    import torch

    from vesselfield.device import resolve_device
    from vesselfield.geometry import default_geometry, save_geometry
    from vesselfield.io import save_mesh, save_volume
    from vesselfield.io.images import save_image_npy, save_mask_png
    from vesselfield.meshing import mesh_from_volume
    from vesselfield.methods.sdf_car import SdfCarConfig
    from vesselfield.phantoms import TreePhantom, coronary_tree
    from vesselfield.pipelines.reconstruct_xray import reconstruct_xray_run, xray_command
    from vesselfield.render import project_views, projection_mask

    config = SdfCarConfig() if config is None else config
    out = Path(out_dir)
    geometry = default_geometry()
    grid = geometry.volume
    files = {}
    print(f"[1/4] left coronary phantom (seed {seed}) on a {grid.shape} grid at {grid.spacing_mm[0]} mm", flush=True)
    phantom = TreePhantom(coronary_tree("left", seed=seed))
    truth = phantom.occupancy(grid)
    sdf = phantom.sdf_volume(grid)
    for name, array in (("phantom_occupancy", truth), ("phantom_sdf", sdf)):
        files[name] = out / f"{name}.nii.gz"
        save_volume(files[name], array, grid)
    files["phantom_mesh"] = out / "phantom_mesh.stl"
    save_mesh(files["phantom_mesh"], mesh_from_volume(sdf, grid, 0.0, inside="below"))
    files["geometry"] = out / "geometry.json"
    save_geometry(files["geometry"], geometry)

    print("[2/4] simulating the two X-ray views with the cone-beam projector", flush=True)
    with torch.no_grad():
        images = [v.cpu().numpy() for v in project_views(torch.as_tensor(truth, device=resolve_device(device)),
                                                         geometry)]
    masks = [np.asarray(projection_mask(torch.as_tensor(image))) for image in images]
    for i, (image, mask) in enumerate(zip(images, masks), start=1):
        files[f"view{i}"] = out / f"view{i}.npy"
        files[f"mask{i}"] = out / f"view{i}.png"
        save_image_npy(files[f"view{i}"], image)
        save_mask_png(files[f"mask{i}"], mask)

    kind = "mask" if masks_only else "line_integral"
    view_files = [files[f"{'mask' if masks_only else 'view'}{i}"] for i in range(1, len(images) + 1)]
    print(f"[3/4] {config.method} reconstruction ({config.preset} preset, {config.iterations} iterations) "
          f"from the two {'masks' if masks_only else 'line-integral views'}", flush=True)
    rec = out / "reconstruction"
    inputs = {"geometry": str(files["geometry"].resolve()), "kind": kind,
              "views": [str(p.resolve()) for p in view_files],
              "gt": str(files["phantom_occupancy"].resolve()), "device": device}
    command = xray_command(files["geometry"], view_files, kind, rec, config, device=device,
                           gt_path=files["phantom_occupancy"])
    # The demo owns its folder: a second demo into the same --out starts afresh.
    summary = reconstruct_xray_run(geometry, masks if masks_only else images, rec, kind=kind, config=config,
                                   device=device, gt=truth, inputs=inputs, command=command, replace=True,
                                   progress=progress)
    print("[4/4] metrics, mesh, figures and report written", flush=True)
    files["metrics"] = write_json(out / "metrics.json", summary.metrics)
    summary.files = {**files, **{f"reconstruction_{k}": v for k, v in summary.files.items()}}
    summary.verb = "demo"
    summary.lines.append(f"demo outputs are in {out.resolve()} (open reconstruction/report.html)")
    return summary
