"""Time-to-quality of a two-view reconstruction: clDice and Dice against optimisation seconds.

Simulates the two default views of coronary phantoms (or reads ground-truth volumes), runs one
method and preset, and evaluates the reconstruction every ``--every`` iterations. The seconds
reported exclude the evaluations themselves (set-up, i.e. visual hull and projection matrices,
is reported separately and is included in the "total" column).

    python benchmarks/time_to_quality_xray.py --cases left:1 right:1 --method sdf-car --preset cpu \\
        --iterations 3000 --every 250 [--masks] [--set eikonal_weight=2e-3 ...] [--device cpu]

Prints a markdown table per case and a mean table over cases.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time

import numpy as np
import torch

from vesselfield.config import build_config
from vesselfield.geometry import default_geometry
from vesselfield.methods.sdf_car import SdfCarConfig, reconstruct_xray
from vesselfield.metrics import cldice, dice
from vesselfield.phantoms import TreePhantom, coronary_tree
from vesselfield.render import project_views, projection_mask


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=["left:1", "right:1"], help="side:seed phantoms")
    ap.add_argument("--method", default="sdf-car")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--every", type=int, default=250)
    ap.add_argument("--masks", action="store_true", help="binary masks instead of line integrals")
    ap.add_argument("--set", nargs="*", default=[], help="SdfCarConfig fields, FIELD=VALUE (as the CLI's --set)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    config = build_config(SdfCarConfig, {"method": args.method, "preset": args.preset,
                                         "iterations": args.iterations}, args.set)
    geometry = default_geometry()
    grid = geometry.volume
    print(f"Date: {datetime.date.today()}; machine: {platform.machine()} {platform.processor() or ''}, "
          f"{torch.get_num_threads()} torch threads, device {args.device}; command: `python "
          f"benchmarks/time_to_quality_xray.py {' '.join(__import__('sys').argv[1:])}`\n")
    curves = []
    for spec in args.cases:
        side, seed = spec.split(":")
        truth = TreePhantom(coronary_tree(side, seed=int(seed))).occupancy(grid)
        gt = truth >= 0.5
        views = [v.numpy() for v in project_views(torch.from_numpy(truth), geometry)]
        if args.masks:
            views = [projection_mask(torch.from_numpy(v)).numpy() for v in views]
        rows = []
        clock = {"t0": None, "excluded": 0.0}

        def monitor(iteration, occupancy):
            t = time.perf_counter()
            pred = occupancy >= 0.5
            rows.append((iteration, t - clock["t0"] - clock["excluded"], dice(pred, gt), cldice(pred, gt)))
            clock["excluded"] += time.perf_counter() - t

        clock["t0"] = time.perf_counter()
        result = reconstruct_xray(geometry, views, kind="mask" if args.masks else "line_integral", config=config,
                                  device=args.device, progress=False, monitor=monitor, monitor_every=args.every)
        setup = result.setup_seconds
        # The monitor's clock started before set-up: subtract it so "seconds" is optimisation only.
        rows = [(i, s - setup, d, c) for i, s, d, c in rows]
        print(f"### {side} tree, seed {seed} ({'masks' if args.masks else 'line integrals'}; {args.method}, "
              f"preset {args.preset}); set-up {setup:.1f} s, hull {result.hull_voxels} voxels\n")
        print("| iteration | optimisation s | total s | Dice | clDice |\n|---:|---:|---:|---:|---:|")
        for i, s, d, c in rows:
            print(f"| {i} | {s:.1f} | {s + setup:.1f} | {d:.3f} | {c:.3f} |")
        print(flush=True)
        curves.append(rows)
    if len(curves) > 1 and len({len(c) for c in curves}) == 1:
        print(f"### mean over {len(curves)} cases\n")
        print("| iteration | optimisation s | Dice | clDice |\n|---:|---:|---:|---:|")
        arr = np.array([[r[1:] for r in c] for c in curves])
        mean = arr.mean(axis=0)
        for (i, *_), (s, d, c) in zip(curves[0], mean):
            print(f"| {i} | {s:.1f} | {d:.3f} | {c:.3f} |")


if __name__ == "__main__":
    main()
