"""Quality of VesselSDF and its baselines: the paper's Tables 1-2 on the three settings of issue 11.

Builds each setting's dataset under ``OUT/data/`` (once; a rerun reuses it), then runs
``vesselfield benchmark ct`` on it into ``OUT/<setting>/`` (which resumes: trained models are
reused) and prints the exact command, the tables and whether the paper's ordering holds:

- **a** CT-like phantoms: ``make_phantom_ct_dataset`` (random branching tubes, 64 x 64 x 32 voxels
  of 0.8 mm, 6 cases), sparsified every ``--phantom-every`` (default 4: 3.2 mm slices, the sparse
  setting the method is for; 1 keeps them dense); 2 test cases (a seeded third);
- **b** the shared hepatic labels (``data/samples/hepatic_msd``, 3 cases) with synthesised CT
  (``make_hepatic_ct_dataset``, in-plane blocks of 2 x 2 voxels, cropped to the labels + 10 mm),
  sparsified every 4 slices (``sparsify_dataset``); split by case: 2 training cases, 1 test case,
  evaluated on the dense labels;
- **c** the vmtk aorta's real CT (``make_vmtk_aorta_dataset(regions=2, axis=1, crop_to_label=True)``):
  the scan cropped along y (the vessel's long axis) to the labelled part (the level set labels the
  lower aorta, the bifurcation and the iliac arteries, not the contrast-filled aorta above it),
  then cut in two along y; trained on ``aorta_part0`` (y slices 214-261), tested on
  ``aorta_part1`` (262-308): a split by region of one scan.

In (b) and (c) the one or two training cases are all trained on (``trainer.val_fraction=0``:
holding one out for validation would halve the data; ``best.pt`` then follows the training
loss). Each method trains for ``--epochs`` (default 100, the paper's) or until its setting's time
limit, whichever comes first; the defaults keep the whole script within 30 minutes on 2 CPU cores
(5 methods x (40 + 80 + 80) s of training, plus data, inference, metrics and figures: about
20 minutes in all, more when a barely trained model predicts large noisy masks, whose surface
Chamfer distance takes minutes on large volumes). docs/benchmarks.md records the figures of
``--time-limit 0 180 150`` (no limit on the phantoms: 100 epochs in under a minute each).

    python benchmarks/ct_quality.py --out ct-quality [--settings a b c] [--epochs 100]
        [--time-limit 40 80 80] [--methods ...] [--device auto] [--tiny]

``--tiny`` checks the script itself (small data, 1 epoch, 2 patches per case): 7 minutes on 2 cores,
most of it the surface distances of the untrained models' noisy masks on the aorta.
Figures for docs/benchmarks.md: ``OUT/<setting>/figures/``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

SETTINGS = {
    "a": "CT-like phantoms",
    "b": "hepatic labels + synthesised CT, sparsified x4, split by case",
    "c": "vmtk aorta real CT, split by region",
}
METHODS = ("vessel-sdf", "attention-unet", "unet3d", "direct-sdf", "vessel-sdf-no-gauss")
DEFAULT_TIME_LIMITS_S = (40.0, 80.0, 80.0)


def prepare(setting: str, data_root: Path, *, tiny: bool, phantom_every: int) -> tuple[Path, list[str], str]:
    """``(dataset folder, extra benchmark arguments, how it was made)`` of one setting (made once)."""
    from vesselfield.datasets.msd import sparsify_dataset
    from vesselfield.datasets.synthetic_ct import (
        make_hepatic_ct_dataset,
        make_phantom_ct_dataset,
        make_vmtk_aorta_dataset,
    )

    def once(path: Path, make) -> Path:
        if not (path / "dataset.json").exists():
            make(path)
        return path

    if setting == "a":
        n, shape = (3, (32, 32, 16)) if tiny else (6, (64, 64, 32))
        dense = once(data_root / "phantoms", lambda p: make_phantom_ct_dataset(p, n_cases=n, shape=shape, seed=0))
        how = f"make_phantom_ct_dataset(n_cases={n}, shape={shape}, spacing_mm=(0.8, 0.8, 0.8), seed=0)"
        if phantom_every > 1:
            sparse = once(data_root / f"phantoms_every{phantom_every}",
                          lambda p: sparsify_dataset(dense, p, every=phantom_every))
            return sparse, [], how + f" -> sparsify_dataset(every={phantom_every})"
        return dense, [], how
    if setting == "b":
        factor, crop = (4, 5.0) if tiny else (2, 10.0)
        dense = once(data_root / "hepatic", lambda p: make_hepatic_ct_dataset(p, seed=0, inplane_factor=factor,
                                                                              crop_margin_mm=crop))
        sparse = once(data_root / "hepatic_every4", lambda p: sparsify_dataset(dense, p, every=4))
        how = f"make_hepatic_ct_dataset(seed=0, inplane_factor={factor}, crop_margin_mm={crop})"
        return sparse, ["--set", "trainer.val_fraction=0"], how + " -> sparsify_dataset(every=4)"
    if setting == "c":
        data = once(data_root / "vmtk_aorta_2regions_y", lambda p: make_vmtk_aorta_dataset(
            p, regions=2, axis=1, crop_to_label=True))
        return (data, ["--test-cases", "aorta_part1", "--set", "trainer.val_fraction=0"],
                "make_vmtk_aorta_dataset(regions=2, axis=1, crop_to_label=True): the labelled vessel cut in two "
                "along its length (y); train aorta_part0, test aorta_part1")
    raise SystemExit(f"unknown setting {setting!r}: choose from {', '.join(SETTINGS)}")


def ordering(summary: dict) -> list[str]:
    """Whether the paper's ordering holds on the mean Dice (vessel-sdf >= attention-unet > direct-sdf)
    and on the floating fragments (vessel-sdf-no-gauss has more than vessel-sdf)."""
    means = summary.get("means", {})

    def mean(method, key):
        value = means.get(method, {}).get(key, {}).get("mean")
        return None if value is None else float(value)

    lines = []
    a, b, c = (mean(m, "dice") for m in ("vessel-sdf", "attention-unet", "direct-sdf"))
    if None not in (a, b, c):
        lines.append(f"Dice: vessel-sdf {a:.3f} >= attention-unet {b:.3f}: {'yes' if a >= b else 'no'}; "
                     f"attention-unet > direct-sdf {c:.3f}: {'yes' if b > c else 'no'}")
    f_full, f_no = mean("vessel-sdf", "floating_fragments"), mean("vessel-sdf-no-gauss", "floating_fragments")
    if None not in (f_full, f_no):
        lines.append(f"floating fragments: vessel-sdf {f_full:.3g} vs without L_gauss {f_no:.3g}: L_gauss "
                     f"{'removes some' if f_full < f_no else 'does not remove any'}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("ct-quality"), help="output folder (data/, a/, b/, c/)")
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--epochs", type=int, default=None, help="epochs per method (default 100; --tiny: 1)")
    ap.add_argument("--time-limit", type=float, nargs=3, default=None, metavar=("A", "B", "C"),
                    help=f"seconds of training per method in settings a, b, c (default {DEFAULT_TIME_LIMITS_S}; "
                         "0: none)")
    ap.add_argument("--phantom-every", type=int, default=4, help="sparsify the phantoms every K slices (1: dense)")
    ap.add_argument("--set", nargs="*", default=[], help="extra FIELD=VALUE for every method's config")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--tiny", action="store_true", help="a quick check of the script: small data, 1 epoch")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args()

    from vesselfield.cli import main as vesselfield

    epochs = args.epochs if args.epochs is not None else (1 if args.tiny else 100)
    limits = args.time_limit if args.time_limit is not None else ((0, 0, 0) if args.tiny else DEFAULT_TIME_LIMITS_S)
    extra_set = list(args.set) + (["patches_per_case=2"] if args.tiny else [])
    started = time.perf_counter()
    print(f"# VesselSDF quality benchmark ({datetime.date.today()}; {platform.platform()}, {os.cpu_count()} CPUs; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})\n")
    print(f"script: python benchmarks/ct_quality.py {shlex.join(sys.argv[1:])}\n")
    status = 0
    for setting in args.settings:
        limit = limits["abc".index(setting)]
        data, extra, how = prepare(setting, args.out / "data", tiny=args.tiny, phantom_every=args.phantom_every)
        words = ["benchmark", "ct", "--data", str(data), "--methods", *args.methods, "--out", str(args.out / setting),
                 "--epochs", str(epochs)]
        words += ["--time-limit", f"{limit:g}"] if limit else []
        words += extra
        if extra_set:
            words += ["--set", *extra_set]
        words += ["--device", args.device] if args.device != "auto" else []
        words += ["--quiet"] if args.quiet else []
        print(f"## ({setting}) {SETTINGS[setting]}\n\ndata: {how}\n\ncommand: `vesselfield {shlex.join(words)}`\n",
              flush=True)
        t0 = time.perf_counter()
        code = vesselfield(words)
        print(f"\n({setting}) exit status {code}, {time.perf_counter() - t0:.0f} s")
        status = status or code
        summary_path = args.out / setting / "summary.json"
        if code == 0 and summary_path.exists():
            for line in ordering(json.loads(summary_path.read_text(encoding="utf-8"))):
                print(f"paper's ordering: {line}")
        print(flush=True)
    print(f"total {time.perf_counter() - started:.0f} s")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
