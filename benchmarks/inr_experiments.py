"""Experiments with implicit neural vessel models (Alblas et al., STACOM 2022) beyond the robustness study.

Three subcommands, each writing ``results.json`` and ``results.md`` (tables as in docs/benchmarks.md)
to ``--out``:

- ``nested``: lumen, thrombus and wall of AAA phantoms, fitted (a) by one network with three
  outputs (innermost first) and the nesting penalty, (b) by the same network without it, (c) by
  three separate networks. Per surface: DSC of SDF < 0 against the exact SDF < 0 on the phantom's
  1 mm grid; nesting: the fraction of uniform samples in the phantom's box where the order
  ``f_lumen >= f_thrombus >= f_wall`` is broken (``nesting_violation_fraction``), by more than 0
  and by more than 0.1 mm. The phantom's thrombus surface coincides with its lumen outside the
  sac, so at tolerance 0 two independently fitted SDFs there break the order about half the time.
- ``blending``: the SimVascular aorto-iliac model cut by two planes into aorta, left and right
  iliac pieces (overlapping by ``--overlap`` mm), each a closed solid (the mesh inside the piece's
  region plus the planar cross-section as a cap), each fitted to surface points by its own network,
  then joined by the smooth union (``vesselfield.csg.union_all``) on one 1 mm world grid (each
  piece evaluated within its box plus 5 mm + k) and meshed. Reported for k = 0 (plain union) and ``--k``: watertight, components,
  DSC against the voxelised model, and the distance (mm) from points on the blended surface to the
  original surface (the union of the pieces), away from the cut planes (> 10 mm) and near them.
- ``presets``: time to DSC of the ``fast`` and ``paper`` presets on one shape with 400 points:
  the fit is continued in stages (checkpoint and resume) and evaluated after each; the ``paper``
  preset is capped by ``--paper-seconds``.
- ``timing``: wall time of whole fits (visibility labels, prior steps and IGR steps) of the
  default config (or ``--set FIELD=VALUE`` overrides) from bare points, one fit at a time with
  ``--threads`` torch threads, with DSC, ASD and components (the issue-14 budget: at most 2
  minutes for 1000 points on 2 CPU cores: ``--threads 2``).

Run with one torch thread per process (``OMP_NUM_THREADS=1``): on the shared 2-core machine,
oversubscribed threads made fits 50 times slower. Example::

    OMP_NUM_THREADS=1 python benchmarks/inr_experiments.py nested --seeds 0 1 2 --out runs/nested
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import sys
from pathlib import Path

import numpy as np

SURFACES = ("lumen", "thrombus", "wall")


def _setup(threads: int) -> str:
    import torch

    torch.set_num_threads(int(threads))
    return (f"{datetime.datetime.now().isoformat(timespec='minutes')}; {platform.platform()}, {os.cpu_count()} CPUs; "
            f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")


def _write(out: Path, name: str, header: str, lines: list[str], data: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    text = "\n".join([f"# {name}", "", f"- {header}", f"- command: `{shlex.join(['python', *sys.argv])}`", "",
                      *lines, ""])
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps(data, indent=1, default=float))
    print(text, flush=True)


# ====================================================================================== nested
def run_nested(args) -> None:
    from vesselfield.bench.robustness import shape_aaa
    from vesselfield.losses.igr import nesting_violation_fraction
    from vesselfield.methods.implicit_vessel import fit_implicit_sdf, inr_config, sample_mesh_surface
    from vesselfield.metrics import dice
    from vesselfield.phantoms.aaa import AAAPhantom

    header = _setup(args.threads)
    overrides = {} if args.iterations is None else {"iterations": args.iterations}
    rows = []
    for seed in args.seeds:
        phantom = AAAPhantom(seed)
        shapes = [shape_aaa(seed, s) for s in SURFACES]
        grid = shapes[0].grid
        points = [sample_mesh_surface(s.mesh, args.n_points, seed=100 * seed + k)[0] for k, s in enumerate(shapes)]
        lo, hi = grid.bounds_mm
        box = np.random.default_rng(seed).uniform(lo, hi, size=(args.n_box, 3)).astype(np.float32)
        exact = phantom.sdfs(box)
        rows.append({"seed": seed, "variant": "exact SDFs", "seconds": 0.0,
                     "violation_0": nesting_violation_fraction(exact, 0.0),
                     "violation_0.1": nesting_violation_fraction(exact, 0.1),
                     **{f"dice_{s}": 1.0 for s in SURFACES}})
        variants = [("joint + nesting", args.nesting_weight), ("joint, no penalty", 0.0), ("separate", None)]
        for name, weight in variants:
            if weight is None:
                results = [fit_implicit_sdf(p, config=inr_config(args.preset, **overrides), device="cpu")
                           for p in points]
                seconds = sum(r.seconds for r in results)
                models = [r.model for r in results]
                sdf_box = np.stack([m.sdf(box) for m in models], axis=1)
                volumes = [m.sdf_volume(grid) for m in models]
            else:
                config = inr_config(args.preset, nesting_weight=weight, **overrides)
                result = fit_implicit_sdf(points, names=list(SURFACES), config=config, device="cpu")
                seconds, model = result.seconds, result.model
                sdf_box = model.sdf(box, "all")
                every = model.sdf(grid.voxel_centers_mm(np.float32), "all")
                volumes = [every[..., k] for k in range(len(SURFACES))]
            row = {"seed": seed, "variant": name, "seconds": seconds,
                   "violation_0": nesting_violation_fraction(sdf_box, 0.0),
                   "violation_0.1": nesting_violation_fraction(sdf_box, 0.1)}
            row.update({f"dice_{s}": dice(v < 0, shape.reference) for s, v, shape in zip(SURFACES, volumes, shapes)})
            rows.append(row)
            print(row, flush=True)
        _nested_report(args, header, rows)


def _nested_report(args, header: str, rows: list[dict]) -> None:
    lines = [f"AAA phantoms, {args.n_points} points per surface (no normals), preset {args.preset}"
             + (f", {args.iterations} iterations" if args.iterations else "") + f", nesting weight {args.nesting_weight}; "
             f"nesting checked at {args.n_box} uniform samples in the phantom's box.", "",
             "| seed | variant | DSC lumen | DSC thrombus | DSC wall | broken nesting (tol 0) | (tol 0.1 mm) | fit s |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['seed']} | {r['variant']} | {r['dice_lumen']:.4f} | {r['dice_thrombus']:.4f} | "
                     f"{r['dice_wall']:.4f} | {100 * r['violation_0']:.2f} % | {100 * r['violation_0.1']:.2f} % | "
                     f"{r['seconds']:.0f} |")
    _write(Path(args.out), "Nested AAA surfaces: joint vs separate networks", header, lines, {"rows": rows})


# ==================================================================================== blending
def _cap_points(mesh, origin, normal, keep, density_per_mm2: float, rng) -> np.ndarray:
    """Points spread uniformly over the cross-section of the closed ``mesh`` by a plane, where ``keep``."""
    from matplotlib.path import Path as PolyPath

    section = mesh.section(plane_origin=origin, plane_normal=normal)
    if section is None:
        return np.zeros((0, 3))
    axis = int(np.argmax(np.abs(normal)))
    uv = [d for d in range(3) if d != axis]
    loops = [np.asarray(loop)[:, uv] for loop in section.discrete]
    allp = np.concatenate(loops)
    lo, hi = allp.min(0), allp.max(0)
    area_box = float(np.prod(hi - lo))
    n = int(rng.poisson(density_per_mm2 * area_box))
    cand = rng.uniform(lo, hi, size=(n, 2))
    crossings = sum(PolyPath(loop).contains_points(cand).astype(int) for loop in loops)
    cand = cand[crossings % 2 == 1]
    pts = np.empty((len(cand), 3))
    pts[:, axis] = origin[axis]
    pts[:, uv[0]], pts[:, uv[1]] = cand[:, 0], cand[:, 1]
    return pts[keep(pts)]


def _sdf_in_box(model, grid, margin_mm: float) -> np.ndarray:
    """The model's SDF (mm) on ``grid`` inside its fitting points' box plus ``margin_mm``; 1e4 outside
    (the piece's solid lies in its box; this skips most of the world grid)."""
    out = np.full(grid.shape, 1e4, dtype=np.float32)
    lo = np.floor((model.bounds_mm[0] - margin_mm - grid.origin) / grid.spacing).astype(int)
    hi = np.ceil((model.bounds_mm[1] + margin_mm - grid.origin) / grid.spacing).astype(int) + 1
    lo, hi = np.maximum(lo, 0), np.minimum(hi, grid.shape)
    axes = [grid.origin[d] + np.arange(lo[d], hi[d]) * grid.spacing[d] for d in range(3)]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).astype(np.float32)
    out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = model.sdf(pts)
    return out


def run_blending(args) -> None:
    from vesselfield.bench.robustness import shape_simvascular_aortoiliac
    from vesselfield.metrics import MeshDistance
    from vesselfield.meshing.marching_cubes import mesh_from_volume, mesh_summary
    from vesselfield.methods.implicit_vessel import fit_implicit_sdf, inr_config
    from vesselfield.csg import union_all
    from vesselfield.metrics import dice
    from vesselfield.metrics.surface import sample_surface_points

    header = _setup(args.threads)
    shape = shape_simvascular_aortoiliac(1.0)
    mesh, grid = shape.mesh, shape.grid
    zc, xc, o = args.z_cut, args.x_cut, args.overlap
    # Aorta above z_cut, iliacs below it, split at x_cut; each region reaches `overlap` mm into its neighbour's.
    regions = {
        "aorta": (lambda p: p[:, 2] > zc - o, [(np.array([0, 0, zc - o]), np.array([0, 0, 1.0]), None)]),
        "iliac (x < cut)": (lambda p: (p[:, 2] < zc + o) & (p[:, 0] < xc + o),
                            [(np.array([0, 0, zc + o]), np.array([0, 0, 1.0]), lambda p: p[:, 0] < xc + o),
                             (np.array([xc + o, 0, 0]), np.array([1.0, 0, 0]), lambda p: p[:, 2] < zc + o)]),
        "iliac (x > cut)": (lambda p: (p[:, 2] < zc + o) & (p[:, 0] > xc - o),
                            [(np.array([0, 0, zc + o]), np.array([0, 0, 1.0]), lambda p: p[:, 0] > xc - o),
                             (np.array([xc - o, 0, 0]), np.array([1.0, 0, 0]), lambda p: p[:, 2] < zc + o)]),
    }
    rng = np.random.default_rng(args.seed)
    dense = sample_surface_points(mesh.vertices, mesh.faces, args.n_points, seed=args.seed)
    density = args.n_points / float(mesh.area)
    overrides = {} if args.iterations is None else {"iterations": args.iterations}
    models, pieces = [], []
    for name, (inside, caps) in regions.items():
        on_mesh = dense[inside(dense)]
        cap = [_cap_points(mesh, origin, normal, keep or (lambda p: np.ones(len(p), bool)), density, rng)
               for origin, normal, keep in caps]
        cap = np.concatenate(cap) if cap else np.zeros((0, 3))
        points = np.concatenate([on_mesh, cap])
        result = fit_implicit_sdf(points, config=inr_config(args.preset, **overrides), device="cpu")
        models.append(result.model)
        pieces.append({"piece": name, "surface_points": len(on_mesh), "cap_points": len(cap),
                       "fit_seconds": result.seconds})
        print(pieces[-1], flush=True)

    truth = MeshDistance(mesh)
    rows = []
    sdfs = [_sdf_in_box(m, grid, 5.0 + float(args.k)) for m in models]
    for k in sorted({0.0, float(args.k)}):
        sdf = union_all(sdfs, k)
        blended = mesh_from_volume(sdf, grid, 0.0, inside="below")
        info = mesh_summary(blended)
        p = sample_surface_points(blended.vertices, blended.faces, args.n_eval, seed=1)
        d = truth(p)
        near = (np.abs(p[:, 2] - zc) < args.near_mm) | ((p[:, 2] < zc + args.near_mm) & (np.abs(p[:, 0] - xc) < args.near_mm))
        rows.append({"k_mm": k, "watertight": info["watertight"], "components": info["components"],
                     "dice": dice(sdf < 0, shape.reference),
                     "away_mean": float(d[~near].mean()), "away_p95": float(np.percentile(d[~near], 95)),
                     "near_mean": float(d[near].mean()), "near_p95": float(np.percentile(d[near], 95)),
                     "near_max": float(d[near].max()), "n_near": int(near.sum()), "n_away": int((~near).sum())})
        print(rows[-1], flush=True)
    lines = [f"SimVascular aorto-iliac model (cm -> mm) cut at z = {zc} mm (aorta | iliacs) and, below it, at "
             f"x = {xc} mm (the two iliacs); pieces overlap by {o} mm and are closed by planar caps. "
             f"{args.n_points} points on the whole surface (uniform by area, no normals) shared out by region, "
             f"plus cap points at the same density; preset {args.preset}"
             + (f", {args.iterations} iterations" if args.iterations else "") + ".", "",
             "| piece | surface points | cap points | fit s |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {r['piece']} | {r['surface_points']} | {r['cap_points']} | {r['fit_seconds']:.0f} |" for r in pieces]
    lines += ["", f"Blended on the 1 mm grid of the voxelised model ({grid.shape}); distance from {args.n_eval} "
              f"points on the blended mesh to the original surface; 'near': within {args.near_mm} mm of a cut plane.", "",
              "| k (mm) | watertight | components | DSC vs model | away: mean / p95 (mm) | near: mean / p95 / max (mm) |",
              "| ---: | --- | ---: | ---: | --- | --- |"]
    lines += [f"| {r['k_mm']:g} | {'yes' if r['watertight'] else 'no'} | {r['components']} | {r['dice']:.4f} | "
              f"{r['away_mean']:.3f} / {r['away_p95']:.3f} | {r['near_mean']:.3f} / {r['near_p95']:.3f} / "
              f"{r['near_max']:.3f} |" for r in rows]
    _write(Path(args.out), "Blending separately fitted pieces", header, lines, {"pieces": pieces, "rows": rows})


# ===================================================================================== presets
def run_presets(args) -> None:
    import tempfile

    from vesselfield.bench.robustness import evaluate_model, resolve_shapes
    from vesselfield.methods.implicit_vessel import fit_implicit_sdf, inr_config, sample_mesh_surface
    from vesselfield.metrics.surface import sample_surface_points

    header = _setup(args.threads)
    shape = resolve_shapes([args.shape])[0]
    points, _ = sample_mesh_surface(shape.mesh, args.n_points, seed=args.seed)
    held_out = sample_surface_points(shape.mesh.vertices, shape.mesh.faces, 2000, seed=args.seed + 1)
    rows = []
    for preset in args.presets:
        base = inr_config(preset)
        with tempfile.TemporaryDirectory() as tmp:
            elapsed, done, stage = 0.0, 0, 0
            cap = args.paper_seconds if preset == "paper" else math.inf
            while done < base.iterations and elapsed < cap:
                if preset == "paper":
                    limit = min(args.paper_stage_seconds * 2 ** stage, cap - elapsed)
                    config = inr_config(preset, time_limit_s=limit)
                else:
                    target = min(base.iterations, args.fast_first * 2 ** stage)
                    config = inr_config(preset, iterations=target)
                result = fit_implicit_sdf(points, config=config, device="cpu", out_dir=tmp, resume=stage > 0)
                elapsed += result.seconds
                done = result.iterations
                metrics = evaluate_model(result.model, shape, held_out)
                rows.append({"preset": preset, "iterations": done, "seconds": elapsed, **metrics})
                print(rows[-1], flush=True)
                stage += 1
    lines = [f"{shape.name}, {args.n_points} points (no normals), DSC on the reference grid, ASD on 2000 held-out "
             f"points; the fit is continued stage by stage (resume) and evaluated after each; paper preset capped "
             f"at {args.paper_seconds:.0f} s.", "",
             "| preset | iterations | fit s (cumulative) | DSC | ASD (mm) |", "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['preset']} | {r['iterations']} | {r['seconds']:.0f} | {r['dice']:.4f} | {r['asd_mm']:.3f} |"
              for r in rows]
    _write(Path(args.out), "Time to DSC: fast vs paper preset", header, lines, {"rows": rows})


def run_timing(args) -> None:
    import time

    from vesselfield.bench.robustness import evaluate_model, resolve_shapes
    from vesselfield.config import build_config
    from vesselfield.methods.implicit_vessel import ImplicitVesselConfig, fit_implicit_sdf, sample_mesh_surface
    from vesselfield.metrics.surface import sample_surface_points

    header = _setup(args.threads)
    rows = []
    for spec in args.shapes:
        shape = resolve_shapes([spec], spacing_mm=0.75 if spec.startswith("tree:") else 1.5)[0]
        for repeat in range(args.repeats):
            points, _ = sample_mesh_surface(shape.mesh, args.n_points, seed=args.seed + repeat)
            held_out = sample_surface_points(shape.mesh.vertices, shape.mesh.faces, 2000, seed=args.seed + 1000 + repeat)
            start = time.perf_counter()
            config = build_config(ImplicitVesselConfig, {"seed": args.seed + repeat}, assignments=args.set)
            result = fit_implicit_sdf(points, config=config, device="cpu")
            total = time.perf_counter() - start
            rows.append({"shape": shape.name, "repeat": repeat, "total_s": total, "loop_s": result.seconds,
                         **evaluate_model(result.model, shape, held_out)})
            print(rows[-1], flush=True)
    lines = [f"{args.n_points} bare points per fit, {args.threads} torch thread(s), one fit at a time; total: the whole "
             "fit_implicit_sdf call (visibility, prior and IGR steps); DSC on the reference grid (tree phantom 0.75 mm, "
             "others 1.5 mm), ASD on 2000 held-out points.", "",
             "| shape | repeat | total s | loop s | DSC | ASD (mm) | components |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['shape']} | {r['repeat']} | {r['total_s']:.1f} | {r['loop_s']:.1f} | {r['dice']:.4f} | "
              f"{r['asd_mm']:.3f} | {r['components']} |" for r in rows]
    _write(Path(args.out), "Fit time of the default config", header, lines, {"rows": rows})


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on the shared 2-core machine)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("nested", help="joint (with/without nesting penalty) vs separate networks on AAA phantoms")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--n-points", type=int, default=1000, help="points per surface")
    p.add_argument("--nesting-weight", type=float, default=1.0)
    p.add_argument("--n-box", type=int, default=200_000, help="uniform samples for the nesting check")
    p.add_argument("--preset", default="fast")
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--out", required=True)
    p.set_defaults(run=run_nested)

    p = sub.add_parser("blending", help="pieces of the SimVascular model fitted separately and blended")
    p.add_argument("--n-points", type=int, default=3000, help="points on the whole surface, shared out by region")
    p.add_argument("--k", type=float, default=2.0, help="smooth-union width in mm")
    p.add_argument("--z-cut", type=float, default=-70.0, help="aorta | iliacs plane z (mm), above the bifurcation")
    p.add_argument("--x-cut", type=float, default=12.0, help="plane x (mm) between the iliacs, below --z-cut")
    p.add_argument("--overlap", type=float, default=5.0, help="mm each piece reaches past a cut")
    p.add_argument("--near-mm", type=float, default=10.0)
    p.add_argument("--n-eval", type=int, default=50_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", default="fast")
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--out", required=True)
    p.set_defaults(run=run_blending)

    p = sub.add_parser("presets", help="time to DSC of the fast and paper presets")
    p.add_argument("--shape", default="vmtk-aorta")
    p.add_argument("--n-points", type=int, default=400)
    p.add_argument("--presets", nargs="+", default=["fast", "paper"])
    p.add_argument("--fast-first", type=int, default=125, help="iterations of the fast preset's first stage (doubled per stage)")
    p.add_argument("--paper-stage-seconds", type=float, default=60.0, help="first stage of the paper preset (doubled per stage)")
    p.add_argument("--paper-seconds", type=float, default=600.0, help="time cap of the paper preset")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(run=run_presets)

    p = sub.add_parser("timing", help="wall time of whole default fits from bare points")
    p.add_argument("--shapes", nargs="+", default=["tree:0", "simvascular"])
    p.add_argument("--n-points", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", nargs="*", default=[], help="FIELD=VALUE overrides of the implicit-vessel config")
    p.add_argument("--out", required=True)
    p.set_defaults(run=run_timing)

    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
