"""Exploration for the two-view CPU preset: an explicit SDF grid on the visual hull, fitted to
noise-free line integrals through the sparse projection matrix with the occupancy loss only.

Not a method yet (no priors, no geometric loss): it measures how far the fast path alone goes,
so that the SDF-CAR CPU preset can be designed against numbers. Prints a markdown table of
(iteration, seconds, loss, Dice, clDice).

    python benchmarks/explore_two_view_grid.py [--seed 1] [--iterations 8000] [--lr 1e-2]
"""

from __future__ import annotations

import argparse
import datetime
import math
import time

import numpy as np
import torch
from scipy import ndimage

from vesselfield.geometry import default_geometry
from vesselfield.metrics import cldice, dice
from vesselfield.phantoms import TreePhantom, coronary_tree
from vesselfield.render import project_volume, projection_mask, ray_voxel_matrix, visual_hull


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=8000)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--alpha", type=float, default=50.0)
    ap.add_argument("--every", type=int, default=1000)
    args = ap.parse_args()
    torch.manual_seed(0)
    geometry = default_geometry()
    grid = geometry.volume
    truth = TreePhantom(coronary_tree("left", seed=args.seed)).occupancy(grid)
    views = [project_volume(torch.from_numpy(truth), grid, v) for v in geometry.views]
    masks = [projection_mask(v).numpy() for v in views]
    t0 = time.perf_counter()
    hull = visual_hull(masks, geometry)
    matrices, targets = [], []
    for i, view in enumerate(geometry.views):
        pixels = np.argwhere(ndimage.binary_dilation(masks[i], iterations=2) | (views[i].numpy() > 0))
        matrices.append(ray_voxel_matrix(grid, view, pixels, voxel_mask=hull))
        targets.append(views[i][pixels[:, 0], pixels[:, 1]])
    setup_s = time.perf_counter() - t0
    gt = truth >= 0.5
    print(f"Date: {datetime.date.today()}; command: `python benchmarks/explore_two_view_grid.py --seed {args.seed} "
          f"--iterations {args.iterations} --lr {args.lr}`  ")
    print(f"Setup (hull + matrices): {setup_s:.1f} s; visual hull alone: Dice {dice(hull, gt):.3f}, "
          f"clDice {cldice(hull, gt):.3f}\n")
    print("| iteration | time (s) | loss (mm²) | Dice | clDice |\n|---:|---:|---:|---:|---:|")
    # SDF in units of the half-extent (as SDF-CAR's normalised coordinates); start nearly empty.
    s = torch.full((len(matrices[0].voxel_index),), math.log(1 / 0.08 - 1) / args.alpha, requires_grad=True)
    opt = torch.optim.Adam([s], lr=args.lr)
    t0 = time.perf_counter()
    for it in range(args.iterations):
        occ = torch.sigmoid(-args.alpha * s)
        loss = sum(((a.project(occ) - t) ** 2).mean() for a, t in zip(matrices, targets))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (it + 1) % args.every == 0 or it == 0:
            full = np.zeros(grid.num_voxels, np.float32)
            full[matrices[0].voxel_index.numpy()] = occ.detach().numpy()
            pred = full.reshape(grid.shape) >= 0.5
            print(f"| {it + 1} | {time.perf_counter() - t0:.0f} | {loss.item():.2e} | {dice(pred, gt):.3f} | "
                  f"{cldice(pred, gt):.3f} |", flush=True)


if __name__ == "__main__":
    main()
