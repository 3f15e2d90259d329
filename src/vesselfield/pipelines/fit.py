"""``vesselfield fit points|mesh|nested``: surface files in, implicit vessel models out.

Each job reads and checks every input (points, normals, meshes, the config, the output grid's
size, an earlier run in the output folder) before it writes anything, and writes every file
atomically. A fit writes::

    DIR/model.pt        the fitted model (``ImplicitVesselModel.load(DIR)``)
    DIR/sdf.nii.gz      float32 SDF in mm (negative inside) on ``model.grid(spacing)`` (LPS mm, RAS affine)
    DIR/mesh.stl        its zero level, world mm (LPS)
    DIR/config.yaml     the command, the inputs and every ImplicitVesselConfig field: what reruns it
    DIR/log.csv         one row per iteration (and checkpoint.pt, for --resume)
    DIR/summary.json    time, iterations, final losses, mesh checks (watertight, components, volume), warnings
    DIR/report.html     and its figures (:func:`vesselfield.report.implicit_vessel.write_inr_report`)
    DIR/points.ply      (fit mesh) the sampled surface points and normals, so the fit can be rerun

``fit nested`` fits K surfaces (innermost first) in one network with K outputs (or, with
``separate=True``, one network per surface in ``DIR/<name>/``, for comparison) and writes
``sdf_<name>.nii.gz`` / ``mesh_<name>.stl`` on one common grid and ``nesting.json`` (how often the
order inner-inside-outer is broken).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.io.run_folder import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    LOG_NAME,
    RunSummary,
    array_digest,
    check_out_dir,
    prepare_run_folder,
    reproducing_command,
    write_json,
)

__all__ = ["DEFAULT_NESTED_POINTS", "VOXELS_PER_EXTENT", "default_spacing_mm", "fit_mesh_files",
           "fit_nested_files", "fit_points_files"]

#: Default grid: this many voxels along the shape's largest extent.
VOXELS_PER_EXTENT = 128
#: Default number of points sampled from each mesh surface by ``fit nested``.
DEFAULT_NESTED_POINTS = 5000
#: Inputs that must not change when a fit is resumed.
_IDENTITY_INPUTS = ("points_sha256", "names", "separate")
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_POINT_SUFFIXES = (".npy", ".xyz", ".txt", ".csv")


# ------------------------------------------------------------------------------------ settings
def _config(config):
    from vesselfield.methods.implicit_vessel import ImplicitVesselConfig

    config = ImplicitVesselConfig() if config is None else config
    if not isinstance(config, ImplicitVesselConfig):
        raise VesselfieldError(f"config must be an ImplicitVesselConfig, got {type(config).__name__}")
    return config


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


def _points_bounds(point_sets) -> np.ndarray:
    allp = np.concatenate(point_sets, axis=0)
    return np.stack([allp.min(axis=0), allp.max(axis=0)])


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


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or int(seed) != seed or not 0 <= int(seed) < 2 ** 32:
        raise VesselfieldError(f"--seed must be an integer in [0, 2^32), got {seed}")
    return int(seed)


def _validate_device(device: str) -> None:
    from vesselfield.device import resolve_device

    resolve_device(device)


def _common_words(*, frame: str, scale_to_mm: float, spacing_mm, device: str) -> list[str]:
    from vesselfield.config import format_value

    # Numbers as --set writes them (repr): the command reruns with exactly these values.
    words = ["--frame", frame.upper(), "--scale-to-mm", format_value(float(scale_to_mm)), "--device", device]
    return words + (["--spacing", format_value(float(spacing_mm))] if spacing_mm is not None else [])


# ------------------------------------------------------------------------------------ pieces
def _mesh_of(sdf: np.ndarray, grid):
    """(mesh or None, mesh summary or None, warning or None) of the zero level of an SDF volume."""
    from vesselfield.meshing import cfd_check, mesh_from_volume

    try:
        mesh = mesh_from_volume(sdf, grid, 0.0, inside="below")
    except VesselfieldError as exc:
        return None, None, f"no mesh: {exc}"
    return (mesh, *cfd_check(mesh, sdf))


def _write_report(out: Path, *, model, points, log, mesh, warnings=(), analysis=None) -> dict:
    from vesselfield.report.implicit_vessel import write_inr_report

    paths = write_inr_report(out, model=model, points=points, log=log, mesh=mesh, metrics=None, warnings=warnings,
                             analysis=analysis)
    # The report names its figures "slices", "mesh", ...: keep them apart from the fit's own files.
    return {key if key == "report" else f"figure_{key}": path for key, path in paths.items()}


def _fit(points, normals, names, config, *, device, out: Path, resume: bool, progress: bool):
    from vesselfield.methods.implicit_vessel import fit_implicit_sdf

    return fit_implicit_sdf(points, normals, names=names, config=config, device=device, out_dir=out,
                            resume=resume, progress=progress)


def _fit_details(result, config) -> dict:
    log = result.log
    return {
        "iterations": int(result.iterations),
        "prior_steps": int(result.prior_steps),
        "iterations_planned": int(config.iterations),
        "stopped": result.stopped,
        "fit_seconds": round(float(result.seconds), 3),
        "final_losses": {k: v for k, v in log[-1].items() if k not in ("iteration", "time_s")} if log else {},
        "device": str(result.model.device),
        "sign_prior": result.sign_prior,
    }


def _fit_lines(fits: dict) -> list[str]:
    lines = []
    for name, fit in fits.items():
        label = f"{name}: " if name else ""
        lines.append(f"{label}{fit['iterations']} iterations in {fit['fit_seconds']:.1f} s on {fit['device']} "
                     f"(final loss {fit['final_losses'].get('loss', float('nan')):.4g})")
        if fit["stopped"] == "time_limit":
            lines.append(f"{label}stopped by --time-limit after {fit['iterations']} iterations; rerun with "
                         "--resume to continue")
    return lines


def _mesh_lines(meshes: dict) -> list[str]:
    from vesselfield.meshing import format_mesh_summary

    return [f"{name}: {format_mesh_summary(m)}" for name, m in meshes.items() if m is not None]


# ------------------------------------------------------------------------------------ one surface
def _fit_one_surface(verb: str, points, normals, out: Path, *, config, spacing_mm, device, resume, progress,
                     report, inputs: dict, words: list, extra_files: dict | None = None,
                     analyze: bool = True) -> RunSummary:
    """The shared tail of ``fit points`` and ``fit mesh``: checks, fit, outputs."""
    from vesselfield.grid import grid_over_box
    from vesselfield.io import save_mesh, save_points, save_volume

    if config.nesting_weight > 0:
        raise VesselfieldError("nesting_weight orders nested surfaces: one surface has nothing to nest; use "
                               "fit nested, or set it to 0")
    bounds = _points_bounds([points])
    spacing = spacing_mm if spacing_mm is not None else default_spacing_mm(bounds)
    grid_over_box(bounds, spacing)  # the size check, before the fit
    _validate_device(device)
    inputs = {**inputs, "points_sha256": [array_digest(points, normals)], "spacing_mm": spacing, "device": device}
    prepare_run_folder(out, verb=verb, config=config, inputs=inputs, command=reproducing_command(words, config),
                       resume=resume, identity_inputs=_IDENTITY_INPUTS)
    summary = RunSummary(verb=verb, out_dir=out, files={"config": out / CONFIG_NAME})
    files = summary.files
    for name, (p, n) in (extra_files or {}).items():
        save_points(out / name, p, n)
        files[Path(name).stem] = out / name
    result = _fit(points, normals, None, config, device=device, out=out, resume=resume, progress=progress)
    model = result.model
    model.save(out / "model.pt")
    files["model"] = out / "model.pt"
    grid = model.grid(spacing)
    sdf = model.sdf_volume(grid)
    save_volume(out / "sdf.nii.gz", sdf, grid)
    files["sdf"] = out / "sdf.nii.gz"
    mesh, mesh_info, warning = _mesh_of(sdf, grid)
    if mesh is not None:
        save_mesh(out / "mesh.stl", mesh)
        files["mesh"] = out / "mesh.stl"
    if (out / LOG_NAME).exists():  # a fit stopped before its first iteration has no log
        files["log"] = out / LOG_NAME
    fit = _fit_details(result, config)
    summary.warnings = [warning] if warning else []
    summary.details = {
        "surfaces": list(model.surface_names),
        "n_points": int(len(points)),
        "normals": normals is not None,
        "preset": config.preset,
        **fit,
        "spacing_mm": spacing,
        "grid": grid.to_dict(),
        "mesh": mesh_info,
        "components": mesh_info["components"] if mesh_info else 0,
        "cfd_ready": warning is None,
    }
    summary.lines = _fit_lines({"": fit}) + _mesh_lines({"mesh": mesh_info})
    summary.objects = {"model": model, "result": result}
    analysis = None
    if analyze and mesh is not None:
        from vesselfield.analysis.fields import function_field
        from vesselfield.pipelines.analyze import analysis_after_run, analysis_details

        # The network itself is measured (its exact zero level); the SDF volume just written gives the
        # topology, so the network is not sampled on a grid again.
        lo, hi = grid.bounds_mm
        field = function_field(lambda p: model.sdf(p), lo, hi, kind="network", batch_points=1 << 16)
        analysis, a_files, a_lines, a_warnings = analysis_after_run(field, out, topology=(sdf, grid))
        files.update(a_files)
        summary.warnings.extend(a_warnings)
        summary.lines.extend(a_lines)
        if analysis is not None:
            summary.details["analysis"] = analysis_details(analysis)
            summary.objects["analysis"] = analysis
    if report:
        files.update(_write_report(out, model=model, points=points, log=result.log, mesh=mesh,
                                   warnings=summary.warnings, analysis=analysis))
    summary.write()
    return summary


def fit_points_files(
    points_path,
    out_dir,
    *,
    config=None,
    use_normals: bool = False,
    frame: str = "LPS",
    scale_to_mm: float = 1.0,
    spacing_mm: float | None = None,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
    report: bool = True,
    analyze: bool = True,
) -> RunSummary:
    """``vesselfield fit points``: an implicit SDF fitted to a point cloud file.

    Args:
        points_path: ``.npy`` / ``.ply`` / ``.xyz`` / ``.txt`` / ``.csv`` surface points (3 columns,
            or 6 with outward normals), in ``frame`` and file units (``scale_to_mm`` mm per unit).
        out_dir: output folder (see the module docstring for what it receives).
        config: :class:`~vesselfield.methods.implicit_vessel.ImplicitVesselConfig` (default: the fast preset).
        use_normals: use the normals stored in the file (IGR normal term); an error if it has none.
        spacing_mm: voxel size of ``sdf.nii.gz`` and of the mesh (default: :func:`default_spacing_mm`).
        device: ``auto``, ``cpu`` or ``cuda``.
        resume: continue an interrupted fit in ``out_dir`` (same settings and points).
        progress: show a progress bar. report: write ``report.html`` and its figures.
        analyze: run the vessel analysis on the fitted network into ``out_dir/analysis/`` and add it
            to the report (:mod:`vesselfield.pipelines.analyze`).

    Returns:
        The :class:`RunSummary`; ``objects["model"]`` is the fitted
        :class:`~vesselfield.methods.implicit_vessel.ImplicitVesselModel`, ``objects["result"]`` the ``FitResult``.
    """
    from vesselfield.io import load_points
    from vesselfield.methods.implicit_vessel import check_normals, check_points

    config = _config(config)
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
    spacing_mm = _check_spacing(spacing_mm)
    out = check_out_dir(out_dir)
    inputs = {"points": str(points_path.resolve()), "frame": frame.upper(), "scale_to_mm": float(scale_to_mm),
              "use_normals": bool(use_normals)}
    words = ["fit", "points", "--points", points_path, "--out", out] + (["--normals"] if use_normals else [])
    words += _common_words(frame=frame, scale_to_mm=scale_to_mm, spacing_mm=spacing_mm, device=device)
    return _fit_one_surface("fit points", points, normals, out, config=config, spacing_mm=spacing_mm,
                            device=device, resume=resume, progress=progress, report=report, analyze=analyze,
                            inputs=inputs,
                            words=words)


def fit_mesh_files(
    mesh_path,
    out_dir,
    *,
    n_points: int,
    seed: int = 0,
    config=None,
    use_normals: bool = True,
    frame: str = "LPS",
    scale_to_mm: float = 1.0,
    spacing_mm: float | None = None,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
    report: bool = True,
    analyze: bool = True,
) -> RunSummary:
    """``vesselfield fit mesh``: sample ``n_points`` points (and face normals) on a surface mesh, then fit.

    Args:
        mesh_path: ``.stl`` / ``.ply`` / ``.obj`` / ``.vtp`` triangle surface in ``frame`` and file
            units (``scale_to_mm``: 10 for cm, e.g. SimVascular models).
        n_points: points drawn uniformly by area (:func:`~vesselfield.methods.implicit_vessel.sample_mesh_surface`).
        seed: seed of the sampling (the fit's own seed is the config's ``seed``).
        use_normals: use the faces' outward normals in the fit (IGR normal term).
        Other arguments: as :func:`fit_points_files`. The sampled points and normals are also
        written to ``DIR/points.ply``.
    """
    from vesselfield.io import load_mesh
    from vesselfield.methods.implicit_vessel import check_points, sample_mesh_surface

    config = _config(config)
    seed = _check_seed(seed)
    mesh_path = Path(mesh_path)
    mesh = load_mesh(mesh_path, frame=frame, scale_to_mm=scale_to_mm)
    points, normals = sample_mesh_surface(mesh, int(n_points), seed)
    points = check_points(points, f"the points sampled on {mesh_path.name}")
    spacing_mm = _check_spacing(spacing_mm)
    out = check_out_dir(out_dir)
    inputs = {"mesh": str(mesh_path.resolve()), "frame": frame.upper(), "scale_to_mm": float(scale_to_mm),
              "n_points": int(n_points), "seed": int(seed), "use_normals": bool(use_normals)}
    words = ["fit", "mesh", "--mesh", mesh_path, "--n-points", str(int(n_points)), "--seed", str(int(seed)),
             "--out", out] + ([] if use_normals else ["--no-normals"])
    words += _common_words(frame=frame, scale_to_mm=scale_to_mm, spacing_mm=spacing_mm, device=device)
    return _fit_one_surface("fit mesh", points, normals if use_normals else None, out, config=config,
                            spacing_mm=spacing_mm, device=device, resume=resume, progress=progress, report=report,
                            analyze=analyze,
                            inputs=inputs, words=words, extra_files={"points.ply": (points, normals)})


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


def fit_nested_files(
    surface_paths: Sequence,
    out_dir,
    *,
    names: Sequence[str] | None = None,
    separate: bool = False,
    n_points: int = DEFAULT_NESTED_POINTS,
    seed: int = 0,
    config=None,
    use_normals: bool = True,
    frame: str = "LPS",
    scale_to_mm: float = 1.0,
    spacing_mm: float | None = None,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
    report: bool = True,
    analyze: bool = True,
) -> RunSummary:
    """``vesselfield fit nested``: K nested surfaces (innermost first) in one network with K outputs.

    Args:
        surface_paths: K >= 2 files, innermost first (e.g. lumen, wall): meshes (``.stl``, ``.obj``,
            ``.vtp``, ``.ply`` with faces; ``n_points`` sampled on each) or point files (``.npy``,
            ``.xyz``, ``.txt``, ``.csv``, ``.ply`` without faces).
        names: K surface names (default: the file names without suffixes).
        separate: fit one network per surface (``DIR/<name>/model.pt``) instead of one joint
            network, to compare; the config's ``nesting_weight`` must then be 0.
        n_points: points sampled on each mesh surface (seed ``seed + k`` for surface k).
        config: :class:`~vesselfield.methods.implicit_vessel.ImplicitVesselConfig`; its
            ``nesting_weight`` weighs the nesting penalty; with ``separate`` its ``time_limit_s``
            limits each network's fit.
        use_normals: use mesh face normals and normals stored in point files.
        analyze: run the vessel analysis on the innermost surface (the lumen) into ``out_dir/analysis/``.
        Other arguments: as :func:`fit_points_files`.

    Writes ``model.pt`` (joint) or ``<name>/model.pt`` (separate), ``sdf_<name>.nii.gz`` and
    ``mesh_<name>.stl`` for every surface on one common grid, ``nesting.json``
    (:func:`~vesselfield.methods.implicit_vessel.nesting_check` on uniform points in the surfaces'
    bounding box and on the grid), ``points_<name>.ply`` for sampled meshes, ``config.yaml``,
    ``log.csv`` (per network), ``summary.json`` and ``report.html``.

    Returns:
        The :class:`RunSummary`; ``objects``: ``"models"`` ({name: model}; the joint model under
        every name), ``"model"`` (the joint model or None), ``"nesting"``, ``"results"``.
    """
    from vesselfield.grid import grid_over_box
    from vesselfield.io import save_mesh, save_points, save_volume
    from vesselfield.methods.implicit_vessel import check_normals, check_points, nesting_check

    config = _config(config)
    paths_in = [Path(p) for p in (surface_paths or [])]
    if len(paths_in) < 2:
        raise VesselfieldError(f"fit nested needs at least two --surfaces (innermost first), got {len(paths_in)}; "
                               "use fit points or fit mesh for one")
    names = _check_names(names if names else _default_names(paths_in), len(paths_in))
    seed = _check_seed(seed)
    point_sets, normal_sets, kinds = [], [], []
    for k, (path, name) in enumerate(zip(paths_in, names)):
        p, n, kind = _load_surface(path, n_points=int(n_points), seed=int(seed) + k, frame=frame,
                                   scale_to_mm=scale_to_mm, use_normals=use_normals)
        p = check_points(p, f"surface {name} ({path.name})")
        point_sets.append(p)
        normal_sets.append(None if n is None else check_normals(n, p, f"the normals of surface {name} ({path.name})"))
        kinds.append(kind)
    if separate and config.nesting_weight > 0:
        raise VesselfieldError("--nesting-weight couples the surfaces of one joint network: drop --separate or "
                               "set it to 0")
    spacing_mm = _check_spacing(spacing_mm)
    out = check_out_dir(out_dir)
    bounds = _points_bounds(point_sets)
    spacing = spacing_mm if spacing_mm is not None else default_spacing_mm(bounds)
    grid = grid_over_box(bounds, spacing)
    _validate_device(device)
    inputs = {
        "surfaces": [str(p.resolve()) for p in paths_in], "kinds": kinds, "names": names, "separate": bool(separate),
        "n_points": int(n_points), "seed": int(seed), "use_normals": bool(use_normals), "frame": frame.upper(),
        "scale_to_mm": float(scale_to_mm), "spacing_mm": spacing, "device": device,
        "points_sha256": [array_digest(p, n) for p, n in zip(point_sets, normal_sets)],
    }
    run_dirs = [out / n for n in names] if separate else [out]
    words = ["fit", "nested", "--surfaces", *paths_in, "--names", *names, "--out", out, "--n-points",
             str(int(n_points)), "--seed", str(int(seed))]
    words += (["--separate"] if separate else []) + ([] if use_normals else ["--no-normals"])
    words += _common_words(frame=frame, scale_to_mm=scale_to_mm, spacing_mm=spacing_mm, device=device)
    prepare_run_folder(out, verb="fit nested", config=config, inputs=inputs,
                       command=reproducing_command(words, config), resume=resume,
                       identity_inputs=_IDENTITY_INPUTS, checkpoint_dirs=[out] + [out / n for n in names])
    summary = RunSummary(verb="fit nested", out_dir=out, files={"config": out / CONFIG_NAME})
    files = summary.files
    for name, p, n, kind in zip(names, point_sets, normal_sets, kinds):
        if kind == "mesh":
            save_points(out / f"points_{name}.ply", p, n)
            files[f"points_{name}"] = out / f"points_{name}.ply"

    results = {}
    if separate:
        models = {}
        for name, p, n, run_dir in zip(names, point_sets, normal_sets, run_dirs):
            again = resume and (run_dir / CHECKPOINT_NAME).exists()
            results[name] = _fit(p, n, [name], config, device=device, out=run_dir, resume=again, progress=progress)
            models[name] = results[name].model
            models[name].save(run_dir / "model.pt")
            files[f"model_{name}"] = run_dir / "model.pt"
            if (run_dir / LOG_NAME).exists():
                files[f"log_{name}"] = run_dir / LOG_NAME
        sdf_of = lambda k, x: models[names[k]].sdf(x)  # noqa: E731
        joint = None
    else:
        result = _fit(point_sets, normal_sets, names, config, device=device, out=out, resume=resume,
                      progress=progress)
        results = {name: result for name in names}
        joint = result.model
        joint.save(out / "model.pt")
        files["model"] = out / "model.pt"
        if (out / LOG_NAME).exists():
            files["log"] = out / LOG_NAME
        models = {name: joint for name in names}
        sdf_of = lambda k, x: joint.sdf(x, k)  # noqa: E731

    volumes, meshes, surfaces, warnings = [], [], {}, []
    for k, name in enumerate(names):
        sdf = sdf_of(k, grid.voxel_centers_mm(np.float32))
        volumes.append(sdf)
        save_volume(out / f"sdf_{name}.nii.gz", sdf, grid)
        files[f"sdf_{name}"] = out / f"sdf_{name}.nii.gz"
        mesh, mesh_info, warning = _mesh_of(sdf, grid)
        meshes.append(mesh)
        if mesh is not None:
            save_mesh(out / f"mesh_{name}.stl", mesh)
            files[f"mesh_{name}"] = out / f"mesh_{name}.stl"
        if warning:
            warnings.append(f"{name}: {warning}")
        surfaces[name] = {"source": str(paths_in[k]), "kind": kinds[k], "n_points": int(len(point_sets[k])),
                          "normals": normal_sets[k] is not None, "mesh": mesh_info}
    nesting = {"mode": "separate" if separate else "joint", "nesting_weight": float(config.nesting_weight),
               **nesting_check(sdf_of, bounds, volumes, names), "grid": grid.to_dict()}
    files["nesting"] = write_json(out / "nesting.json", nesting)

    fits = {name: _fit_details(results[name], config) for name in (names if separate else names[:1])}
    summary.warnings = warnings
    summary.details = {
        "mode": nesting["mode"],
        "surfaces": surfaces,
        "preset": config.preset,
        **({"fits": fits} if separate else fits[names[0]]),
        "nesting_violation_fraction": nesting["violation_fraction"],
        "spacing_mm": spacing,
        "grid": grid.to_dict(),
        "cfd_ready": not warnings,
    }
    summary.lines = (_fit_lines(fits if separate else {"": fits[names[0]]})
                     + _mesh_lines({name: s["mesh"] for name, s in surfaces.items()})
                     + [f"nesting ({nesting['mode']}): broken at {100 * nesting['violation_fraction']:.3g} % of "
                        "uniform samples (nesting.json)"])
    summary.objects = {"models": models, "model": joint, "nesting": nesting, "results": results}
    analysis = None
    if analyze and meshes[0] is not None:
        from vesselfield.analysis.fields import function_field
        from vesselfield.pipelines.analyze import analysis_after_run, analysis_details

        # The innermost surface (the lumen): its network evaluated directly, its SDF volume as topology.
        lo, hi = grid.bounds_mm
        field = function_field(lambda x: sdf_of(0, x), lo, hi, kind="network", batch_points=1 << 16)
        analysis, a_files, a_lines, a_warnings = analysis_after_run(field, out, topology=(volumes[0], grid))
        files.update(a_files)
        summary.warnings.extend(a_warnings)
        summary.lines.extend(a_lines)
        if analysis is not None:
            summary.details["analysis"] = {"surface": names[0], **analysis_details(analysis)}
            summary.objects["analysis"] = analysis
    if report:
        if separate:
            for k, (name, p, run_dir, mesh) in enumerate(zip(names, point_sets, run_dirs, meshes)):
                rep = _write_report(run_dir, model=models[name], points=p, log=results[name].log, mesh=mesh,
                                    warnings=[w for w in warnings if w.startswith(f"{name}: ")],
                                    analysis=analysis if k == 0 else None)
                files.update({f"{key}_{name}": v for key, v in rep.items()})
        else:
            # The slices show every surface's zero level; the 3D view the outermost surface.
            files.update(_write_report(out, model=joint, points=point_sets, log=results[names[0]].log,
                                       mesh=meshes[-1], warnings=warnings, analysis=analysis))
    summary.write()
    return summary
