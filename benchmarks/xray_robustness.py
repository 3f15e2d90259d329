"""Two-view reconstruction on realistic inputs: clean, noisy, miscalibrated and both, from line
integrals and from masks, for every method, and the pipeline before issue 13 beside the new one.

Each (condition, input) is one ``vesselfield benchmark xray`` run (:func:`run_xray_benchmark` with
``degradation``) in ``OUT/<condition>-<input>/``; the table is collated from their results.csv.

    python benchmarks/xray_robustness.py --cases phantom:left:0 --out bench/robust --workers 2 \\
        [--iterations 1500] [--methods sdf-car neca occ-combined sdf-occ] [--conditions clean noisy pose both]

Conditions (``--degrade`` texts): clean ``""``; noisy ``noise=0.02,blur_px=1,background=0.03``;
pose ``angle_deg=1,shift_mm=1.5``; both: the two together. "before" is ``sdf-car`` with the
pipeline of 0.2 (``robust_input=false refine_pose=false connect_max_gap_mm=0 min_fragment_fraction=0
joint_background_degree=-1``). Masks are the noise-aware masks of the (degraded) views.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import platform
from pathlib import Path

import torch

from vesselfield.bench.xray import run_xray_benchmark

CONDITIONS = {
    "clean": "",
    "noisy": "noise=0.02,blur_px=1,background=0.03",
    "pose": "angle_deg=1,shift_mm=1.5",
    "both": "noise=0.02,blur_px=1,background=0.03,angle_deg=1,shift_mm=1.5",
}
BEFORE = {"robust_input": False, "refine_pose": False, "connect_max_gap_mm": 0, "min_fragment_fraction": 0,
          "joint_background_degree": -1}


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _fmt(row: dict, key: str, digits: int = 3) -> str:
    value = row.get(key, "")
    if value in ("", None, "nan"):
        return "–"
    try:
        return f"{float(value):.{digits}f}" if digits else str(int(float(value)))
    except ValueError:
        return str(value)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=["phantom:left:0"])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--methods", nargs="+", default=["sdf-car", "neca", "occ-combined", "sdf-occ"])
    ap.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    ap.add_argument("--inputs", nargs="+", default=["line_integral", "mask"], choices=["line_integral", "mask"])
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--no-before", action="store_true", help="skip the 0.2 pipeline rows")
    ap.add_argument("--collate", action="store_true", help="run nothing: tabulate the results.csv files already in "
                                                          "OUT for the conditions and inputs given")
    args = ap.parse_args()
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    table = []
    for condition in args.conditions:
        for kind in args.inputs:
            runs = [("new", args.methods, {})]
            if not args.no_before:
                runs.append(("before", ["sdf-car"], BEFORE))
            for label, methods, overrides in runs:
                out = args.out / f"{condition}-{kind}" / label
                if args.collate:
                    if not (out / "results.csv").is_file():
                        continue
                    results_path = out / "results.csv"
                else:
                    results_path = run_xray_benchmark(
                        args.cases if len(args.cases) > 1 else args.cases[0], methods, out, preset="cpu",
                        masks_only=kind == "mask", workers=args.workers, iterations=args.iterations, device="cpu",
                        progress=False, overrides=dict(overrides),
                        degradation=CONDITIONS[condition] or None).results_path
                for row in _rows(results_path):
                    name = row["method"] if label == "new" else f"{row['method']} (0.2 pipeline)"
                    table.append({**row, "condition": condition, "input": kind, "name": name})
                if not args.collate:
                    print(f"{condition} / {kind} / {label}: done", flush=True)
    lines = [f"Date: {started}; machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch "
             f"threads per process, {args.workers} worker(s); command: `python benchmarks/xray_robustness.py "
             f"--cases {' '.join(args.cases)} --out {args.out} --workers {args.workers}"
             + (f" --iterations {args.iterations}" if args.iterations else "") + "`", "",
             "| condition | input | method | case | clDice | Dice | clDice aligned | components | largest % | "
             "breaks | rot. error before → after (°) | time (s) |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in table:
        if r.get("status") != "ok":
            lines.append(f"| {r['condition']} | {r['input']} | {r['name']} | {r['case']} | failed: {r.get('error')} |"
                         " | | | | | | |")
            continue
        rot = (f"{_fmt(r, 'rotation_error_before_deg', 2)} → {_fmt(r, 'rotation_error_deg', 2)}"
               if r.get("rotation_error_deg") not in ("", None, "nan") else "–")
        largest = f"{100 * float(r['largest_component_fraction']):.1f}" if r.get("largest_component_fraction") else "–"
        lines.append(f"| {r['condition']} | {r['input']} | {r['name']} | {r['case']} | {_fmt(r, 'cldice')} | "
                     f"{_fmt(r, 'dice')} | {_fmt(r, 'cldice_aligned')} | {_fmt(r, 'components', 0)} | {largest} | "
                     f"{_fmt(r, 'skeleton_breaks', 0)} | {rot} | {_fmt(r, 'seconds', 0)} |")
    text = "\n".join(lines) + "\n"
    (args.out / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
