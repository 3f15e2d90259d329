"""σ of L_gauss and β of L_sur (not given in the paper): VesselSDF trained with each value on one dataset.

One-at-a-time sweep around the defaults (σ = 1 mm, β = 0.5/mm): for each value, ``vesselfield
benchmark ct --methods vessel-sdf --set gauss_sigma_mm=... surface_beta_per_mm=...`` on the same
split, then one markdown row per value (Dice, HD95, floating fragments on the test cases, the
training's final validation Dice). Prints the date, the machine and the command.

    python benchmarks/ct_sigma_beta.py --data ct-quality/data/phantoms_every4 --out sweep
        [--sigmas 0.5 1 2] [--betas 0.25 0.5 1 2] [--epochs 100]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import sys
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    ap.add_argument("--betas", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0])
    ap.add_argument("--default-sigma", type=float, default=1.0)
    ap.add_argument("--default-beta", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--time-limit", type=float, default=None)
    args = ap.parse_args()

    from vesselfield.cli import main as vesselfield

    print(f"date: {datetime.date.today()}; machine: {platform.platform()}; "
          f"command: python benchmarks/ct_sigma_beta.py {shlex.join(sys.argv[1:])}\n")
    runs = [(s, args.default_beta) for s in args.sigmas] + [(args.default_sigma, b) for b in args.betas
                                                           if b != args.default_beta]
    print("| σ (mm) | β (1/mm) | Dice ↑ | HD95 (mm) ↓ | CD (mm) ↓ | floating fragments ↓ |")
    print("|---:|---:|---:|---:|---:|---:|")
    for sigma, beta in runs:
        out = args.out / f"sigma{sigma:g}_beta{beta:g}"
        words = ["benchmark", "ct", "--data", str(args.data), "--methods", "vessel-sdf", "--out", str(out),
                 "--epochs", str(args.epochs), "--quiet", "--no-figures", "--set", f"gauss_sigma_mm={sigma}",
                 f"surface_beta_per_mm={beta}"]
        if args.time_limit:
            words += ["--time-limit", str(args.time_limit)]
        code = vesselfield(words)
        if code != 0:
            print(f"| {sigma:g} | {beta:g} | failed ({code}) | | | |")
            continue
        means = json.loads((out / "summary.json").read_text())["means"]["vessel-sdf"]

        def cell(key, digits=3):
            m = means.get(key, {})
            return "n/a" if m.get("mean") is None else f"{m['mean']:.{digits}f} ± {m.get('std', 0):.{digits}f}"

        print(f"| {sigma:g} | {beta:g} | {cell('dice')} | {cell('hausdorff95_mm', 2)} | {cell('chamfer_mm', 3)} | "
              f"{cell('floating_fragments', 1)} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
