"""Bifurcation angles, branch points and Murray exponents of the vessel analysis on exact Y and T
phantoms (tests/test_analysis.py's ``bifurcation_case``), from the exact SDF (0.25 mm) and from a
CT-like mask (0.4 x 0.4 x 1.0 mm). Prints a markdown table.

    python benchmarks/analysis_bifurcations.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_analysis import bifurcation_case, box_grid, ct_like_mask, sample  # noqa: E402

from vesselfield.analysis import analyze  # noqa: E402


def main():
    print("| Y / T (deg) | input | angle between children: error (deg) | angles to parent: errors (deg) | "
          "branch point error (mm) | parent / child radii (mm; true 2.000 / 1.587) | Murray exponent (true 3) |")
    print("|---|---|---:|---|---:|---|---:|")
    for angles in ((35.0, 50.0), (90.0, 90.0), (20.0, 30.0)):
        fn, lo, hi, child_r = bifurcation_case(*angles)
        for name, grid in (("SDF 0.25 mm", box_grid(lo, hi, 0.25)), ("mask 0.4x0.4x1.0", box_grid(lo, hi, (0.4, 0.4, 1.0)))):
            vol = sample(fn, grid) if name.startswith("SDF") else ct_like_mask(fn, grid)
            tree = analyze(vol, grid)
            b = tree.bifurcations[0]
            order = np.argsort(b.angles_to_parent_deg)
            errs = np.asarray(b.angles_to_parent_deg)[order] - np.sort(angles)
            print(f"| {angles[0]:g} / {angles[1]:g} | {name} | {b.angle_between_children_deg - sum(angles):+.2f} | "
                  f"{', '.join(f'{e:+.2f}' for e in errs)} | {np.linalg.norm(b.position_mm):.2f} | "
                  f"{b.parent_radius_mm:.3f} / {', '.join(f'{r:.3f}' for r in b.child_radii_mm)} | "
                  f"{b.murray_exponent:.2f} |", flush=True)


if __name__ == "__main__":
    main()
