"""Benchmark: the sparse ray x hull-voxel projection matrix against grid_sample ray marching.

Default two-view geometry, a 128^3 x 0.8 mm left coronary phantom, rays = pixels inside the mask
or carrying signal, columns = visual-hull voxels (dilated by one voxel). Prints a markdown table.

    python benchmarks/bench_system_matrix.py [--device cpu|cuda] [--repeats 5]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time

import numpy as np
import torch

from vesselfield.geometry import default_geometry
from vesselfield.phantoms import TreePhantom, coronary_tree
from vesselfield.render import project_volume, projection_mask, ray_voxel_matrix, visual_hull


def timed(fn, repeats, device):
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    device = torch.device(args.device)
    geometry = default_geometry()
    grid = geometry.volume
    occ = TreePhantom(coronary_tree("left", seed=0)).occupancy(grid)
    vol = torch.from_numpy(occ)
    views = [project_volume(vol, grid, v) for v in geometry.views]
    masks = [projection_mask(v).numpy() for v in views]
    t = time.perf_counter()
    hull = visual_hull(masks, geometry)
    t_hull = time.perf_counter() - t
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"Date: {datetime.date.today()}  \nMachine: {name}, torch {torch.__version__}, {torch.get_num_threads()} threads  ")
    print(f"Command: `python benchmarks/bench_system_matrix.py --device {args.device} --repeats {args.repeats}`  ")
    print(f"Visual hull: {int(hull.sum())} voxels ({hull.mean() * 100:.2f} % of the volume), built in {t_hull:.2f} s; "
          f"vessel voxels (occupancy >= 0.5): {int((occ >= 0.5).sum())}\n")
    print("| view | rays | non-zeros | build (s) | matrix fwd+bwd (ms) | grid_sample fwd+bwd, same rays (ms) | speed-up | rel. L1 diff (hull) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for i, view in enumerate(geometry.views):
        pixels = np.argwhere(masks[i] | (views[i].numpy() > 0))
        t = time.perf_counter()
        A = ray_voxel_matrix(grid, view, pixels, voxel_mask=hull).to(device)
        t_build = time.perf_counter() - t
        x = torch.from_numpy(occ.reshape(-1)[A.voxel_index.cpu().numpy()]).to(device).requires_grad_()
        v = vol.to(device).requires_grad_()

        def matrix_step():
            A.project(x).sum().backward()

        def march_step():
            project_volume(v, grid, view, pixels).sum().backward()

        tm = timed(matrix_step, args.repeats, device)
        tg = timed(march_step, max(1, args.repeats // 2), device)
        with torch.no_grad():
            a = A.project(x).cpu()
            b = project_volume(v, grid, view, pixels).cpu()
        rel = float((a - b).abs().sum() / b.abs().sum())
        print(f"| {i + 1} | {len(pixels)} | {A.nnz / 1e6:.2f} M | {t_build:.1f} | {tm * 1e3:.1f} | {tg * 1e3:.0f} | "
              f"{tg / tm:.0f}x | {rel:.1e} |")


if __name__ == "__main__":
    main()
