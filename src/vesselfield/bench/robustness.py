"""Robustness to sparsity of implicit neural vessel models (Alblas et al., STACOM 2022, Sec. 3.1, Fig. 3).

The paper fits an MLP SDF (IGR) to 100-1000 points sampled on an aorta surface, 20 times per
count, and reports Dice (DSC) and average surface distance (ASD) as box plots; it finds a median
DSC above 0.95 even with 100 points. :func:`run_robustness_study` repeats that experiment on any
set of shapes:

- a shape is a :class:`StudyShape`: a name, a closed surface mesh (world LPS mm), and a reference
  occupancy volume (bool) with its :class:`~vesselfield.grid.VolumeGrid`;
- for every (count, repeat), ``count`` points are drawn uniformly by area on the mesh with a seed
  derived from ``(seed, count, repeat)``, and a model is fitted
  (:func:`~vesselfield.methods.implicit_vessel.fit_implicit_sdf`): from the bare points by default, as the
  paper does, or with the mesh faces' outward normals at the points (``normals=True``, the IGR
  normal term);
- **DSC**: ``model SDF < 0`` at the reference grid's voxel centres against the reference, the
  grid cropped to the reference's box plus 10 mm (:func:`crop_to_reference`: large image grids
  cost more to evaluate than a fit);
- **ASD**: the mean distance (mm) from ``n_held_out`` held-out surface points (drawn with another
  seed, never fitted) to the model's zero level, taken as the marching-cubes mesh of the predicted
  SDF on the reference grid (or on a grid of ``spacing_mm``), with the exact point-to-triangle
  distance (:func:`vesselfield.metrics.surface_distance_to_zero_level_mm`). A model without a
  zero level inside the grid gets DSC 0 and ASD ``inf``.

Fits run here or in spawned processes with one torch thread each
(:func:`vesselfield.bench.harness.run_tasks`). Results go to ``out_dir``: ``results.csv`` (one row
per fit, rewritten atomically after every fit, so a killed study resumes where it stopped: fits
already there without an error are skipped, failed ones are retried), ``settings.json`` (what
every fit of the folder was run with: :func:`study_settings`; a run with other settings is
refused, so one folder never mixes them), ``summary.md`` (median and IQR per shape and count;
date, machine, torch version, command) and the box plots ``boxplot_dice.png`` and
``boxplot_asd.png`` (:func:`~vesselfield.report.implicit_vessel.figure_robustness_boxplot`).

Shape builders: :func:`shape_from_mesh` (reference by voxelising the mesh),
:func:`shape_vmtk_aorta` (vmtk's final level set < 0), :func:`shape_simvascular_aortoiliac`,
:func:`shape_aaa` (exact SDF of the AAA phantom); :func:`resolve_shapes` turns the command
line's names (``vmtk-aorta``, ``simvascular``, ``aaa:SEED[:SURFACE]``, ``tree:SEED``, mesh files) into shapes;
:func:`shape_branching_tree` is the 31-branch tree phantom.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import time
from functools import partial
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np

from vesselfield.bench import harness
from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid
from vesselfield.io.run_folder import strict_json, write_json
from vesselfield.training.checkpoint import derived_seed  # 31-bit; the sample seeds of results.csv

#: The paper's point counts (Alblas et al. 2022, Fig. 3).
PAPER_COUNTS = (100, 200, 400, 600, 800, 1000)
#: DSC is computed on the reference grid cropped to the reference's box plus this margin (mm).
CROP_MARGIN_MM = 10.0
#: Fewest points per fit the study accepts.
MIN_COUNT = 10
#: Columns of ``results.csv``, in order.
CSV_COLUMNS = ("shape", "n_points", "repeat", "sample_seed", "dice", "asd_mm", "components", "fit_seconds",
               "iterations", "stopped", "preset", "normals", "device", "error")
#: Types of the numeric columns (the others are strings): a row in memory is as it reads back.
_COLUMN_TYPES = {"n_points": int, "repeat": int, "sample_seed": int, "dice": float, "asd_mm": float, "components": int,
                 "fit_seconds": float, "iterations": int}
#: Names :func:`resolve_shapes` knows besides mesh files and ``aaa:SEED[:SURFACE]``.
NAMED_SHAPES = ("vmtk-aorta", "simvascular")
_MESH_SUFFIXES = (".stl", ".ply", ".obj", ".vtp")
#: The study's settings in its output folder (:func:`study_settings`).
SETTINGS_NAME = "settings.json"
#: Settings a resumed study may change: more point counts or repeats (the folder keeps the union
#: of the counts and the largest number of repeats), and any number of worker processes.
GROWING_SETTINGS = ("counts", "repeats", "workers")


class StudyShape(NamedTuple):
    """One shape of the study.

    Attributes:
        name: label in the tables and plots.
        mesh: closed ``trimesh.Trimesh``, world LPS mm: the surface the points are drawn on.
        reference: bool (X, Y, Z) occupancy on ``grid``: what DSC compares against.
        grid: the reference's grid.
    """

    name: str
    mesh: object
    reference: np.ndarray
    grid: VolumeGrid


# ================================================================================ shapes
def _box_grid(lo: np.ndarray, hi: np.ndarray, spacing_mm: float, margin_mm: float) -> VolumeGrid:
    # Reference volumes are voxelised from meshes and evaluated once per fit: capped below a fit's grid.
    from vesselfield.methods.implicit_vessel import grid_over_box

    return grid_over_box(np.stack([lo, hi]), spacing_mm, margin_mm, max_voxels=400 ** 3)


def shape_from_mesh(name: str, mesh, spacing_mm: float = 1.0, margin_mm: float | None = None) -> StudyShape:
    """A shape whose reference is the closed ``mesh`` voxelised on an isotropic grid.

    The grid covers the mesh's box plus ``margin_mm`` (default 3 voxels); a voxel is inside when
    more than half of it is (partial-volume occupancy by ray casting,
    :func:`vesselfield.meshing.voxelize_mesh`, 3 x 3 rays per voxel column).
    """
    from vesselfield.meshing.occupancy import voxelize_mesh

    if not (hasattr(mesh, "vertices") and hasattr(mesh, "faces")) or len(mesh.faces) == 0:
        raise VesselfieldError(f"shape {name!r}: need a triangle mesh with faces")
    if not mesh.is_watertight:
        raise VesselfieldError(f"shape {name!r}: the mesh is not closed (watertight), so it has no inside to voxelise")
    margin = 3 * float(spacing_mm) if margin_mm is None else float(margin_mm)
    lo, hi = np.asarray(mesh.bounds, dtype=np.float64)
    grid = _box_grid(lo, hi, spacing_mm, margin)
    return StudyShape(str(name), mesh, voxelize_mesh(mesh, grid) > 0.5, grid)


def shape_vmtk_aorta() -> StudyShape:
    """vmtk's abdominal aorta: ``aorta-surface.stl`` (read as RAS) and ``aorta-final-levelset.mha`` < 0.

    The level set's grid is 0.879 x 0.879 x 1.5 mm; every vertex of the surface lies on its zero
    level (data/samples/SOURCES.md).
    """
    from vesselfield.io import load_mesh, load_volume, sample_path

    mesh = load_mesh(sample_path("vmtk_aorta", "aorta-surface.stl"), frame="RAS")
    level, grid = load_volume(sample_path("vmtk_aorta", "aorta-final-levelset.mha"), what="level set")
    return StudyShape("vmtk-aorta", mesh, np.asarray(level) < 0, grid)


def shape_simvascular_aortoiliac(spacing_mm: float = 1.0) -> StudyShape:
    """SimVascular's aorto-iliac demo model (cm -> mm), reference by voxelising it (:func:`shape_from_mesh`)."""
    from vesselfield.io import load_mesh, sample_path

    mesh = load_mesh(sample_path("simvascular_aortoiliac", "data_DemoProject_Models_demo.vtp"), scale_to_mm=10.0)
    return shape_from_mesh("simvascular", mesh, spacing_mm)


def shape_aaa(seed: int = 0, surface: str = "wall", spacing_mm: float = 1.0) -> StudyShape:
    """An AAA phantom surface: reference = exact SDF < 0 on the phantom's grid; mesh = marching
    cubes of the exact SDF on a grid twice as fine (so the sampled points lie within a few
    hundredths of a mm of the true surface)."""
    from vesselfield.meshing.marching_cubes import mesh_from_volume
    from vesselfield.phantoms.aaa import AAAPhantom

    phantom = AAAPhantom(int(seed))
    grid = phantom.default_grid(spacing_mm)
    reference = phantom.sdf_volume(grid, surface) < 0
    fine = phantom.default_grid(spacing_mm / 2)
    mesh = mesh_from_volume(phantom.sdf_volume(fine, surface), fine, 0.0, inside="below")
    name = f"aaa:{int(seed)}" + ("" if surface == "wall" else f":{surface}")
    return StudyShape(name, mesh, reference, grid)


def shape_branching_tree(seed: int = 0, spacing_mm: float = 1.0) -> StudyShape:
    """A branching tree phantom (:func:`vesselfield.phantoms.branching.branching_tree`: 31 branches,
    16 outlets, radii 4 to 1.6 mm): reference = exact SDF < 0 on an isotropic grid; mesh = marching
    cubes of the exact SDF on a grid twice as fine."""
    from vesselfield.meshing.marching_cubes import mesh_from_volume
    from vesselfield.phantoms.branching import branching_tree
    from vesselfield.phantoms.coronary import TreePhantom

    phantom = TreePhantom(branching_tree(int(seed)))
    grid = phantom.default_grid(spacing_mm)
    reference = phantom.sdf_volume(grid) < 0
    fine = phantom.default_grid(spacing_mm / 2)
    mesh = mesh_from_volume(phantom.sdf_volume(fine), fine, 0.0, inside="below")
    return StudyShape(f"tree:{int(seed)}", mesh, reference, grid)


def check_shape_specs(specs: Sequence[str]) -> list[str]:
    """The shape names of the command line, checked without loading anything (one-line errors)."""
    from vesselfield.phantoms.aaa import SURFACE_NAMES

    specs = [str(s) for s in specs]
    if not specs:
        raise VesselfieldError("no shapes: name at least one (vmtk-aorta, simvascular, aaa:SEED, tree:SEED, "
                               "or a mesh file)")
    for spec in specs:
        if spec in NAMED_SHAPES:
            continue
        if spec.startswith("aaa:"):
            parts = spec.split(":")
            if (len(parts) not in (2, 3) or not parts[1].isdigit()
                    or (len(parts) == 3 and parts[2] not in SURFACE_NAMES)):
                raise VesselfieldError(f"bad AAA shape {spec!r}: use aaa:SEED or aaa:SEED:SURFACE "
                                       f"(SURFACE one of {', '.join(SURFACE_NAMES)})")
            continue
        if spec.startswith("tree:"):
            if not spec[5:].isdigit():
                raise VesselfieldError(f"bad tree shape {spec!r}: use tree:SEED")
            continue
        if Path(spec).suffix.lower() in _MESH_SUFFIXES:
            if not Path(spec).is_file():
                raise VesselfieldError(f"mesh file {spec} does not exist")
            continue
        raise VesselfieldError(f"unknown shape {spec!r}: use {', '.join(NAMED_SHAPES)}, aaa:SEED[:SURFACE], tree:SEED "
                               f"or a mesh file ({', '.join(_MESH_SUFFIXES)})")
    if len(set(specs)) != len(specs):
        raise VesselfieldError("a shape is named twice")
    return specs


def resolve_shapes(specs: Sequence[str], *, spacing_mm: float = 1.0, frame: str = "LPS",
                   scale_to_mm: float = 1.0) -> list[StudyShape]:
    """:class:`StudyShape` objects for command-line names (see :func:`check_shape_specs`).

    Mesh files are read in ``frame`` with ``scale_to_mm`` and voxelised at ``spacing_mm``
    (:func:`shape_from_mesh`), named by their file stem; ``aaa:SEED[:SURFACE]``, ``tree:SEED`` and
    ``simvascular`` use ``spacing_mm`` too; ``vmtk-aorta`` keeps its level set's grid.
    """
    from vesselfield.io import load_mesh

    shapes = []
    for spec in check_shape_specs(specs):
        if spec == "vmtk-aorta":
            shapes.append(shape_vmtk_aorta())
        elif spec == "simvascular":
            shapes.append(shape_simvascular_aortoiliac(spacing_mm))
        elif spec.startswith("aaa:"):
            parts = spec.split(":")
            shapes.append(shape_aaa(int(parts[1]), parts[2] if len(parts) == 3 else "wall", spacing_mm))
        elif spec.startswith("tree:"):
            shapes.append(shape_branching_tree(int(spec[5:]), spacing_mm))
        else:
            shapes.append(shape_from_mesh(Path(spec).stem, load_mesh(spec, frame=frame, scale_to_mm=scale_to_mm),
                                          spacing_mm))
    return shapes


def _as_shape(shape) -> StudyShape:
    try:
        name, mesh, reference, grid = shape
    except (TypeError, ValueError):
        raise VesselfieldError("a shape is (name, mesh, reference occupancy, VolumeGrid)") from None
    if not isinstance(grid, VolumeGrid):
        raise VesselfieldError(f"shape {name!r}: the reference's grid must be a VolumeGrid, got {type(grid).__name__}")
    reference = np.asarray(reference).astype(bool)
    grid.check_array(reference, f"reference of shape {name!r}")
    if not reference.any():
        raise VesselfieldError(f"shape {name!r}: the reference volume is empty")
    return crop_to_reference(StudyShape(str(name), mesh, reference, grid))


def crop_to_reference(shape: StudyShape, margin_mm: float = CROP_MARGIN_MM) -> StudyShape:
    """The shape with its reference and grid cropped to the reference's box plus ``margin_mm``.

    Evaluating a model on the whole of a large image grid (vmtk's level set: 2.1 M voxels, the
    aorta in 4 % of them) costs more than a fit on a CPU; predicted inside voxels farther than
    ``margin_mm`` from the reference are then not counted (a model whose zero level leaves that
    box scores a higher DSC than it should).
    """
    idx = np.argwhere(shape.reference)
    pad = np.ceil(float(margin_mm) / shape.grid.spacing).astype(int)
    lo = np.maximum(idx.min(axis=0) - pad, 0)
    hi = np.minimum(idx.max(axis=0) + pad + 1, shape.grid.shape)
    grid = VolumeGrid(tuple(int(v) for v in hi - lo), shape.grid.spacing_mm,
                      tuple(shape.grid.origin + lo * shape.grid.spacing))
    return StudyShape(shape.name, shape.mesh, shape.reference[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], grid)


# ============================================================================== one fit
def evaluate_model(model, shape: StudyShape, held_out_mm: np.ndarray, mesh_grid: VolumeGrid | None = None) -> dict:
    """``{"dice", "asd_mm", "components"}`` of a fitted model against a shape (see the module docstring).

    ``components``: 26-connected pieces of ``SDF < 0`` on the reference grid (1 for one closed
    surface; a tree that falls apart or floating fragments give more).
    ``mesh_grid``: grid of the marching-cubes zero level for the ASD (default: the reference grid).
    """
    from scipy import ndimage

    from vesselfield.metrics import dice, surface_distance_to_zero_level_mm

    sdf = model.sdf_volume(shape.grid)
    result = {"dice": float(dice(sdf < 0, shape.reference)),
              "components": int(ndimage.label(sdf < 0, structure=np.ones((3, 3, 3)))[1])}
    grid = shape.grid if mesh_grid is None else mesh_grid
    sdf_for_mesh = sdf if mesh_grid is None else model.sdf_volume(mesh_grid)
    result["asd_mm"] = float(np.mean(surface_distance_to_zero_level_mm(sdf_for_mesh, grid, held_out_mm)))
    return result


def _fit_one(shape: StudyShape, count: int, repeat: int, *, seed: int, n_held_out: int, config,
             device: str, mesh_grid: VolumeGrid | None, fit: Callable, normals: bool = False) -> dict:
    from vesselfield.methods.implicit_vessel import sample_mesh_surface
    from vesselfield.metrics import sample_surface_points

    sample_seed = derived_seed(seed, count, repeat)
    row = {"shape": shape.name, "n_points": int(count), "repeat": int(repeat), "sample_seed": sample_seed,
           "preset": config.preset, "normals": "yes" if normals else "no", "device": device, "error": ""}
    try:
        points, point_normals = sample_mesh_surface(shape.mesh, int(count), seed=sample_seed)
        held_out = sample_surface_points(shape.mesh.vertices, shape.mesh.faces, int(n_held_out),
                                         seed=derived_seed(seed, count, repeat, 1))
        result = fit(points, normals=point_normals if normals else None,
                     config=dataclasses.replace(config, seed=sample_seed), device=device)
        row.update(fit_seconds=float(result.seconds), iterations=int(result.iterations), stopped=str(result.stopped))
        row.update(evaluate_model(result.model, shape, held_out, mesh_grid))
    except VesselfieldError as exc:
        row.update(dice=math.nan, asd_mm=math.nan, components=None, error=str(exc).splitlines()[0])
    return _as_read_back(row)


class _Fit(NamedTuple):
    """One fit of the study: (shape, count, repeat) and the grid of its ASD mesh."""

    shape: StudyShape
    count: int
    repeat: int
    mesh_grid: VolumeGrid | None


def _fit_task(task: _Fit, **kwargs) -> dict:
    return _fit_one(task.shape, task.count, task.repeat, mesh_grid=task.mesh_grid, **kwargs)


# ============================================================================ results files
def _as_read_back(row: dict) -> dict:
    """The row as ``results.csv`` gives it back: every column, numbers typed (None when empty,
    NaN as NaN), the other columns strings ("" when empty)."""
    out = {}
    for key in CSV_COLUMNS:
        value = row.get(key)
        if key in _COLUMN_TYPES:
            out[key] = None if value in (None, "") else _COLUMN_TYPES[key](value)
        else:
            out[key] = "" if value is None else str(value)
    return out


def read_results(path) -> list[dict]:
    """Rows of a study's ``results.csv`` (``[]`` when there is none), typed as
    :func:`run_robustness_study` returns them."""
    return [_as_read_back(r) for r in harness.read_csv_rows(path)]


def _key(row: dict) -> tuple[str, int, int]:
    return str(row["shape"]), int(row["n_points"]), int(row["repeat"])


def _floats(rows: Sequence[dict], column: str) -> np.ndarray:
    return np.asarray([math.nan if r.get(column) is None else float(r[column]) for r in rows], dtype=np.float64)


def summary_table(rows: Sequence[dict]) -> str:
    """Markdown table: per shape and count, n fits, median [Q1, Q3] of DSC and ASD (mm), median fit seconds."""
    lines = ["| shape | points | fits | DSC median [Q1, Q3] | ASD mm median [Q1, Q3] | one piece | fit s (median) |",
             "| --- | ---: | ---: | --- | --- | ---: | ---: |"]
    shapes = list(dict.fromkeys(str(r["shape"]) for r in rows))
    for shape in shapes:
        mine = [r for r in rows if str(r["shape"]) == shape]
        for count in sorted({int(r["n_points"]) for r in mine}):
            group = [r for r in mine if int(r["n_points"]) == count]
            seconds = _floats(group, "fit_seconds")
            seconds = seconds[~np.isnan(seconds)]
            dsc, asd = harness.format_median_iqr(_floats(group, "dice"), 3), harness.format_median_iqr(
                _floats(group, "asd_mm"), 2)
            pieces = [r.get("components") for r in group if r.get("components") is not None]
            one = f"{sum(int(p) == 1 for p in pieces)}/{len(pieces)}" if pieces else "n/a"
            lines.append(f"| {shape} | {count} | {len(group)} | {dsc} | {asd} | {one} | "
                         f"{(f'{np.median(seconds):.0f}' if len(seconds) else 'n/a')} |")
    return "\n".join(lines)


def write_summary(rows: Sequence[dict], out_dir, *, command: str, machine: str, settings: str) -> Path:
    """``summary.md``: the table of :func:`summary_table` with date, machine, settings and command."""
    from vesselfield.io.atomic import write_text_atomic

    failed = [r for r in rows if r.get("error")]
    text = "\n".join([
        "# Robustness to sparsity (Alblas et al., STACOM 2022, Fig. 3)",
        "",
        f"- date: {datetime.datetime.now().isoformat(timespec='minutes')}",
        f"- machine: {machine}",
        f"- settings: {settings}",
        f"- command: `{command}`",
        "",
        summary_table(rows),
        "",
        "DSC: model SDF < 0 against the reference occupancy on the reference grid. ASD: mean distance (mm) "
        "from held-out surface points to the marching-cubes zero level of the model's SDF. "
        "Median [first quartile, third quartile] over the repeats; fit s: optimisation wall time."
        + (f" {len(failed)} fit(s) failed (error column of results.csv)." if failed else ""),
        "",
    ])
    path = Path(out_dir) / "summary.md"
    write_text_atomic(path, text)
    return path


def _default_command(shapes, counts, repeats, out_dir, preset, iterations, workers, seed, normals,
                     n_held_out, device, config_overrides=None) -> str:
    """The ``vesselfield study robustness`` command with these settings (flags as the CLI spells them)."""
    from vesselfield.config import format_value
    from vesselfield.io.run_folder import reproducing_command

    words = ["study", "robustness", "--shapes", *[s.name for s in shapes],
             "--counts", *[str(c) for c in counts], "--repeats", str(repeats), "--out", str(out_dir),
             "--preset", preset, "--seed", str(seed), "--n-held-out", str(n_held_out), "--device", device]
    words += ["--normals"] if normals else []
    words += ["--iterations", str(iterations)] if iterations is not None else []
    words += ["--workers", str(workers)] if workers != 1 else []
    for name, value in (config_overrides or {}).items():
        words += ["--set", f"{name}={format_value(value)}"]
    return reproducing_command(words)


# ============================================================================== settings
def study_settings(config, *, seed: int, n_held_out: int, spacing_mm: float | None, normals: bool,
                   counts: Sequence[int], repeats: int, workers: int) -> dict:
    """What ``settings.json`` records: everything that decides a fit's result, and the study's size.

    ``config`` is the fit's :class:`~vesselfield.methods.implicit_vessel.ImplicitVesselConfig`
    (all its fields; each fit replaces its ``seed`` by the sample seed); ``seed`` the study's base
    seed, ``n_held_out`` the ASD's held-out points, ``spacing_mm`` the ASD mesh grid (None: the
    reference grid), ``normals`` whether the mesh normals are fitted; ``counts``, ``repeats`` and
    ``workers`` (:data:`GROWING_SETTINGS`) may differ on resume.
    """
    from vesselfield.config import config_to_dict

    return {"config": config_to_dict(config), "seed": int(seed), "n_held_out": int(n_held_out),
            "spacing_mm": None if spacing_mm is None else float(spacing_mm), "normals": bool(normals),
            "counts": sorted(int(c) for c in counts), "repeats": int(repeats), "workers": int(workers)}


def _setting_differences(old: dict, new: dict) -> list[str]:
    """``"name old -> new"`` for each setting of ``new`` that ``old`` records with another value
    (settings ``old`` does not record, e.g. a config field added since, are not compared)."""
    out = []
    for key, value in new.items():
        if key in GROWING_SETTINGS or key not in old:
            continue
        if key == "config":
            saved = old["config"] if isinstance(old["config"], dict) else {}
            out += [f"{'config seed' if k == 'seed' else k} {saved[k]!r} -> {v!r}" for k, v in value.items()
                    if k in saved and saved[k] != v]
        elif old[key] != value:
            out.append(f"{key} {old[key]!r} -> {value!r}")
    return out


def resumed_settings(path, settings: dict) -> dict:
    """The settings to record in a folder whose ``settings.json`` is ``path`` (absent: ``settings``).

    Returns ``settings`` with the counts made the union of the recorded and the new ones and the
    repeats the larger number.

    Raises:
        VesselfieldError: the file is not readable JSON, or it records other settings (the first
            differences are named): an earlier run's fits would be mixed with this run's.
    """
    import json

    path = Path(path)
    if not path.is_file():
        return settings
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise VesselfieldError(f"{path} is not readable JSON ({type(exc).__name__}): fix or remove it") from None
    if not isinstance(old, dict):
        raise VesselfieldError(f"{path} does not hold a study's settings")
    # Compare what would be written (strict JSON: tuples as lists, NaN as null) with what was.
    new = json.loads(strict_json(settings))
    differences = _setting_differences(old, new)
    if differences:
        raise VesselfieldError(f"{path.parent} holds a study run with other settings ({', '.join(differences[:3])}"
                               f"{', ...' if len(differences) > 3 else ''}): resume with the same settings or use "
                               "another output folder")
    counts = old.get("counts") if isinstance(old.get("counts"), list) else []
    repeats = old.get("repeats") if isinstance(old.get("repeats"), int) else 0
    return {**new, "counts": sorted({int(c) for c in counts} | set(new["counts"])),
            "repeats": max(int(repeats), new["repeats"])}


# ================================================================================= study
def check_study_args(counts=None, repeats=None, n_held_out=None, workers=None) -> list[int] | None:
    """The distinct point counts, ascending; one-line errors for counts < 10, repeats < 1, ...

    An argument left at None is not checked (the command line checks what it was given before
    it loads any shape; :func:`run_robustness_study` checks everything).
    """
    if counts is not None:
        counts = [int(c) for c in counts]
        if not counts:
            raise VesselfieldError("no point counts given")
        if min(counts) < MIN_COUNT:
            raise VesselfieldError(f"point counts must be at least {MIN_COUNT}, got {min(counts)}")
        counts = sorted(dict.fromkeys(counts))
    for name, value in (("repeats", repeats), ("n_held_out", n_held_out), ("workers", workers)):
        if value is not None and int(value) < 1:
            raise VesselfieldError(f"{name} must be at least 1, got {value}")
    return counts


def run_robustness_study(
    shapes,
    *,
    counts: Sequence[int] = PAPER_COUNTS,
    repeats: int = 20,
    preset: str | None = None,
    iterations: int | None = None,
    n_held_out: int = 2000,
    spacing_mm: float | None = None,
    out_dir,
    workers: int = 1,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    command: str | None = None,
    config_overrides: dict | None = None,
    fit: Callable | None = None,
    normals: bool = False,
) -> list[dict]:
    """Fit ``repeats`` models per shape and point count; DSC, ASD and fit time per fit.

    Args:
        shapes: :class:`StudyShape` objects or ``(name, mesh, reference, grid)`` tuples.
        counts: points per fit (each >= 10); the paper's 100-1000 by default.
        repeats: fits per (shape, count), each with fresh points and initialisation (paper: 20).
        preset: :func:`~vesselfield.methods.implicit_vessel.inr_config` preset, ``fast`` or ``paper``
            (None: the config's default).
        iterations: override the preset's iterations.
        n_held_out: held-out surface points per fit for the ASD.
        spacing_mm: isotropic voxel size of the grid on which the predicted SDF is meshed for the
            ASD (default: the reference grid).
        out_dir: folder for ``results.csv``, ``settings.json``, ``summary.md`` and the box plots;
            a folder holding a study run with other settings (:func:`study_settings`; all but
            the counts, repeats and workers) is refused.
        workers: fits run in parallel in this many processes (one torch thread each).
        seed: base seed; fit (shape, count, repeat) samples with ``derived_seed(seed, count, repeat)``.
        device: ``cpu``, ``cuda`` or ``auto``.
        progress: print one line per fit.
        command: the command line recorded in ``summary.md`` (default: the equivalent CLI call).
        config_overrides: further :class:`~vesselfield.methods.implicit_vessel.ImplicitVesselConfig`
            settings (e.g. tiny networks in tests); recorded in ``summary.md`` and, as ``--set``
            words, in its command.
        fit: the fitting function (default :func:`~vesselfield.methods.implicit_vessel.fit_implicit_sdf`).
        normals: also fit the mesh faces' outward normals at the sampled points (IGR normal term);
            the paper fits bare points (False).

    Returns:
        All rows of ``results.csv`` (with earlier runs' rows), in shape, count, repeat order; numbers
        typed as :func:`read_results` gives them (the rows of this run are passed on in memory,
        not read back).
    """
    from vesselfield.methods.implicit_vessel import fit_implicit_sdf, inr_config

    counts = check_study_args(counts, repeats, n_held_out, workers)
    shapes = [_as_shape(s) for s in shapes]
    if not shapes:
        raise VesselfieldError("no shapes to study")
    if len({s.name for s in shapes}) != len(shapes):
        raise VesselfieldError("two shapes have the same name")
    overrides = dict(config_overrides or {})
    if iterations is not None:
        overrides["iterations"] = int(iterations)
    config = inr_config(preset, **overrides)
    fit = fit or fit_implicit_sdf
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "results.csv"
    settings_path = out / SETTINGS_NAME
    settings = resumed_settings(settings_path, study_settings(
        config, seed=seed, n_held_out=n_held_out, spacing_mm=spacing_mm, normals=normals, counts=counts,
        repeats=repeats, workers=workers))
    rows = read_results(csv_path)  # an earlier run's, to resume
    # Folders written before settings.json: at least the preset and the normals must match.
    wanted = {"preset": config.preset, "normals": "yes" if normals else "no"}
    for row in rows:
        for column, value in wanted.items():
            if row[column] not in ("", value):
                raise VesselfieldError(f"{csv_path} holds fits with {column} {row[column]!r}, not {value!r}: "
                                       "resume with the same settings or use another output folder")
    write_json(settings_path, settings)
    # Rows are kept in shape order (earlier runs' shapes first, then this run's, as given), count
    # and repeat: a study extended by another run keeps its table and figure order.
    shape_order = list(dict.fromkeys([r["shape"] for r in rows] + [s.name for s in shapes]))
    finished = {_key(r) for r in rows if not r["error"]}
    # Repeat by repeat, so that a study stopped early has as many repeats of every shape and count.
    todo = [(s, c, r) for r in range(int(repeats)) for s in shapes for c in counts if (s.name, c, r) not in finished]
    retried = {(s.name, c, r) for s, c, r in todo}
    rows = [r for r in rows if _key(r) not in retried]  # failed fits of an earlier run are redone

    def mesh_grid(shape: StudyShape) -> VolumeGrid | None:
        if spacing_mm is None:
            return None
        lo, hi = shape.grid.bounds_mm
        return _box_grid(np.asarray(lo), np.asarray(hi), spacing_mm, 0.0)

    grids = {s.name: mesh_grid(s) for s in shapes}
    tasks = [_Fit(s, c, r, grids[s.name]) for s, c, r in todo]
    start = time.time()

    def record(i: int, result: harness.TaskResult) -> None:
        row = result.value
        if result.error:  # the fit's process died, or an error other than a VesselfieldError
            shape, count, repeat, _ = tasks[i]
            row = _as_read_back({"shape": shape.name, "n_points": count, "repeat": repeat,
                                 "sample_seed": derived_seed(seed, count, repeat), "dice": math.nan,
                                 "asd_mm": math.nan, "preset": config.preset, "normals": wanted["normals"],
                                 "device": device, "error": result.error})
        rows.append(row)
        harness.write_csv(csv_path, rows, CSV_COLUMNS)
        if progress:
            dsc, asd, secs = (math.nan if row[k] is None else row[k] for k in ("dice", "asd_mm", "fit_seconds"))
            print(f"[{len(rows) - len(finished):>3}/{len(todo)}] {row['shape']} n={row['n_points']} "
                  f"repeat={row['repeat']}: DSC {dsc:.4f}, ASD {asd:.3f} mm, fit {secs:.0f} s "
                  f"({time.time() - start:.0f} s elapsed){' ' + row['error'] if row['error'] else ''}", flush=True)

    # One torch thread per process: several multi-threaded fits on few cores thrash.
    harness.run_tasks(partial(_fit_task, seed=int(seed), n_held_out=int(n_held_out), config=config, device=device,
                              fit=fit, normals=bool(normals)),
                      tasks, workers=int(workers), threads_per_worker=1 if int(workers) > 1 else None,
                      on_done=record)

    rows.sort(key=lambda r: (shape_order.index(r["shape"]), *_key(r)[1:]))
    harness.write_csv(csv_path, rows, CSV_COLUMNS)
    settings = (f"preset {config.preset}, {config.iterations} iterations, counts {', '.join(map(str, counts))}, "
                f"{int(repeats)} repeat(s), {int(n_held_out)} held-out points, seed {int(seed)}, "
                f"{int(workers)} worker(s), {'with the mesh normals' if normals else 'no normals'}"
                + "".join(f", {k}={v}" for k, v in (config_overrides or {}).items()))
    command = command or _default_command(shapes, counts, repeats, out, config.preset, iterations, workers, seed,
                                          normals, n_held_out, device, config_overrides)
    write_study_report(rows, out, settings=settings, device=device, command=command)
    return rows


def write_study_report(rows: Sequence[dict], out_dir, *, settings: str, command: str, device: str = "cpu") -> None:
    """``summary.md``, ``boxplot_dice.png`` and ``boxplot_asd.png`` in ``out_dir`` from the study's
    rows (those :func:`run_robustness_study` returns, or :func:`read_results` of a study that was
    stopped early)."""
    from vesselfield.report.implicit_vessel import figure_robustness_boxplot

    out = Path(out_dir)
    if not rows:
        raise VesselfieldError(f"no results to report in {out}")
    write_summary(rows, out, machine=harness.machine_description(device), settings=settings, command=command)
    figure_robustness_boxplot(rows, out / "boxplot_dice.png", metric="dice")
    figure_robustness_boxplot(rows, out / "boxplot_asd.png", metric="asd_mm")
