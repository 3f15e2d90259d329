"""``vesselfield fit points|mesh|nested`` and ``vesselfield blend``: files in, implicit vessel models out.

Everything the command line does, callable from Python. Each function reads and validates
every input (points, normals, meshes, settings, the output grid's size, an earlier run in the
output folder) before it writes anything, and writes every file atomically. A fit writes::

    DIR/model.pt        the fitted model (:meth:`ImplicitVesselModel.save`; ``ImplicitVesselModel.load(DIR)``)
    DIR/sdf.nii.gz      float32 SDF in mm (negative inside) on ``model.grid(spacing)`` (LPS mm, RAS affine)
    DIR/mesh.stl        its zero level, world mm (LPS)
    DIR/config.yaml     the command, the inputs and every InrConfig field: what reruns it
    DIR/log.csv         one row per iteration (and checkpoint.pt, for --resume)
    DIR/summary.json    time, iterations, final losses, mesh checks (watertight, components, volume)
    DIR/report.html     and its figures (:func:`vesselfield.report.implicit_vessel.write_inr_report`)
    DIR/points.ply      (fit mesh) the sampled surface points and normals, so the fit can be rerun

``fit nested`` fits K surfaces (innermost first) in one network with K outputs (or, with
``separate=True``, one network per surface in ``DIR/<name>/``, for comparison) and writes
``sdf_<name>.nii.gz`` / ``mesh_<name>.stl`` on one common grid and ``nesting.json`` (how often the
order inner-inside-outer is broken). ``blend`` joins fitted models with a smooth union
(Alblas et al., STACOM 2022, Sec. 2.3) into one SDF and one mesh, and says whether the mesh is
ready for CFD meshing (watertight, one component).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shlex
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np

from vesselfield.errors import VesselfieldError

CONFIG_NAME = "config.yaml"
SUMMARY_NAME = "summary.json"
CHECKPOINT_NAME = "checkpoint.pt"
#: Default grid: this many voxels along the shape's largest extent.
VOXELS_PER_EXTENT = 128
#: Uniform samples in the surfaces' bounding box for ``nesting.json``.
NESTING_SAMPLES = 200_000
#: Default number of points sampled from each mesh surface by ``fit nested``.
DEFAULT_NESTED_POINTS = 5000
#: Grid points evaluated at once when blending.
_CHUNK = 1 << 18
#: Settings that may change when resuming a run.
_FREE_ON_RESUME = {"time_limit_s", "iterations", "checkpoint_every"}
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_POINT_SUFFIXES = (".npy", ".xyz", ".txt", ".csv")


# ------------------------------------------------------------------------------------ settings
def _make_config(preset: str, iterations, time_limit_s, overrides: dict | None, **more):
    from vesselfield.methods.implicit_vessel import inr_config

    values = dict(overrides or {})
    if iterations is not None:
        values["iterations"] = int(iterations)
    if time_limit_s is not None:
        if not (math.isfinite(float(time_limit_s)) and float(time_limit_s) >= 0):
            raise VesselfieldError(f"--time-limit must be >= 0 seconds, got {time_limit_s}")
        values["time_limit_s"] = float(time_limit_s)
    values.update({k: v for k, v in more.items() if v is not None})
    return inr_config(preset, **values)


def _check_spacing(spacing_mm) -> float | None:
    if spacing_mm is None:
        return None
    s = float(spacing_mm)
    if not (math.isfinite(s) and s > 0):
        raise VesselfieldError(f"--spacing must be a positive number of mm, got {spacing_mm}")
    return s


def default_spacing_mm(bounds_mm) -> float:
    """The default grid spacing: the shape's largest extent / :data:`VOXELS_PER_EXTENT`, to 2 significant digits."""
    lo, hi = np.asarray(bounds_mm, dtype=np.float64)
    return float(f"{float((hi - lo).max()) / VOXELS_PER_EXTENT:.2g}")


def _union_bounds(boxes) -> np.ndarray:
    boxes = [np.asarray(b, dtype=np.float64) for b in boxes]
    return np.stack([np.min([b[0] for b in boxes], axis=0), np.max([b[1] for b in boxes], axis=0)])


def _points_bounds(point_sets) -> np.ndarray:
    allp = np.concatenate(point_sets, axis=0)
    return np.stack([allp.min(axis=0), allp.max(axis=0)])


def _digest(points: np.ndarray, normals: np.ndarray | None) -> str:
    h = hashlib.sha256(np.ascontiguousarray(points, dtype="<f8").tobytes())
    if normals is not None:
        h.update(np.ascontiguousarray(normals, dtype="<f8").tobytes())
    return h.hexdigest()[:16]


def _check_names(names, k: int) -> list[str]:
    names = [str(n) for n in names]
    if len(names) != k:
        raise VesselfieldError(f"--names gives {len(names)} name(s) for {k} surfaces")
    if len(set(names)) != k:
        raise VesselfieldError(f"--names must be distinct, got {', '.join(names)}")
    for n in names:
        if not _NAME_PATTERN.match(n):
            raise VesselfieldError(f"surface name {n!r} must be letters, digits, '_', '-' or '.' (it names files)")
    return names


def _default_names(paths) -> list[str]:
    stems = []
    for p in paths:
        name = Path(p).name
        stems.append(name.split(".")[0] if not name.startswith(".") else name)
    ok = len(set(stems)) == len(stems) and all(_NAME_PATTERN.match(s) for s in stems)
    return stems if ok else [f"surface{i}" for i in range(len(paths))]


# ------------------------------------------------------------------------------------ output folder
def write_config_yaml(path, verb: str, config, inputs: dict, command: str) -> None:
    """``config.yaml``: ``command``, ``inputs`` and ``config`` (every setting: an InrConfig's fields or a dict)."""
    import yaml

    from vesselfield.io.atomic import write_text_atomic

    settings = config if isinstance(config, dict) else asdict(config)
    text = yaml.safe_dump({"command": command, "inputs": inputs, "config": settings}, sort_keys=False)
    write_text_atomic(path, f"# vesselfield {verb}: everything needed to rerun this result\n" + text)


def _check_out(out_dir) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise VesselfieldError(f"--out {out} exists and is not a folder")
    return out


def _check_run_folder(out: Path, run_dirs: Sequence[Path], config, inputs: dict, resume: bool) -> None:
    """Refuse to overwrite an earlier run without ``--resume``, and to resume a different one."""
    from vesselfield.methods.xray_files import read_config_yaml

    found = [d for d in run_dirs if (d / CHECKPOINT_NAME).exists()]
    if not resume:
        if found:
            raise VesselfieldError(f"{out} holds an earlier run ({found[0] / CHECKPOINT_NAME}): pass --resume to "
                                   "continue it or choose another --out")
        return
    if not found:
        raise VesselfieldError(f"--resume: no checkpoint in {out} (nothing to resume)")
    path = out / CONFIG_NAME
    if not path.exists():
        return
    stored = read_config_yaml(path)
    now = asdict(config)
    old = stored["config"]
    changed = [f"{k} {old[k]!r} -> {now[k]!r}" for k in now if k not in _FREE_ON_RESUME and k in old and old[k] != now[k]]
    old_inputs = stored.get("inputs") or {}
    changed += [f"{k} {old_inputs[k]!r} -> {inputs[k]!r}" for k in ("points_sha256", "names", "separate")
                if k in old_inputs and k in inputs and old_inputs[k] != inputs[k]]
    if changed:
        raise VesselfieldError(f"--resume with a different configuration than the interrupted run ({', '.join(changed[:3])})")


def _json_text(data) -> str:
    """Strict JSON: non-finite floats (e.g. the volume of an open mesh) become null."""

    def clean(v):
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, (np.floating, float)):
            return float(v) if math.isfinite(float(v)) else None
        if isinstance(v, (np.integer,)):
            return int(v)
        if isinstance(v, (np.bool_,)):
            return bool(v)
        if isinstance(v, Path):
            return str(v)
        return v

    return json.dumps(clean(data), indent=2, allow_nan=False) + "\n"


def _write_json(path, data) -> None:
    from vesselfield.io.atomic import write_text_atomic

    write_text_atomic(path, _json_text(data))


# ------------------------------------------------------------------------------------ pieces
def _mesh_of(sdf: np.ndarray, grid):
    """(mesh or None, mesh summary or None, warning or None) of the zero level of an SDF volume."""
    from vesselfield.meshing.marching_cubes import mesh_from_volume

    try:
        mesh = mesh_from_volume(sdf, grid, 0.0, inside="below")
    except VesselfieldError as exc:
        return None, None, f"no mesh: {exc}"
    return (mesh, *_checked_summary(mesh, sdf))


def _checked_summary(mesh, sdf: np.ndarray) -> tuple[dict, str | None]:
    """(mesh summary with ``inside_at_grid_border``, CFD warning or None) of a mesh of ``sdf``'s zero level."""
    from vesselfield.meshing.marching_cubes import mesh_summary

    summary = mesh_summary(mesh)
    summary["inside_at_grid_border"] = inside_at_border_fraction(sdf)
    return summary, _cfd_warning(summary)


def inside_at_border_fraction(sdf: np.ndarray) -> float:
    """Fraction of a grid's border voxels where the SDF is negative (inside).

    The output grid covers the points' box plus a margin, so a closed surface through the points
    never reaches its border: inside voxels there mean the fitted field did not close around the
    points (the inside "leaks" out of the domain, e.g. between the branches of a sparsely sampled
    vessel tree fitted without normals).
    """
    sdf = np.asarray(sdf)
    faces = [sdf[0], sdf[-1], sdf[:, 0], sdf[:, -1], sdf[:, :, 0], sdf[:, :, -1]]
    inside = sum(int(np.count_nonzero(f < 0)) for f in faces)
    return inside / float(sum(f.size for f in faces))


def _cfd_warning(summary: dict) -> str | None:
    problems = []
    if not summary["watertight"]:
        problems.append("it is not watertight")
    if summary["components"] != 1:
        problems.append(f"it has {summary['components']} separate components")
    if summary.get("inside_at_grid_border", 0.0) > 0:
        problems.append(f"its inside reaches the edge of the grid ({100 * summary['inside_at_grid_border']:.1f} % "
                        "of the border voxels): the surface did not close around the points; fit with normals "
                        "or more points, or fit the vessel in pieces and blend them")
    return None if not problems else "the mesh is not CFD-ready: " + " and ".join(problems)


def _final_losses(log: list) -> dict:
    if not log:
        return {}
    return {k: v for k, v in log[-1].items() if k not in ("iteration", "time_s")}


def _write_report(out: Path, *, model, points, log, mesh, title: str | None = None, warnings=()) -> dict:
    from vesselfield.report.implicit_vessel import write_inr_report

    paths = write_inr_report(out, model=model, points=points, log=log, mesh=mesh, metrics=None, title=title,
                             warnings=warnings)
    # The report names its figures "slices", "mesh", ...: keep them apart from the fit's own files.
    return {key if key == "report" else f"figure_{key}": path for key, path in paths.items()}


def _fit(points, normals, names, config, *, device, out: Path, resume: bool, progress: bool):
    from vesselfield.methods.implicit_vessel import fit_implicit_sdf

    return fit_implicit_sdf(points, normals, names=names, config=config, device=device, out_dir=out,
                            resume=resume, progress=progress)


def _fit_summary(result, config) -> dict:
    return {
        "iterations": int(result.iterations),
        "iterations_planned": int(config.iterations),
        "stopped": result.stopped,
        "fit_seconds": round(float(result.seconds), 3),
        "final_losses": _final_losses(result.log),
        "device": str(result.model.device),
    }


def _options_words(config, *, frame, scale_to_mm, spacing_mm, device) -> list[str]:
    words = ["--frame", frame, "--scale-to-mm", f"{scale_to_mm:g}", "--preset", config.preset,
             "--iterations", str(config.iterations), "--device", device]
    if spacing_mm is not None:
        words += ["--spacing", f"{spacing_mm:g}"]
    if config.time_limit_s is not None:
        words += ["--time-limit", f"{config.time_limit_s:g}"]
    return words


def _validate_device(device: str) -> None:
    from vesselfield.device import resolve_device

    resolve_device(device)


# ------------------------------------------------------------------------------------ one surface
def _fit_one_surface(verb: str, points, normals, out, *, config, spacing_mm, device, resume, progress, report,
                     inputs: dict, command: str, extra_files: dict | None = None) -> dict:
    """The shared tail of ``fit points`` and ``fit mesh``: checks, fit, outputs."""
    from vesselfield.io import save_mesh, save_points, save_volume
    from vesselfield.methods.implicit_vessel import grid_over_box

    bounds = _points_bounds([points])
    spacing = spacing_mm if spacing_mm is not None else default_spacing_mm(bounds)
    grid = grid_over_box(bounds, spacing)  # the size check, before the fit
    _validate_device(device)
    inputs = {**inputs, "points_sha256": [_digest(points, normals)], "spacing_mm": spacing, "device": device}
    _check_run_folder(out, [out], config, inputs, resume)

    out.mkdir(parents=True, exist_ok=True)
    write_config_yaml(out / CONFIG_NAME, verb, config, inputs, command)
    paths = {"config": out / CONFIG_NAME}
    for name, (p, n) in (extra_files or {}).items():
        save_points(out / name, p, n)
        paths[Path(name).stem] = out / name
    result = _fit(points, normals, None, config, device=device, out=out, resume=resume, progress=progress)
    model = result.model
    model.save(out / "model.pt")
    paths["model"] = out / "model.pt"
    grid = model.grid(spacing)
    sdf = model.sdf_volume(grid)
    save_volume(out / "sdf.nii.gz", sdf, grid)
    paths["sdf"] = out / "sdf.nii.gz"
    mesh, mesh_info, warning = _mesh_of(sdf, grid)
    if mesh is not None:
        save_mesh(out / "mesh.stl", mesh)
        paths["mesh"] = out / "mesh.stl"
    paths["log"] = out / "log.csv"
    summary = {
        "command": verb,
        "surfaces": list(model.surface_names),
        "n_points": int(len(points)),
        "normals": normals is not None,
        "preset": config.preset,
        **_fit_summary(result, config),
        "spacing_mm": spacing,
        "grid": grid.to_dict(),
        "mesh": mesh_info,
        "cfd_ready": warning is None,
        "warnings": [warning] if warning else [],
    }
    _write_json(out / SUMMARY_NAME, summary)
    paths["summary"] = out / SUMMARY_NAME
    if report:
        paths.update(_write_report(out, model=model, points=points, log=result.log, mesh=mesh,
                                   warnings=summary["warnings"]))
    return {"paths": paths, "model": model, "summary": summary, "result": result}


def fit_points_files(
    points_path,
    out_dir,
    *,
    use_normals: bool = False,
    frame: str = "LPS",
    scale_to_mm: float = 1.0,
    preset: str = "fast",
    iterations: int | None = None,
    spacing_mm: float | None = None,
    time_limit_s: float | None = None,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
    report: bool = True,
    overrides: dict | None = None,
) -> dict:
    """``vesselfield fit points``: an implicit SDF fitted to a point cloud file.

    Args:
        points_path: ``.npy`` / ``.ply`` / ``.xyz`` / ``.txt`` / ``.csv`` surface points (3 columns,
            or 6 with outward normals), in ``frame`` and file units (``scale_to_mm`` mm per unit).
        out_dir: output folder (see the module docstring for what it receives).
        use_normals: use the normals stored in the file (IGR normal term); an error if it has none.
        preset: ``fast`` or ``paper`` (:data:`~vesselfield.methods.implicit_vessel.INR_PRESETS`).
        iterations, time_limit_s: override the preset's iterations / stop after S seconds.
        spacing_mm: voxel size of ``sdf.nii.gz`` and of the mesh (default: :func:`default_spacing_mm`).
        device: ``auto``, ``cpu`` or ``cuda``.
        resume: continue an interrupted fit in ``out_dir`` (same settings and points).
        progress: show a progress bar. report: write ``report.html`` and its figures.
        overrides: further :class:`~vesselfield.methods.implicit_vessel.InrConfig` fields (Python API only).

    Returns:
        ``{"paths": {name: Path}, "model": ImplicitVesselModel, "summary": dict, "result": FitResult}``.
    """
    from vesselfield.io import load_points
    from vesselfield.methods.implicit_vessel import check_normals, check_points

    points_path = Path(points_path)
    points, normals = load_points(points_path, frame=frame, scale_to_mm=scale_to_mm)
    points = check_points(points, f"point file {points_path.name}")
    if use_normals:
        if normals is None:
            raise VesselfieldError(f"--normals: point file {points_path.name} has no normals "
                                   "(it needs 6 columns: x y z nx ny nz)")
        normals = check_normals(normals, points, f"the normals in {points_path.name}")
    else:
        normals = None
    config = _make_config(preset, iterations, time_limit_s, overrides)
    spacing_mm = _check_spacing(spacing_mm)
    out = _check_out(out_dir)
    inputs = {"points": str(points_path.resolve()), "frame": frame.upper(), "scale_to_mm": float(scale_to_mm),
              "use_normals": bool(use_normals), "overrides": dict(overrides or {})}
    words = ["vesselfield", "fit", "points", "--points", str(points_path), "--out", str(out)]
    words += ["--normals"] if use_normals else []
    words += _options_words(config, frame=frame, scale_to_mm=scale_to_mm, spacing_mm=spacing_mm, device=device)
    return _fit_one_surface("fit points", points, normals, out, config=config, spacing_mm=spacing_mm,
                            device=device, resume=resume, progress=progress, report=report, inputs=inputs,
                            command=shlex.join(words))


def fit_mesh_files(
    mesh_path,
    out_dir,
    *,
    n_points: int,
    seed: int = 0,
    use_normals: bool = True,
    frame: str = "LPS",
    scale_to_mm: float = 1.0,
    preset: str = "fast",
    iterations: int | None = None,
    spacing_mm: float | None = None,
    time_limit_s: float | None = None,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
    report: bool = True,
    overrides: dict | None = None,
) -> dict:
    """``vesselfield fit mesh``: sample ``n_points`` points (and face normals) on a surface mesh, then fit.

    Args:
        mesh_path: ``.stl`` / ``.ply`` / ``.obj`` / ``.vtp`` triangle surface in ``frame`` and file
            units (``scale_to_mm``: 10 for cm, e.g. SimVascular models).
        n_points: points drawn uniformly by area (:func:`~vesselfield.methods.implicit_vessel.sample_mesh_surface`).
        seed: seed of the sampling (the fit's own seed is ``InrConfig.seed``).
        use_normals: use the faces' outward normals in the fit (IGR normal term).
        Other arguments: as :func:`fit_points_files`. The sampled points and normals are also
        written to ``DIR/points.ply``.

    Returns:
        As :func:`fit_points_files`.
    """
    from vesselfield.io import load_mesh
    from vesselfield.methods.implicit_vessel import check_points, sample_mesh_surface

    mesh_path = Path(mesh_path)
    mesh = load_mesh(mesh_path, frame=frame, scale_to_mm=scale_to_mm)
    points, normals = sample_mesh_surface(mesh, int(n_points), int(seed))
    points = check_points(points, f"the points sampled on {mesh_path.name}")
    config = _make_config(preset, iterations, time_limit_s, overrides)
    spacing_mm = _check_spacing(spacing_mm)
    out = _check_out(out_dir)
    inputs = {"mesh": str(mesh_path.resolve()), "frame": frame.upper(), "scale_to_mm": float(scale_to_mm),
              "n_points": int(n_points), "seed": int(seed), "use_normals": bool(use_normals),
              "overrides": dict(overrides or {})}
    words = ["vesselfield", "fit", "mesh", "--mesh", str(mesh_path), "--n-points", str(int(n_points)),
             "--seed", str(int(seed)), "--out", str(out)]
    words += [] if use_normals else ["--no-normals"]
    words += _options_words(config, frame=frame, scale_to_mm=scale_to_mm, spacing_mm=spacing_mm, device=device)
    return _fit_one_surface("fit mesh", points, normals if use_normals else None, out, config=config,
                            spacing_mm=spacing_mm, device=device, resume=resume, progress=progress, report=report,
                            inputs=inputs, command=shlex.join(words), extra_files={"points.ply": (points, normals)})


# ------------------------------------------------------------------------------------ nested surfaces
def _load_surface(path: Path, *, n_points: int, seed: int, frame: str, scale_to_mm: float, use_normals: bool):
    """(points, normals or None, kind) of one nested surface: a mesh (sampled) or a point file."""
    from vesselfield.io import load_mesh, load_points
    from vesselfield.methods.implicit_vessel import sample_mesh_surface

    suffix = path.suffix.lower()
    kind = "points" if suffix in _POINT_SUFFIXES else "mesh"
    if suffix == ".ply":
        import trimesh

        if not path.is_file():
            raise VesselfieldError(f"surface file {path} does not exist")
        try:
            loaded = trimesh.load(str(path), file_type="ply", process=False)
        except Exception as exc:  # trimesh raises many types for a bad file
            raise VesselfieldError(f"cannot read {path}: {exc}") from None
        kind = "mesh" if len(getattr(loaded, "faces", ())) else "points"
    if kind == "mesh":
        points, normals = sample_mesh_surface(load_mesh(path, frame=frame, scale_to_mm=scale_to_mm), n_points, seed)
    else:
        points, normals = load_points(path, frame=frame, scale_to_mm=scale_to_mm)
    return points, (normals if use_normals else None), kind


def _nesting_check(sdf_of, bounds_mm, volumes, names, n_samples: int = NESTING_SAMPLES, seed: int = 0) -> dict:
    """Nesting of K surfaces (innermost first): how often ``f_k >= f_{k+1}`` is broken.

    ``violation_fraction``: over ``n_samples`` uniform points in ``bounds_mm``; ``violation_fraction_grid``:
    over the voxels of ``volumes`` ((X, Y, Z) SDFs in mm, one per surface); ``max_violation_mm``: the
    largest ``f_{k+1} - f_k`` at the uniform points; ``escaped_voxels``: voxels inside a surface but
    outside the next one out.
    """
    from vesselfield.losses.igr import nesting_violation_fraction

    lo, hi = np.asarray(bounds_mm, dtype=np.float64)
    samples = np.random.default_rng(seed).uniform(lo, hi, size=(int(n_samples), 3))
    f = np.stack([sdf_of(k, samples) for k in range(len(names))], axis=1)
    g = np.stack([v.ravel() for v in volumes], axis=1)
    excess = np.maximum(f[:, 1:] - f[:, :-1], 0.0)
    return {
        "surfaces_innermost_first": list(names),
        "uniform_samples": int(n_samples),
        "sample_box_mm": [lo.tolist(), hi.tolist()],
        "violation_fraction": nesting_violation_fraction(f),
        "violation_fraction_grid": nesting_violation_fraction(g),
        "max_violation_mm": float(excess.max()) if excess.size else 0.0,
        "grid_voxels": int(g.shape[0]),
        # What a wall model cares about: voxels inside surface k but outside surface k + 1.
        "escaped_voxels": int(sum(((volumes[k] < 0) & (volumes[k + 1] >= 0)).sum() for k in range(len(volumes) - 1))),
    }


def fit_nested_files(
    surface_paths: Sequence,
    out_dir,
    *,
    names: Sequence[str] | None = None,
    separate: bool = False,
    n_points: int = DEFAULT_NESTED_POINTS,
    nesting_weight: float | None = None,
    seed: int = 0,
    use_normals: bool = True,
    frame: str = "LPS",
    scale_to_mm: float = 1.0,
    preset: str = "fast",
    iterations: int | None = None,
    spacing_mm: float | None = None,
    time_limit_s: float | None = None,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
    report: bool = True,
    overrides: dict | None = None,
) -> dict:
    """``vesselfield fit nested``: K nested surfaces (innermost first) in one network with K outputs.

    Args:
        surface_paths: K >= 2 files, innermost first (e.g. lumen, wall): meshes (``.stl``, ``.obj``,
            ``.vtp``, ``.ply`` with faces; ``n_points`` sampled on each) or point files (``.npy``,
            ``.xyz``, ``.txt``, ``.csv``, ``.ply`` without faces).
        names: K surface names (default: the file names without suffixes).
        separate: fit one network per surface (``DIR/<name>/model.pt``) instead of one joint
            network, to compare; ``nesting_weight`` must then be 0.
        n_points: points sampled on each mesh surface (seed ``seed + k`` for surface k).
        nesting_weight: weight of the nesting penalty (default: ``InrConfig.nesting_weight``).
        use_normals: use mesh face normals and normals stored in point files.
        time_limit_s: with ``separate``, the limit of each network's fit.
        Other arguments: as :func:`fit_points_files`.

    Writes ``model.pt`` (joint) or ``<name>/model.pt`` (separate), ``sdf_<name>.nii.gz`` and
    ``mesh_<name>.stl`` for every surface on one common grid, ``nesting.json``
    (:func:`~vesselfield.losses.igr.nesting_violation_fraction` on :data:`NESTING_SAMPLES` uniform
    points in the surfaces' bounding box and on the grid), ``points_<name>.ply`` for sampled
    meshes, ``config.yaml``, ``log.csv`` (per network), ``summary.json`` and ``report.html``.

    Returns:
        ``{"paths", "models": {name: ImplicitVesselModel} (separate) or the joint model under
        every name, "model": the joint model or None, "summary", "nesting", "results"}``.
    """
    from vesselfield.io import save_mesh, save_points, save_volume
    from vesselfield.methods.implicit_vessel import check_normals, check_points, grid_over_box

    paths_in = [Path(p) for p in (surface_paths or [])]
    if len(paths_in) < 2:
        raise VesselfieldError(f"fit nested needs at least two --surfaces (innermost first), got {len(paths_in)}; "
                               "use fit points or fit mesh for one")
    names = _check_names(names if names else _default_names(paths_in), len(paths_in))
    point_sets, normal_sets, kinds = [], [], []
    for k, (path, name) in enumerate(zip(paths_in, names)):
        p, n, kind = _load_surface(path, n_points=int(n_points), seed=int(seed) + k, frame=frame,
                                   scale_to_mm=scale_to_mm, use_normals=use_normals)
        p = check_points(p, f"surface {name} ({path.name})")
        point_sets.append(p)
        normal_sets.append(None if n is None else check_normals(n, p, f"the normals of surface {name} ({path.name})"))
        kinds.append(kind)
    config = _make_config(preset, iterations, time_limit_s, overrides, nesting_weight=nesting_weight)
    if separate and config.nesting_weight > 0:
        raise VesselfieldError("--nesting-weight couples the surfaces of one joint network: drop --separate or "
                               "set it to 0")
    spacing_mm = _check_spacing(spacing_mm)
    out = _check_out(out_dir)
    bounds = _points_bounds(point_sets)
    spacing = spacing_mm if spacing_mm is not None else default_spacing_mm(bounds)
    grid = grid_over_box(bounds, spacing)
    _validate_device(device)
    inputs = {
        "surfaces": [str(p.resolve()) for p in paths_in], "kinds": kinds, "names": names, "separate": bool(separate),
        "n_points": int(n_points), "seed": int(seed), "use_normals": bool(use_normals), "frame": frame.upper(),
        "scale_to_mm": float(scale_to_mm), "spacing_mm": spacing, "device": device,
        "points_sha256": [_digest(p, n) for p, n in zip(point_sets, normal_sets)],
        "overrides": dict(overrides or {}),
    }
    run_dirs = [out / n for n in names] if separate else [out]
    _check_run_folder(out, [out] + [out / n for n in names], config, inputs, resume)
    words = ["vesselfield", "fit", "nested", "--surfaces", *map(str, paths_in), "--names", *names,
             "--out", str(out), "--n-points", str(int(n_points)), "--seed", str(int(seed)),
             "--nesting-weight", f"{config.nesting_weight:g}"]
    words += ["--separate"] if separate else []
    words += [] if use_normals else ["--no-normals"]
    words += _options_words(config, frame=frame, scale_to_mm=scale_to_mm, spacing_mm=spacing_mm, device=device)

    out.mkdir(parents=True, exist_ok=True)
    write_config_yaml(out / CONFIG_NAME, "fit nested", config, inputs, shlex.join(words))
    paths = {"config": out / CONFIG_NAME}
    for name, p, n, kind in zip(names, point_sets, normal_sets, kinds):
        if kind == "mesh":
            save_points(out / f"points_{name}.ply", p, n)
            paths[f"points_{name}"] = out / f"points_{name}.ply"

    results = {}
    if separate:
        models = {}
        for name, p, n, run_dir in zip(names, point_sets, normal_sets, run_dirs):
            again = resume and (run_dir / CHECKPOINT_NAME).exists()
            results[name] = _fit(p, n, [name], config, device=device, out=run_dir, resume=again, progress=progress)
            models[name] = results[name].model
            models[name].save(run_dir / "model.pt")
            paths[f"model_{name}"] = run_dir / "model.pt"
            paths[f"log_{name}"] = run_dir / "log.csv"
        sdf_of = lambda k, x: models[names[k]].sdf(x)  # noqa: E731
        joint = None
    else:
        result = _fit(point_sets, normal_sets, names, config, device=device, out=out, resume=resume,
                      progress=progress)
        results = {name: result for name in names}
        joint = result.model
        joint.save(out / "model.pt")
        paths["model"] = out / "model.pt"
        paths["log"] = out / "log.csv"
        models = {name: joint for name in names}
        sdf_of = lambda k, x: joint.sdf(x, k)  # noqa: E731

    volumes, meshes, surfaces, warnings = [], [], {}, []
    for k, name in enumerate(names):
        sdf = sdf_of(k, grid.voxel_centers_mm(np.float32))
        volumes.append(sdf)
        save_volume(out / f"sdf_{name}.nii.gz", sdf, grid)
        paths[f"sdf_{name}"] = out / f"sdf_{name}.nii.gz"
        mesh, mesh_info, warning = _mesh_of(sdf, grid)
        meshes.append(mesh)
        if mesh is not None:
            save_mesh(out / f"mesh_{name}.stl", mesh)
            paths[f"mesh_{name}"] = out / f"mesh_{name}.stl"
        if warning:
            warnings.append(f"{name}: {warning}")
        surfaces[name] = {"source": str(paths_in[k]), "kind": kinds[k], "n_points": int(len(point_sets[k])),
                          "normals": normal_sets[k] is not None, "mesh": mesh_info}
    nesting = {"mode": "separate" if separate else "joint", "nesting_weight": float(config.nesting_weight),
               **_nesting_check(sdf_of, bounds, volumes, names), "grid": grid.to_dict()}
    _write_json(out / "nesting.json", nesting)
    paths["nesting"] = out / "nesting.json"

    fits = {name: _fit_summary(results[name], config) for name in (names if separate else names[:1])}
    summary = {
        "command": "fit nested",
        "mode": nesting["mode"],
        "surfaces": surfaces,
        "preset": config.preset,
        **({"fits": fits} if separate else fits[names[0]]),
        "nesting_violation_fraction": nesting["violation_fraction"],
        "spacing_mm": spacing,
        "grid": grid.to_dict(),
        "cfd_ready": not warnings,
        "warnings": warnings,
    }
    _write_json(out / SUMMARY_NAME, summary)
    paths["summary"] = out / SUMMARY_NAME
    if report:
        if separate:
            for name, p, run_dir, mesh in zip(names, point_sets, run_dirs, meshes):
                rep = _write_report(run_dir, model=models[name], points=p, log=results[name].log, mesh=mesh,
                                    warnings=[w for w in warnings if w.startswith(f"{name}: ")])
                paths.update({f"{key}_{name}": v for key, v in rep.items()})
        else:
            # The slices show every surface's zero level; the 3D view the outermost surface.
            paths.update(_write_report(out, model=joint, points=point_sets, log=results[names[0]].log,
                                       mesh=meshes[-1], warnings=warnings))
    return {"paths": paths, "models": models, "model": joint, "summary": summary, "nesting": nesting,
            "results": results}


# ------------------------------------------------------------------------------------ blend
def _blend_channel(model, path, surface) -> int:
    if model.n_surfaces == 1:
        return 0
    if surface is None:
        raise VesselfieldError(f"model {path} has {model.n_surfaces} surfaces ({', '.join(model.surface_names)}): "
                               "pass --surface NAME to choose one")
    if surface not in model.surface_names:
        raise VesselfieldError(f"model {path} has no surface {surface!r} (it has {', '.join(model.surface_names)})")
    return model.surface_names.index(surface)


def blend_sdf_volume(models, channels, grid, k_mm: float) -> tuple[np.ndarray, list[int]]:
    """Smooth union (:func:`~vesselfield.csg.union_all`, width ``k_mm``) of the models' SDFs (mm) on ``grid``.

    Evaluated slab by slab along x, so memory stays at one float32 volume plus a chunk.

    Returns:
        ``(sdf (X, Y, Z) float32 mm, voxels inside each model)``.
    """
    from vesselfield.csg import union_all

    x, y, z = grid.axes_mm()
    yy, zz = np.meshgrid(y, z, indexing="ij")
    out = np.empty(grid.shape, dtype=np.float32)
    inside = [0] * len(models)
    slab = max(1, _CHUNK // (len(y) * len(z)))
    for i0 in range(0, len(x), slab):
        xs = x[i0:i0 + slab]
        pts = np.stack(np.broadcast_arrays(xs[:, None, None], yy[None], zz[None]), axis=-1).astype(np.float32)
        values = [m.sdf(pts, c) for m, c in zip(models, channels)]
        for j, v in enumerate(values):
            inside[j] += int((v < 0).sum())
        out[i0:i0 + slab] = union_all(values, k_mm)
    return out, inside


def blend_files(
    model_dirs: Sequence,
    out_dir,
    *,
    k_mm: float,
    spacing_mm: float,
    surface: str | None = None,
    margin_mm: float | None = None,
    device: str = "auto",
) -> dict:
    """``vesselfield blend``: join fitted models with a smooth union into one SDF and one mesh.

    The models' SDFs (mm) are evaluated on one grid covering the union of their boxes plus
    ``margin_mm`` (default ``5 * spacing_mm + k_mm``), folded with
    :func:`~vesselfield.csg.union_all` (Quilez's polynomial smooth minimum, width ``k_mm``; 0: a
    plain union) and meshed at 0.

    Args:
        model_dirs: fit output folders (or ``model.pt`` files); at least one.
        out_dir: receives ``sdf.nii.gz``, ``mesh.stl``, ``summary.json`` and ``config.yaml``.
        k_mm: smoothing width in mm (>= 0): the fillet between vessels is about this wide.
        spacing_mm: voxel size in mm (> 0).
        surface: the surface to use of multi-surface (nested) models.
        device: ``auto``, ``cpu`` or ``cuda`` for evaluating the models.

    Returns:
        ``{"paths", "summary", "mesh", "warning"}``; ``warning`` (also in ``summary.json``) says
        why the mesh is not ready for CFD meshing (not watertight, or not one component), else None.
    """
    from vesselfield.io import save_mesh, save_volume
    from vesselfield.meshing.marching_cubes import mesh_from_volume
    from vesselfield.methods.implicit_vessel import ImplicitVesselModel, grid_over_box

    dirs = [Path(p) for p in (model_dirs or [])]
    if not dirs:
        raise VesselfieldError("blend needs at least one model folder (--models DIR ...)")
    k = float(k_mm)
    if not (math.isfinite(k) and k >= 0):
        raise VesselfieldError(f"--k must be a smoothing width >= 0 mm, got {k_mm}")
    spacing = _check_spacing(spacing_mm)
    if spacing is None:
        raise VesselfieldError("--spacing (mm) is needed")
    margin = 5 * spacing + k if margin_mm is None else float(margin_mm)
    if not (math.isfinite(margin) and margin >= 0):
        raise VesselfieldError(f"margin must be >= 0 mm, got {margin_mm}")
    out = _check_out(out_dir)
    _validate_device(device)
    models = [ImplicitVesselModel.load(p, device=device) for p in dirs]
    channels = [_blend_channel(m, p, surface) for m, p in zip(models, dirs)]
    grid = grid_over_box(_union_bounds([m.bounds_mm for m in models]), spacing, margin)
    sdf, inside = blend_sdf_volume(models, channels, grid, k)
    try:
        mesh = mesh_from_volume(sdf, grid, 0.0, inside="below")
    except VesselfieldError as exc:
        raise VesselfieldError(f"the blended SDF has no surface: {exc}") from None
    info, warning = _checked_summary(mesh, sdf)
    if warning and info["components"] > 1:
        warning += " (the models do not touch: check their placement or raise --k)"
    summary = {
        "command": "blend",
        "models": [{"path": str(p.resolve()), "surface": m.surface_names[c], "surfaces": list(m.surface_names),
                    "volume_mm3": inside_j * grid.voxel_volume_mm3}
                   for p, m, c, inside_j in zip(dirs, models, channels, inside)],
        "k_mm": k,
        "spacing_mm": spacing,
        "margin_mm": margin,
        "grid": grid.to_dict(),
        "mesh": info,
        "watertight": info["watertight"],
        "components": info["components"],
        "cfd_ready": warning is None,
        "warnings": [warning] if warning else [],
    }
    words = ["vesselfield", "blend", "--models", *map(str, dirs), "--k", f"{k:g}", "--spacing", f"{spacing:g}",
             "--out", str(out)] + (["--surface", surface] if surface is not None else [])
    out.mkdir(parents=True, exist_ok=True)
    save_volume(out / "sdf.nii.gz", sdf, grid)
    save_mesh(out / "mesh.stl", mesh)
    _write_json(out / SUMMARY_NAME, summary)
    write_config_yaml(out / CONFIG_NAME, "blend", {"k_mm": k, "spacing_mm": spacing, "margin_mm": margin,
                                                   "surface": surface, "device": device},
                      {"models": [str(p.resolve()) for p in dirs]}, shlex.join(words))
    paths = {"sdf": out / "sdf.nii.gz", "mesh": out / "mesh.stl", "summary": out / SUMMARY_NAME,
             "config": out / CONFIG_NAME}
    return {"paths": paths, "summary": summary, "mesh": mesh, "warning": warning}
