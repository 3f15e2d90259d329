"""Joining a two-view reconstruction's pieces, with several gap limits and fragment sizes (issue 13).

    python benchmarks/xray_choices.py left:0 noise=0.02 line_integral iterations=1500 refine_pose=false \\
        connect_max_gap_mm=0 min_fragment_fraction=0 save=raw.npy
    python benchmarks/xray_connect.py raw.npy left:0 noise=0.02 line_integral

Rebuilds the visual hull of the same (degraded) views as the reconstruction used, then applies
:func:`vesselfield.meshing.connect.connect_components` with each (gap mm, fragment fraction) and
prints clDice, Dice and the topology counts against the phantom's truth.
"""

from __future__ import annotations

import sys

import numpy as np

SETTINGS = [(0, 0), (0, 0.05), (0, 0.1), (4, 0.02), (4, 0.05), (16, 0), (16, 0.05), (40, 0), (40, 0.05)]


def main(argv):
    from vesselfield.geometry import default_geometry
    from vesselfield.meshing.connect import connect_components, topology_report
    from vesselfield.metrics import cldice, dice
    from vesselfield.phantoms import TreePhantom, coronary_tree
    from vesselfield.render import visual_hull
    from vesselfield.render.degrade import parse_degradation, simulate_views
    from vesselfield.render.preprocess import vessel_mask

    path, case, spec, kind = argv[:4]
    side, seed = case.split(":")
    geometry = default_geometry()
    occupancy = TreePhantom(coronary_tree(side, seed=int(seed))).occupancy(geometry.volume)
    truth = occupancy >= 0.5
    images = simulate_views(occupancy, geometry, parse_degradation("" if spec == "clean" else spec),
                            masks_only=kind == "mask").images
    masks = [image > 0 for image in images] if kind == "mask" else [vessel_mask(image).mask for image in images]
    hull = visual_hull(masks, geometry, dilate_voxels=1)
    raw = np.load(path)
    print("| gap mm | fragments < | pieces | largest % | breaks | clDice | Dice |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for gap, fraction in SETTINGS:
        out, _ = connect_components(raw, geometry.volume, hull, max_gap_mm=gap, min_fragment_fraction=fraction)
        pred = out >= 0.5
        t = topology_report(pred, truth)
        print(f"| {gap} | {fraction} | {t['components']} | {100 * t['largest_component_fraction']:.1f} | "
              f"{t['skeleton_breaks']} | {cldice(pred, truth):.4f} | {dice(pred, truth):.4f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
