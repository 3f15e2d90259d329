"""``vesselfield blend``: fitted models joined by a smooth union into one SDF and one mesh for CFD.

The models' SDFs (mm) are evaluated on one grid covering the union of their boxes plus a margin,
folded with :func:`~vesselfield.csg.union_all` (Quilez's polynomial smooth minimum, width ``k_mm``;
0: a plain union; Alblas et al., STACOM 2022, Sec. 2.3) and meshed at 0::

    DIR/sdf.nii.gz      float32 blended SDF, mm
    DIR/mesh.stl        its zero level (world LPS mm)
    DIR/config.yaml     the command and every BlendConfig field
    DIR/summary.json    the models, the mesh checks, whether the mesh is ready for CFD meshing
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.io.run_folder import (
    CONFIG_NAME,
    RunSummary,
    check_out_dir,
    reproducing_command,
    write_config_yaml,
)

__all__ = ["blend_files"]


def _channel(model, path, surface) -> int:
    if model.n_surfaces == 1:
        return 0
    if surface is None:
        raise VesselfieldError(f"model {path} has {model.n_surfaces} surfaces ({', '.join(model.surface_names)}): "
                               "pass --surface NAME to choose one")
    if surface not in model.surface_names:
        raise VesselfieldError(f"model {path} has no surface {surface!r} (it has {', '.join(model.surface_names)})")
    return model.surface_names.index(surface)


def _union_bounds(boxes) -> np.ndarray:
    boxes = [np.asarray(b, dtype=np.float64) for b in boxes]
    return np.stack([np.min([b[0] for b in boxes], axis=0), np.max([b[1] for b in boxes], axis=0)])


def blend_files(model_dirs: Sequence, out_dir, *, config=None, device: str = "auto") -> RunSummary:
    """``vesselfield blend``: join fitted models with a smooth union into one SDF and one mesh.

    Args:
        model_dirs: fit output folders (or ``model.pt`` files); at least one.
        out_dir: receives ``sdf.nii.gz``, ``mesh.stl``, ``summary.json`` and ``config.yaml``.
        config: :class:`~vesselfield.methods.implicit_vessel.BlendConfig` (smoothing width, voxel
            size, margin, surface of multi-surface models).
        device: ``auto``, ``cpu`` or ``cuda`` for evaluating the models.

    Returns:
        The :class:`RunSummary`; its warning (also in ``summary.json``) says why the mesh is not
        ready for CFD meshing (not watertight, or not one component); ``objects["mesh"]`` is the mesh.
    """
    from vesselfield.device import resolve_device
    from vesselfield.grid import grid_over_box
    from vesselfield.io import save_mesh, save_volume
    from vesselfield.meshing import cfd_check, format_mesh_summary, mesh_from_volume
    from vesselfield.methods.implicit_vessel import BlendConfig, ImplicitVesselModel, blend_sdf_volume

    config = BlendConfig() if config is None else config
    if not isinstance(config, BlendConfig):
        raise VesselfieldError(f"config must be a BlendConfig, got {type(config).__name__}")
    dirs = [Path(p) for p in (model_dirs or [])]
    if not dirs:
        raise VesselfieldError("blend needs at least one model folder (--models DIR ...)")
    out = check_out_dir(out_dir)
    resolve_device(device)
    models = [ImplicitVesselModel.load(p, device=device) for p in dirs]
    channels = [_channel(m, p, config.surface) for m, p in zip(models, dirs)]
    grid = grid_over_box(_union_bounds([m.bounds_mm for m in models]), config.spacing_mm, config.margin_mm)
    sdf, inside = blend_sdf_volume(models, channels, grid, float(config.k_mm))
    try:
        mesh = mesh_from_volume(sdf, grid, 0.0, inside="below")
    except VesselfieldError as exc:
        raise VesselfieldError(f"the blended SDF has no surface: {exc}") from None
    info, warning = cfd_check(mesh, sdf)
    if warning and info["components"] > 1:
        warning += " (the models do not touch: check their placement or raise --k)"
    summary = RunSummary(verb="blend", out_dir=out, warnings=[warning] if warning else [],
                         objects={"mesh": mesh, "models": models})
    summary.details = {
        "models": [{"path": str(p.resolve()), "surface": m.surface_names[c], "surfaces": list(m.surface_names),
                    "volume_mm3": n_inside * grid.voxel_volume_mm3}
                   for p, m, c, n_inside in zip(dirs, models, channels, inside)],
        "k_mm": float(config.k_mm),
        "spacing_mm": float(config.spacing_mm),
        "margin_mm": float(config.margin_mm),
        "grid": grid.to_dict(),
        "mesh": info,
        "watertight": info["watertight"],
        "components": info["components"],
        "cfd_ready": warning is None,
    }
    summary.lines = [f"blended {len(models)} model(s): {format_mesh_summary(info)}"]
    if warning is None:
        summary.lines.append("the mesh is watertight and in one piece: ready for CFD meshing")
    # --k, --spacing and --surface are config fields: the command gives them as --set words.
    words = ["blend", "--models", *dirs, "--out", out, "--device", device]
    out.mkdir(parents=True, exist_ok=True)
    save_volume(out / "sdf.nii.gz", sdf, grid)
    save_mesh(out / "mesh.stl", mesh)
    summary.files = {"sdf": out / "sdf.nii.gz", "mesh": out / "mesh.stl"}
    summary.files["config"] = write_config_yaml(out / CONFIG_NAME, verb="blend", config=config,
                                                inputs={"models": [str(p.resolve()) for p in dirs], "device": device},
                                                command=reproducing_command(words, config))
    summary.write()
    return summary
