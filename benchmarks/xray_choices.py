"""One two-view reconstruction of a coronary phantom under one degradation and one set of config fields:
the measurements behind the choices of issue 13 (docs/methods/sdf-car.md, docs/benchmarks.md).

    python benchmarks/xray_choices.py left:0 "noise=0.02,blur_px=1,background=0.03" line_integral \\
        iterations=1500 data_term=huber huber_k=1.5 volume_weight=10 [refine_pose=false ...]

Arguments: the phantom (side:seed), the ``--degrade`` text (``clean`` for none), the input kind
(``line_integral`` or ``mask``), then SdfCarConfig fields as ``FIELD=VALUE`` (the CLI's ``--set``).
A token ``save=PATH.npy`` saves the reconstructed occupancy (for ``benchmarks/xray_connect.py``).
Two diagnostic tokens swap one half of a noisy line-integral input for its clean counterpart:
``oracle=hull`` (the masks of the clean views bound the hull, the noisy signal is fitted) and
``oracle=target`` (the noisy masks bound the hull, the clean line integrals are fitted).
Prints one JSON line: clDice and Dice against the truth (moved into the reference view's frame when
poses are degraded, and after the best translation: ``cldice_aligned``), components, the largest
component's share, skeleton breaks, the connection step's report, the pose correction and the time;
and appends it to ``choices.jsonl`` in the current folder. Run with ``OMP_NUM_THREADS=1`` two at a
time on a 2-core machine, as the recorded figures were.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def main(argv):
    from vesselfield.config import build_config
    from vesselfield.geometry import default_geometry
    from vesselfield.meshing.connect import topology_report
    from vesselfield.methods.sdf_car import SdfCarConfig, reconstruct_xray
    from vesselfield.methods.xray_pose import relative_rotation_error_deg
    from vesselfield.metrics import cldice, dice
    from vesselfield.metrics.alignment import rigidly_aligned
    from vesselfield.phantoms import TreePhantom, coronary_tree
    from vesselfield.render.degrade import parse_degradation, simulate_views, truth_in_reference_frame

    case, spec, kind, sets = argv[0], argv[1], argv[2], argv[3:]
    oracle = [a.split("=", 1)[1] for a in sets if a.startswith("oracle=")]
    save = [a.split("=", 1)[1] for a in sets if a.startswith("save=")]
    sets = [a for a in sets if not a.startswith(("oracle=", "save="))]
    side, seed = case.split(":")
    geometry = default_geometry()
    occupancy = TreePhantom(coronary_tree(side, seed=int(seed))).occupancy(geometry.volume)
    degradation = parse_degradation("" if spec == "clean" else spec)
    sim = simulate_views(occupancy, geometry, degradation, masks_only=kind == "mask")
    truth = truth_in_reference_frame(occupancy, geometry.volume, geometry.views[0], sim.true_geometry.views[0]) >= 0.5
    config = build_config(SdfCarConfig, {"method": "sdf-car", "preset": "cpu"}, sets)
    if oracle:
        import vesselfield.render.preprocess as preprocess

        clean = simulate_views(occupancy, geometry).images
        clean_sig = [preprocess.vessel_mask(c) for c in clean]
        noisy_sig = [preprocess.vessel_mask(n) for n in sim.images]
        order = iter(range(len(clean)))

        def swapped(image, **kwargs):
            i = next(order)
            if oracle[0] == "hull":
                return preprocess.ViewSignal(noisy_sig[i].signal, noisy_sig[i].background,
                                             noisy_sig[i].noise_sigma_mm, clean_sig[i].mask, 0.5)
            return preprocess.ViewSignal(clean_sig[i].signal, clean_sig[i].background, 0.0, noisy_sig[i].mask, 0.5)

        preprocess.vessel_mask = swapped
    start = time.perf_counter()
    result = reconstruct_xray(geometry, sim.images, kind=kind, config=config, device="cpu", progress=False)
    seconds = time.perf_counter() - start
    if save:
        np.save(save[0], result.occupancy)
    pred = result.occupancy >= 0.5
    topology = topology_report(pred, truth)
    out = {"case": case, "degradation": spec, "input": kind, "set": sets, "oracle": oracle, "cldice": round(cldice(pred, truth), 4),
           "dice": round(dice(pred, truth), 4), "components": topology["components"],
           "largest_component_fraction": round(topology["largest_component_fraction"], 4),
           "skeleton_breaks": topology["skeleton_breaks"], "seconds": round(seconds, 1), "hull": result.hull_voxels,
           "connection": {k: v for k, v in (result.info.get("connection") or {}).items() if k != "gaps_mm"}}
    if degradation.poses:
        moved, shift = rigidly_aligned(result.occupancy, truth, geometry.volume)
        out["cldice_aligned"] = round(cldice(moved >= 0.5, truth), 4)
        out["aligning_shift_mm"] = np.round(shift, 2).tolist()
        true = sim.true_geometry.views
        out["rotation_error_before_deg"] = round(relative_rotation_error_deg(*geometry.views[:2], *true[:2]), 3)
        out["rotation_error_deg"] = round(relative_rotation_error_deg(*result.geometry.views[:2], *true[:2]), 3)
    if result.pose is not None:
        out["pose"] = result.pose.corrections[1:]
    line = json.dumps(out)
    print(line, flush=True)
    with open("choices.jsonl", "a") as fh:
        fh.write(line + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
