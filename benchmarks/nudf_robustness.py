"""NUDF and unet-roi on degraded inputs: a misplaced ROI (detector error) and a noisier CT.

Takes the trained runs of a `vesselfield benchmark nudf` folder and scores the test cases it names
(its summary.json) under:

- ``clean``: the ROI at the target's box centre, the image as it is;
- ``offset 5 mm``: the ROI centre moved by 5 mm in a seeded random direction (a coarse detector's
  miss; training augments translations of up to 5 mm per axis);
- ``noise 60 HU``: seeded Gaussian noise of 60 HU added to the image (four times the phantoms' own);
- ``offset + noise``: both.

    python benchmarks/nudf_robustness.py --bench BENCH --data DATA [--offset-mm 5] [--noise-hu 60] [--set mesh.keep_mm=1.0]

Prints a Markdown table (docs/benchmarks.md, "NUDF"): mean ± std over the test cases of the
symmetric Chamfer, the one-sided pred→target Chamfer, accuracy (p90) and completion (2 mm).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main(argv=None):
    from vesselfield.bench.harness import format_mean_std
    from vesselfield.datasets.surface_ct import load_surface_case, read_surface_dataset
    from vesselfield.errors import VesselfieldError
    from vesselfield.methods.nudf import TrainedNudf, with_predict_settings
    from vesselfield.pipelines.benchmark_nudf import MODEL_NAMES, evaluate_prediction
    from vesselfield.pipelines.predict_nudf import load_nudf_run

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bench", required=True, help="a `vesselfield benchmark nudf` output folder")
    p.add_argument("--data", required=True, help="its surface dataset")
    p.add_argument("--offset-mm", type=float, default=5.0)
    p.add_argument("--noise-hu", type=float, default=60.0)
    p.add_argument("--points", type=int, default=50_000, help="surface samples per mesh for the metrics")
    p.add_argument("--set", dest="assignments", nargs="*", default=None,
                   help="prediction settings for every model, e.g. mesh.keep_mm=1.0 (with_predict_settings)")
    args = p.parse_args(argv)

    bench = Path(args.bench)
    summary = json.loads((bench / "summary.json").read_text())
    dataset = read_surface_dataset(args.data)
    cases = {c.name: c for c in dataset.cases}
    settings = [("clean", 0.0, 0.0), (f"offset {args.offset_mm:g} mm", args.offset_mm, 0.0),
                (f"noise {args.noise_hu:g} HU", 0.0, args.noise_hu),
                ("offset + noise", args.offset_mm, args.noise_hu)]
    keys = ("chamfer_mm", "chamfer_pred_to_target_mm", "accuracy_mm", "completion")
    print("| model | input | n | Chamfer (mm) | Chamfer pred→target (mm) | accuracy p90 (mm) | completion 2 mm |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for method in summary["methods"]:
        trained = load_nudf_run(bench / "runs" / method)
        if args.assignments:
            trained = TrainedNudf(with_predict_settings(trained.config, args.assignments), trained.model,
                                  trained.details)
        for label, offset, noise in settings:
            rows, failed = [], 0
            for i, name in enumerate(summary["test_cases"]):
                case = load_surface_case(cases[name])
                rng = np.random.default_rng([7, i])
                center = 0.5 * (np.asarray(case.mesh.bounds[0]) + np.asarray(case.mesh.bounds[1]))
                direction = rng.normal(size=3)
                center = center + offset * direction / np.linalg.norm(direction)
                image = case.image + (rng.normal(0.0, noise, case.image.shape).astype(np.float32) if noise else 0)
                try:
                    rows.append(evaluate_prediction(trained, image, case.grid, case.mesh, center,
                                                    n_points=args.points))
                except VesselfieldError:
                    failed += 1
            cells = [format_mean_std(np.asarray([r[k] for r in rows])) if rows else "–" for k in keys]
            count = f"{len(rows)}" + (f" ({failed} failed)" if failed else "")
            print(f"| {MODEL_NAMES[method]} | {label} | {count} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
