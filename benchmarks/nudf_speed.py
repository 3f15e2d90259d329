"""NUDF speed: training throughput, time to predict one ROI and time to mesh it, with peak memory.

Each measurement runs in its own process, so that its peak resident memory (``ru_maxrss``) is its own:

- ``train``: optimisation steps of the default config (64^3 ROI, batch 4, 4096 points per ROI) on
  random inputs, after two warm-up steps: seconds per step, ROIs per second;
- ``predict``: a trained run (``--run``) on one CT image of a surface dataset (``--data``): the encoder
  and the UDF on the 64^3 ROI grid, then the UDF mesher on the network, seconds each.

    python benchmarks/nudf_speed.py --run BENCH/runs/nudf --data DATA [--device cpu|cuda] [--steps 10]

Prints a Markdown table (docs/benchmarks.md, "NUDF").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def _peak_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure_train(variant: str, device: str, steps: int) -> dict:
    import torch

    from vesselfield.methods.nudf import NudfConfig, build_model, make_objective

    config = NudfConfig(variant=variant)
    torch.manual_seed(0)
    model = build_model(config).to(device)
    objective = make_objective(config)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    n, b = config.roi_voxels, config.trainer.batch_size
    batch = {"image": torch.randn(b, 1, n, n, n, device=device)}
    if variant == "nudf":
        batch["points"] = torch.rand(b, config.points_per_roi, 3, device=device) * 2 - 1
        batch["distances"] = torch.rand(b, config.points_per_roi, device=device) * 0.2
    else:
        batch["occupancy"] = (torch.rand(b, 1, n, n, n, device=device) > 0.5).float()

    def step():
        loss, _ = objective(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    per_step = (time.perf_counter() - t0) / steps
    out = {"what": f"train {variant}", "s_per_step": per_step, "rois_per_s": b / per_step, "peak_mib": _peak_mib()}
    if device == "cuda":
        out["gpu_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def measure_predict(run: str, data: str, device: str) -> dict:
    import numpy as np

    from vesselfield.datasets.surface_ct import load_surface_case, read_surface_dataset
    from vesselfield.pipelines.predict_nudf import load_nudf_run, predict_nudf_arrays

    trained = load_nudf_run(run)
    case = load_surface_case(read_surface_dataset(data).cases[-1])
    center = 0.5 * (np.asarray(case.mesh.bounds[0]) + np.asarray(case.mesh.bounds[1]))
    t0 = time.perf_counter()
    pred = predict_nudf_arrays(trained, case.image, case.grid, center, device=device)
    total = time.perf_counter() - t0
    return {"what": f"predict {trained.config.variant} ({case.name})", "predict_s": pred["timings_s"]["predict"],
            "mesh_s": pred["timings_s"]["mesh"], "total_s": total, "faces": int(len(pred["mesh"].faces)),
            "peak_mib": _peak_mib()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="a `train nudf` (or unet-roi) run folder, for the prediction timings")
    p.add_argument("--data", help="a surface dataset (its last case is predicted)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--part", help=argparse.SUPPRESS)
    p.add_argument("--variant", default="nudf", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.part == "train":
        print(json.dumps(measure_train(args.variant, args.device, args.steps)))
        return
    if args.part == "predict":
        print(json.dumps(measure_predict(args.run, args.data, args.device)))
        return
    rows = []
    jobs = [["--part", "train", "--variant", v, "--steps", str(args.steps)] for v in ("nudf", "unet-roi")]
    if args.run and args.data:
        jobs.append(["--part", "predict", "--run", args.run, "--data", args.data])
    for job in jobs:
        out = subprocess.run([sys.executable, __file__, *job, "--device", args.device], check=True,
                             capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"| what ({args.device}) | s / step | ROIs / s | predict (s) | mesh (s) | faces | peak RSS (MiB) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        def cell(key, fmt="{:.2f}"):
            return fmt.format(r[key]) if key in r else "–"
        print(f"| {r['what']} | {cell('s_per_step')} | {cell('rois_per_s')} | {cell('predict_s')} | {cell('mesh_s')} | "
              f"{cell('faces', '{}')} | {cell('peak_mib', '{:.0f}')} |")


if __name__ == "__main__":
    main()
