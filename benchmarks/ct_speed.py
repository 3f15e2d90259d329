"""VesselSDF speed: training throughput (patches/s), peak memory, and sliding-window inference time.

For every variant (default config: stage-1 channels 8-16-32-64, refiner 8-16) on a sparse-slice
grid (0.8 x 0.8 x 4 mm; patch 128 x 128 x 32, the default for a 512 x 512 x 64 volume), each
variant in its own process (so that the peak memory is its own):

- training: optimiser steps of batch 2 on random patches (forward, eq. 4, backward, Adam step),
  after 2 warm-up steps; patches/s and the peak memory (CPU: the process's peak resident set
  size, ru_maxrss; CUDA: torch.cuda.max_memory_allocated);
- inference: one 512 x 512 x 64 volume through ``predict_volume`` (MONAI sliding window, overlap
  0.25, Gaussian blending), wall time after one warm-up window.

Prints a markdown table with the date, the machine and the command, for docs/benchmarks.md.

    python benchmarks/ct_speed.py --device cpu
    python benchmarks/ct_speed.py --device cuda --variants vessel-sdf unet3d
"""

from __future__ import annotations

import argparse
import datetime
import platform
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from vesselfield.bench.harness import machine_description
from vesselfield.methods.vessel_sdf import (
    VARIANTS,
    VesselSdfConfig,
    build_model,
    choose_patch,
    make_objective,
    predict_volume,
)

SPACING = (0.8, 0.8, 4.0)


def peak_memory_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def training_throughput(variant: str, device, steps: int) -> tuple[float, float, tuple]:
    config = VesselSdfConfig(variant=variant)
    patch, strides, ref = choose_patch(config, [(512, 512, 64)], SPACING)
    model = build_model(config, strides, ref).to(device)
    objective = make_objective(config)
    opt = torch.optim.Adam(model.parameters(), lr=5e-4)
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.randn(2, 1, *patch, generator=g),
             "occupancy": (torch.rand(2, 1, *patch, generator=g) > 0.95).float(),
             "sdf_mm": torch.randn(2, 1, *patch, generator=g).clamp(-5, 5),
             "spacing_mm": torch.tensor([SPACING, SPACING])}
    batch = {k: v.to(device) for k, v in batch.items()}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(steps + 2):
        if i == 2:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
        loss, _ = objective(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return 2 * steps / seconds, peak_memory_mb(device), patch


def inference_seconds(variant: str, device, shape=(512, 512, 64)) -> float:
    config = VesselSdfConfig(variant=variant)
    patch, strides, ref = choose_patch(config, [shape], SPACING)
    model = build_model(config, strides, ref).to(device).eval()
    image = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    predict_volume(model, image[: patch[0], : patch[1], : patch[2]], patch, device=device)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    predict_volume(model, image, patch, overlap=config.sw_overlap, sw_batch_size=config.sw_batch_size, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per variant")
    parser.add_argument("--no-inference", action="store_true")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a worker: measure in this process
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"date: {datetime.date.today().isoformat()}; machine: {machine_description()}; torch {torch.__version__}; "
          f"threads {torch.get_num_threads()}; python {platform.python_version()}")
    print(f"command: python {' '.join(sys.argv)}\n")
    print("| variant | device | patch | training patches/s | peak memory (MB) | inference 512x512x64 (s) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for variant in args.variants:
        if args.one:
            rate, memory, patch = training_throughput(variant, device, args.steps)
            seconds = float("nan") if args.no_inference else inference_seconds(variant, device)
            print(f"| {variant} | {device.type} | {'x'.join(map(str, patch))} | {rate:.2f} | {memory:.0f} | "
                  f"{seconds:.1f} |", flush=True)
        else:
            words = [sys.executable, __file__, "--one", "--device", args.device, "--variants", variant, "--steps",
                     str(args.steps)] + (["--no-inference"] if args.no_inference else [])
            done = subprocess.run(words, capture_output=True, text=True)
            print(done.stdout.strip().splitlines()[-1] if done.returncode == 0 else f"| {variant} | failed: "
                  f"{done.stderr.strip().splitlines()[-1]} |", flush=True)


if __name__ == "__main__":
    main()
