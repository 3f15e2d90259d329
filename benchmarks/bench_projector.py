"""Projector speed: forward and forward+backward throughput of ``project_volume``.

Default geometry (two views, 512 x 512 detectors), a 128³ x 0.8 mm coronary-like volume (a random
branching tree of tubes, r = 0.6-2 mm, partial-volume edges), default sampling. Measures full
views and 4096-ray subsets on the chosen devices and prints a markdown table with the date, the
machine and the command, ready for ``docs/benchmarks.md``.

    python benchmarks/bench_projector.py --device all --repeats 3
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

from vesselfield.geometry import default_geometry
from vesselfield.grid import VolumeGrid
from vesselfield.render import default_step_mm, project_volume, ray_box_intersection


def coronary_like_volume(grid: VolumeGrid, seed: int = 0, n_segments: int = 40) -> np.ndarray:
    """(X, Y, Z) float32 occupancy of a random branching tree of tubes (not a phantom, a load)."""
    rng = np.random.default_rng(seed)
    half = 0.8 * (np.asarray(grid.shape) * grid.spacing) / 2
    nodes = [(np.array([0.0, 0.0, half[2] * 0.9]), np.array([0.0, 0.0, -1.0]), 2.0)]
    segments = []
    while len(segments) < n_segments and nodes:
        start, heading, radius = nodes.pop(0)
        heading = heading + rng.normal(scale=0.5, size=3)
        heading /= np.linalg.norm(heading)
        end = np.clip(start + heading * rng.uniform(12, 25), -half, half)
        segments.append((start, end, radius))
        for _ in range(rng.integers(1, 3)):
            nodes.append((end, heading, max(0.6, radius * rng.uniform(0.7, 0.9))))
    centers = grid.voxel_centers_mm(np.float64).reshape(-1, 3)
    dist = np.full(len(centers), np.inf)
    for a, b, r in segments:
        ab = b - a
        t = np.clip((centers - a) @ ab / max(ab @ ab, 1e-12), 0, 1)
        dist = np.minimum(dist, np.linalg.norm(centers - a - t[:, None] * ab, axis=1) - r)
    # A linear ramp over one voxel stands in for partial-volume edges.
    occupancy = np.clip(0.5 - dist / float(min(grid.spacing_mm)), 0.0, 1.0)
    return occupancy.reshape(grid.shape).astype(np.float32)


def samples_per_view(grid: VolumeGrid, view, pixels=None) -> int:
    """Number of samples the projector takes for these rays at default sampling."""
    origins, dirs = view.rays(pixels)
    t_near, t_far = ray_box_intersection(torch.from_numpy(origins), torch.from_numpy(dirs), *grid.bounds_mm)
    length = (t_far - t_near.clamp_min(0)).clamp_min(0)
    return int(torch.ceil(length / default_step_mm(grid)).sum())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device: torch.device, repeats: int) -> float:
    """Median wall time (s) of ``fn()`` over ``repeats`` runs after one warm-up."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (median reported)")
    parser.add_argument("--subset-rays", type=int, default=4096)
    parser.add_argument("--skip-full", action="store_true", help="only the ray subsets")
    args = parser.parse_args(argv)

    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            sys.exit("error: --device cuda was asked for but this torch has no CUDA device")
        devices.remove("cuda")

    geometry = default_geometry()
    grid = geometry.volume
    volume_np = coronary_like_volume(grid)
    rng = np.random.default_rng(0)

    rows = []
    names = []
    for device_name in devices:
        device = torch.device(device_name)
        names.append(torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model())
        volume = torch.from_numpy(volume_np).to(device)
        for index, view in enumerate(geometry.views, start=1):
            h, w = view.detector_shape
            subset = np.stack([rng.integers(0, h, args.subset_rays), rng.integers(0, w, args.subset_rays)], 1)
            cases = [(f"{args.subset_rays} rays", subset)]
            if not args.skip_full:
                cases.append((f"full {h}x{w}", None))
            for label, pixels in cases:
                n_rays = h * w if pixels is None else len(pixels)
                n_samples = samples_per_view(grid, view, pixels)

                def forward():
                    with torch.no_grad():
                        project_volume(volume, grid, view, pixels)

                def forward_backward():
                    v = volume.detach().requires_grad_()
                    project_volume(v, grid, view, pixels).sum().backward()

                for mode, fn in (("forward", forward), ("forward+backward", forward_backward)):
                    seconds = time_call(fn, device, args.repeats)
                    rows.append((device_name, f"view {index}", label, mode, n_rays, n_samples, seconds))
                    print(f"  {device_name} view {index} {label} {mode}: {seconds * 1e3:.1f} ms", file=sys.stderr,
                          flush=True)

    print(f"Date: {datetime.date.today().isoformat()}  ")
    print(f"Machine: {', '.join(names)}; {os.cpu_count()} CPU cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), Python {platform.python_version()}  ")
    print(f"Command: `python {' '.join(['benchmarks/bench_projector.py'] + sys.argv[1:])}`  ")
    print(f"Volume: 128³ x 0.8 mm coronary-like occupancy; default sampling, step {default_step_mm(grid):.2f} mm; "
          f"time = median of {args.repeats} runs after a warm-up\n")
    print("| device | view | rays | mode | samples | time (ms) | rays/s | samples/s |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    for device_name, view, label, mode, n_rays, n_samples, seconds in rows:
        print(f"| {device_name} | {view} | {label} | {mode} | {n_samples / 1e6:.1f} M | {seconds * 1e3:.1f} | "
              f"{n_rays / seconds / 1e3:.0f} k | {n_samples / seconds / 1e6:.1f} M |")


if __name__ == "__main__":
    main()
