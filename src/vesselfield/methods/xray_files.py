"""``vesselfield reconstruct xray``: files in, a reconstruction, metrics and a report out.

Everything the command line does, callable from Python: :func:`reconstruct_xray_files` reads
and validates every input before it writes anything, runs :func:`~vesselfield.methods.sdf_car.reconstruct_xray`
with its checkpoints in the output folder, and writes (each file atomically)::

    DIR/occupancy.nii.gz   float32 occupancy in [0, 1] on the geometry's grid (LPS mm, RAS affine)
    DIR/sdf.nii.gz         float32 signed distance (mm) to the 0.5 surface, negative inside
    DIR/mesh.stl           the 0.5 surface, world mm (LPS)
    DIR/config.yaml        the configuration, the inputs and the command that reruns it
    DIR/log.csv            one row per iteration (and checkpoint.pt, for --resume)
    DIR/rendered_view<i>.npy   line integrals (mm) of the reconstruction in each view
    DIR/*.png, DIR/report.html the figures and the self-contained report
    DIR/metrics.json       with a ground truth
"""

from __future__ import annotations

import shlex
from dataclasses import asdict
from pathlib import Path

import numpy as np

from vesselfield.errors import VesselfieldError

CONFIG_NAME = "config.yaml"


def _load_views(paths, kind: str) -> list[np.ndarray]:
    from vesselfield.io.images import load_image, load_mask

    out = []
    for i, p in enumerate(paths, start=1):
        p = Path(p)
        if kind == "mask":
            out.append(load_mask(p, what=f"mask {i}"))
        else:
            if p.suffix.lower() != ".npy":
                raise VesselfieldError(f"projection {i} ({p.name}) must be a .npy file of line integrals in mm")
            out.append(load_image(p, what=f"projection {i}"))
    return out


def _load_gt(gt_path, geometry_path, grid) -> np.ndarray:
    from vesselfield.workflows import read_volume

    gt, gt_grid = read_volume(gt_path, geometry_path=geometry_path, what="ground truth")
    gt_grid.require_same(grid, what="ground truth and the geometry's volume")
    if gt.min() < 0 or gt.max() > 1:
        raise VesselfieldError(
            f"ground truth {Path(gt_path).name} has values outside [0, 1] ({gt.min():g} to {gt.max():g}): "
            "pass a label (0/1) or occupancy volume"
        )
    return gt.astype(np.float32)


def _command_line(geometry_path, view_paths, kind, out_dir, config, device, gt_path) -> str:
    words = ["vesselfield", "reconstruct", "xray", "--geometry", str(geometry_path)]
    words += ["--masks" if kind == "mask" else "--projections", *map(str, view_paths)]
    words += ["--out", str(out_dir), "--method", config.method, "--preset", config.preset,
              "--iterations", str(config.iterations), "--device", device]
    if config.time_limit_s is not None:
        words += ["--time-limit", f"{config.time_limit_s:g}"]
    if gt_path is not None:
        words += ["--gt", str(gt_path)]
    return shlex.join(words)


def write_config_yaml(path, config, inputs: dict, command: str) -> None:
    """``config.yaml``: ``config`` (every :class:`XrayConfig` field), ``inputs`` and ``command``."""
    import yaml

    from vesselfield.io.atomic import write_text_atomic

    text = yaml.safe_dump({"command": command, "inputs": inputs, "config": asdict(config)}, sort_keys=False)
    write_text_atomic(path, "# vesselfield reconstruct xray: everything needed to rerun this result\n" + text)


def read_config_yaml(path) -> dict:
    """The dict written by :func:`write_config_yaml`."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise VesselfieldError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise VesselfieldError(f"{path} is not a vesselfield config.yaml (no 'config' section)")
    return data


def _check_resume(out: Path, config) -> None:
    """``--resume`` must continue the same run: same config except the time limit and iteration count."""
    ckpt = out / "checkpoint.pt"
    if not ckpt.exists():
        raise VesselfieldError(f"--resume: no checkpoint in {out} (nothing to resume)")
    path = out / CONFIG_NAME
    if not path.exists():
        return
    stored = read_config_yaml(path)["config"]
    now = asdict(config)
    free = {"time_limit_s", "iterations", "checkpoint_every"}
    changed = sorted(k for k in now if k not in free and k in stored and stored[k] != now[k])
    if changed:
        shown = ", ".join(f"{k} {stored[k]!r} -> {now[k]!r}" for k in changed[:3])
        raise VesselfieldError(f"--resume with a different configuration than the interrupted run ({shown})")


def save_xray_outputs(result, out_dir, *, geometry, targets, kind: str, gt=None, report: bool = True) -> dict:
    """Write the volumes, mesh, rendered views, metrics and report of ``result``; returns ``{name: path}``.

    Args:
        result: :class:`~vesselfield.methods.sdf_car.XrayResult`.
        out_dir: the output folder.
        geometry: the geometry the result was reconstructed with.
        targets: the input views (line integrals or masks), for the figures.
        kind: ``"line_integral"`` or ``"mask"``.
        gt: optional (X, Y, Z) ground-truth occupancy/label on the grid (binarised at 0.5).
        report: also write the figures and ``report.html``.
    """
    from vesselfield.io import save_mesh, save_volume
    from vesselfield.io.atomic import write_text_atomic
    from vesselfield.io.images import save_image_npy
    from vesselfield.meshing import mesh_from_volume
    from vesselfield.workflows import metrics_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    grid = result.grid
    paths = {}
    save_volume(out / "occupancy.nii.gz", result.occupancy, grid)
    paths["occupancy"] = out / "occupancy.nii.gz"
    sdf = np.nan_to_num(result.sdf, posinf=1e4, neginf=-1e4).astype(np.float32)
    save_volume(out / "sdf.nii.gz", sdf, grid)
    paths["sdf"] = out / "sdf.nii.gz"
    mesh = None
    if (result.occupancy >= 0.5).any():
        mesh = mesh_from_volume(result.occupancy, grid, 0.5, inside="above")
        save_mesh(out / "mesh.stl", mesh)
        paths["mesh"] = out / "mesh.stl"
    else:
        print("warning: the reconstruction is empty (no occupancy >= 0.5): no mesh.stl written")
    for i, image in enumerate(result.rendered, start=1):
        save_image_npy(out / f"rendered_view{i}.npy", image)
    metrics = None
    if gt is not None:
        from vesselfield.metrics import evaluate_volumes

        metrics = evaluate_volumes(result.occupancy, np.asarray(gt) >= 0.5, grid, threshold=0.5)
        metrics = {**metrics, "seconds": float(result.seconds), "iterations": int(result.iterations)}
        write_text_atomic(out / "metrics.json", metrics_json(metrics))
        paths["metrics"] = out / "metrics.json"
    if report:
        from vesselfield.report.sdf_car import write_xray_report

        info = {
            "method": result.config.method,
            "preset": result.config.preset,
            "input": "binary masks" if kind == "mask" else "line integrals (mm)",
            "iterations": result.iterations,
            "optimisation time (s)": round(result.seconds, 1),
            "set-up time (s)": round(result.setup_seconds, 1),
            "visual hull (voxels)": result.hull_voxels,
            "device": result.info.get("device", ""),
        }
        paths["report"] = write_xray_report(
            out, geometry=geometry, targets=targets, kind=kind, rendered=result.rendered,
            occupancy=result.occupancy, mesh=mesh, gt_occupancy=gt, metrics=metrics, log_rows=result.log,
            title=f"vesselfield {result.config.method} reconstruction", info=info,
            k_per_mm=result.config.silhouette_k_per_mm)
    return paths


def reconstruct_xray_files(
    geometry_path,
    out_dir,
    *,
    projections=None,
    masks=None,
    method: str = "sdf-car",
    preset: str = "cpu",
    iterations: int | None = None,
    time_limit_s: float | None = None,
    device: str = "auto",
    gt_path=None,
    resume: bool = False,
    progress: bool = True,
    report: bool = True,
    overrides: dict | None = None,
) -> dict:
    """The ``reconstruct xray`` command: returns ``{"paths": {...}, "metrics": dict | None, "result": XrayResult}``."""
    from vesselfield.geometry import load_geometry
    from vesselfield.methods.sdf_car import check_views, reconstruct_xray, xray_config

    if (projections is None) == (masks is None) or not (projections or masks):
        raise VesselfieldError("give either --projections or --masks (one file per view)")
    kind = "mask" if masks else "line_integral"
    view_paths = list(masks or projections)
    geometry = load_geometry(geometry_path)
    views = check_views(geometry, _load_views(view_paths, kind), kind)
    gt = _load_gt(gt_path, geometry_path, geometry.volume) if gt_path is not None else None
    config = xray_config(method, preset, **{**(overrides or {}), "iterations": iterations,
                                            "time_limit_s": time_limit_s})
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise VesselfieldError(f"--out {out} exists and is not a folder")
    if resume:
        _check_resume(out, config)
    elif (out / "checkpoint.pt").exists():
        raise VesselfieldError(f"{out} holds an earlier run (checkpoint.pt): pass --resume to continue it or "
                               "choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    inputs = {
        "geometry": str(Path(geometry_path).resolve()),
        "kind": kind,
        "views": [str(Path(p).resolve()) for p in view_paths],
        "gt": str(Path(gt_path).resolve()) if gt_path is not None else None,
        "device": device,
    }
    write_config_yaml(out / CONFIG_NAME, config, inputs,
                      _command_line(geometry_path, view_paths, kind, out, config, device, gt_path))
    result = reconstruct_xray(geometry, views, kind=kind, config=config, device=device, out_dir=out,
                              resume=resume, progress=progress)
    paths = save_xray_outputs(result, out, geometry=geometry, targets=views, kind=kind, gt=gt, report=report)
    paths["config"] = out / CONFIG_NAME
    paths["log"] = out / "log.csv"
    return {"paths": paths, "metrics": None if gt is None else _read_metrics(paths), "result": result}


def _read_metrics(paths) -> dict | None:
    import json

    p = paths.get("metrics")
    return json.loads(Path(p).read_text()) if p else None
