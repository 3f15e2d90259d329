"""Vessel analysis accuracy and speed: ``vesselfield.analysis.analyze`` against two skeleton baselines.

Accuracy (default): the exact phantoms of tests/test_analysis.py (imported from there), each as an
exact SDF volume and as a CT-like mask (partial volume of 3^3 sub-voxel points thresholded at 0.5)
at 0.4 x 0.4 x 1.0 mm, measured by three methods on the same input:

- ``ours``: ``analyze(volume, grid)`` with the default ``AnalysisConfig`` (the mask as uint8);
- ``skimage+EDT``: the naive baseline. Mask = SDF < 0 (SDF input) or the mask itself; an
  anisotropic mask is first resampled to isotropic at its finest spacing by nearest neighbour;
  ``skimage.morphology.skeletonize`` (Lee 1994); radius at each skeleton voxel =
  ``scipy.ndimage.distance_transform_edt(mask, sampling=spacing)`` there (no pruning, no
  sub-voxel refinement); centreline = the skeleton voxel centres (world mm);
- ``kimimaro``: ``kimimaro.skeletonize`` (TEASAR) of the mask as uint32 labels with
  ``anisotropy`` = the voxel spacing in mm and ``TEASAR_PARAMS`` below (every key stated; the
  README's scale / pdrf values, const 1 mm, soma handling off), ``fix_branching``, ``fix_borders``,
  one process, ``dust_threshold=0`` (its default, 1000 voxels, drops the R 0.8 mm tube's mask: no
  skeleton), no post-processing; centreline = its vertices + the grid origin, radius = its
  ``radius`` (the distance-to-boundary at the vertex). A failure is recorded in ``note``.

Phantoms: oblique straight tubes (capsules along OBLIQUE, 24 mm axis) R 0.8 / 1.5 / 2.5 mm (SDF at
0.2 / 0.25 / 0.25 mm); concentric cosine stenoses of a 2 mm tube (``stenosis_case(2, f, L)``, 24 mm,
flat ends) for (f, L) = (0.3, 10), (0.5, 6), (0.7, 4) (SDF at 0.25 mm); Y (35 / 50 deg) and T (90 /
90 deg) bifurcations (``bifurcation_case``; parent radius 2, children 2 * 2^(-1/3), 15 mm long; SDF
at 0.25 mm). Every mask is at 0.4 x 0.4 x 1.0 mm.

Columns (NaN where not applicable):

- ``AI_mm``, ``OV``: Rotterdam average-inside distance and overlap (``centerline_overlap``) of
  all the method's centreline points against the true axis sampled every 0.1 mm (tubes and
  stenoses: the segment along OBLIQUE between the centreline's extreme axial coordinates; Y / T:
  the three capsule axes), tolerance = the true radius there;
- ``r_bias_mm``, ``r_MAE_mm``: radius minus the true radius at each centreline point more than
  2 mm from the tube's ends (the axis end points; Y / T: the free ends) and, for Y / T, more than
  2 x the parent radius (4 mm) from the branch point. True radius: R (tubes); rho(x) =
  r0 (1 - f (1 + cos(2 pi x / L)) / 2) for |x| < L / 2, else r0 (stenoses); the nearest
  capsule's (Y / T). Ours' radius is ``radius_area_mm``; its samples with ``valid`` False (open
  cross-section: ours flags them as not measured) are left out; ``r_pts`` = points used;
- ``MLD_err_mm``, ``DS_err_pts``: stenoses only, against 2 r0 (1 - f) and 100 f. Ours: the lesion
  nearest the throat (``note`` says when there are 0 or several). Baselines: MLD = 2 x min radius
  over centreline points with |x| < L / 2, reference = 2 x median radius over L / 2 + r0 < |x| <
  10 mm (healthy, rho = r0, one radius clear of the narrowing and 2 mm from the flat ends; |x| > L
  would leave no point for L = 10 mm), %DS = 100 (1 - MLD / reference);
- ``branch_pts``: junctions (truth 0 for tubes / stenoses, 1 for Y / T). Ours: graph nodes of
  degree >= 3; kimimaro: clusters of adjacent skeleton vertices of degree >= 3; skimage: 26-connected
  clusters of skeleton voxels with more than 2 skeleton neighbours;
- ``spurs``: free ends beyond the true number (2 for tubes / stenoses, 3 for Y / T): degree-1
  graph nodes (ours), degree-1 vertices (kimimaro), skeleton voxels with one neighbour (skimage;
  an isolated voxel counts as two ends);
- ``time_s``: wall time of the method alone, after one untimed warm-up run of each method (ours:
  the ``analyze`` call; skimage: threshold, resampling, thinning, EDT, point extraction; kimimaro:
  the label cast and ``skeletonize``).

Speed (``--speed``): ours on the left coronary phantom (``coronary_tree("left")``) as (1) a 200^3
exact SDF (``sdf_volume``, isotropic, over the tree's box + 2 mm) and (2) a 512 x 512 x 256 mask at
0.4 x 0.4 x 1.0 mm centred on the tree (a CT field of view; ``sdf_volume < 0``, built in x-slabs).
Both are cached in /tmp (``vf_bench_coronary_*.npy``, built in a subprocess of their own). Each
measurement runs in a fresh subprocess: seconds of the ``analyze`` call (``outside_total_s``: the
part not in ``details['total_s']``, i.e. building the wall field, e.g. the mask's smoothed SDF), and
peak RSS (``ru_maxrss``) before and after it, with the process's own ``VmHWM`` as a cross-check
(Linux keeps ``ru_maxrss`` across execve, so the parent must stay small). When the default
``max_memory_gb`` refuses the mask, the row records the error and a second row reruns it with
``max_memory_gb`` raised to what its message asks.

Commands (from the repository root; OMP_NUM_THREADS unset):

    python benchmarks/analysis_accuracy.py --out /tmp/analysis_accuracy.csv
    python benchmarks/analysis_accuracy.py --speed
    python benchmarks/analysis_accuracy.py --quick            # R 1.5 tube, 50 % stenosis, Y only

Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_analysis import (OBLIQUE, bifurcation_case, box_grid, ct_like_mask, rotation, sample,  # noqa: E402
                           stenosis_case, tube_case)

from vesselfield.analysis import analyze  # noqa: E402
from vesselfield.grid import VolumeGrid  # noqa: E402
from vesselfield.metrics.centerline import centerline_overlap  # noqa: E402

MASK_SPACING = (0.4, 0.4, 1.0)
TUBE_LENGTH_MM = 24.0
END_MARGIN_MM = 2.0
NAN = float("nan")

# Every key of kimimaro's TEASAR parameters, in mm (its "physical units" are those of ``anisotropy``).
TEASAR_PARAMS = {
    "scale": 1.5,  # rolling-ball invalidation radius = scale * DBF + const (kimimaro README: 1.5)
    "const": 1.0,  # mm: about the smallest vessel radius of interest
    "pdrf_scale": 100000,  # README's recommended penalty field
    "pdrf_exponent": 4,
    "soma_acceptance_threshold": 1e6,  # mm: no vessel is a soma, so soma handling is off
    "soma_detection_threshold": 1e6,
    "soma_invalidation_const": 0.0,
    "soma_invalidation_scale": 1.0,
    "max_paths": None,
}
# kimimaro's default dust_threshold (1000 voxels) drops the R 0.8 mm tube's mask (~300 voxels at 0.4 x 0.4 x
# 1.0 mm) and returns no skeleton: 0 keeps every object (one per phantom here).
KIMIMARO_DUST_THRESHOLD = 0


# ------------------------------------------------------------------------------------ phantoms
class Case:
    """One phantom: its wall function, box, and the truth the metrics need."""

    def __init__(self, name, family, fn, lo, hi, sdf_spacing, **truth):
        self.name, self.family, self.fn = name, family, fn
        self.lo, self.hi = np.asarray(lo, float), np.asarray(hi, float)
        self.sdf_spacing = sdf_spacing
        self.truth = truth

    # -- reference axis (for OV / AI) and true radius at points
    def reference(self, pred):
        if self.family in ("tube", "stenosis"):
            along = pred @ OBLIQUE
            x = np.arange(along.min(), along.max() + 1e-9, 0.1)
            return x[:, None] * OBLIQUE, self.radius_along(x)
        refs, rads = [], []
        for a, b, r, _ in self.truth["capsules"]:
            n = int(np.ceil(np.linalg.norm(b - a) / 0.1)) + 1
            t = np.linspace(0.0, 1.0, n)[:, None]
            refs.append(a + t * (b - a))
            rads.append(np.full(n, r))
        return np.concatenate(refs), np.concatenate(rads)

    def radius_along(self, x):
        if self.family == "tube":
            return np.full(len(x), self.truth["R"])
        r0, f, length = self.truth["r0"], self.truth["f"], self.truth["L"]
        inside = np.abs(x) < 0.5 * length
        return r0 * (1 - f * inside * (1 + np.cos(2 * np.pi * x / length)) / 2)

    def true_radius(self, pts):
        """(true radius, keep) at each point: keep = away from the ends (and the branch point)."""
        if self.family in ("tube", "stenosis"):
            x = pts @ OBLIQUE
            return self.radius_along(x), np.abs(x) < self.truth["half"] - END_MARGIN_MM
        dists, ts, lens = [], [], []
        for a, b, _, _ in self.truth["capsules"]:
            ab = b - a
            t = np.clip(((pts - a) @ ab) / (ab @ ab), 0.0, 1.0)
            dists.append(np.linalg.norm(pts - (a + t[:, None] * ab), axis=1))
            ts.append(t)
            lens.append(np.linalg.norm(ab))
        dists, ts = np.stack(dists), np.stack(ts)
        k = np.argmin(dists, axis=0)
        radii = np.array([c[2] for c in self.truth["capsules"]])[k]
        t = ts[k, np.arange(len(pts))]
        length = np.asarray(lens)[k]
        free_at_a = np.array([c[3] for c in self.truth["capsules"]])[k]  # the capsule's free end is a (parent)
        to_free = np.where(free_at_a, t * length, (1 - t) * length)
        keep = (to_free > END_MARGIN_MM) & (np.linalg.norm(pts, axis=1) > 2 * self.truth["parent_r"])
        return radii, keep


def make_cases(quick: bool) -> list[Case]:
    cases = []
    for radius in (0.8, 1.5, 2.5):
        if quick and radius != 1.5:
            continue
        fn, lo, hi = tube_case(radius, TUBE_LENGTH_MM)
        cases.append(Case(f"tube R{radius:g}", "tube", fn, lo, hi, 0.2 if radius < 1.0 else 0.25,
                          R=radius, half=TUBE_LENGTH_MM / 2, ends=2, branch_pts=0))
    for f, length in ((0.3, 10.0), (0.5, 6.0), (0.7, 4.0)):
        if quick and f != 0.5:
            continue
        fn, lo, hi, _ = stenosis_case(2.0, f, length)
        cases.append(Case(f"stenosis {int(100 * f)}% L{length:g}", "stenosis", fn, lo, hi, 0.25,
                          r0=2.0, f=f, L=length, half=12.0, ends=2, branch_pts=0))
    for a1, a2, label in ((35.0, 50.0, "Y 35/50"), (90.0, 90.0, "T 90/90")):
        if quick and label.startswith("T"):
            continue
        fn, lo, hi, child_r = bifurcation_case(a1, a2)
        # The capsules exactly as bifurcation_case builds them (parent_r 2, length 15).
        rot = rotation()
        d1 = rot @ np.array([np.cos(np.radians(a1)), np.sin(np.radians(a1)), 0])
        d2 = rot @ np.array([np.cos(np.radians(a2)), -np.sin(np.radians(a2)), 0])
        start, o = rot @ np.array([-15.0, 0.0, 0.0]), np.zeros(3)
        capsules = [(start, o, 2.0, True), (o, 15.0 * d1, child_r, False), (o, 15.0 * d2, child_r, False)]
        cases.append(Case(label, "bifurcation", fn, lo, hi, 0.25, capsules=capsules, parent_r=2.0, ends=3,
                          branch_pts=1))
    return cases


# ------------------------------------------------------------------------------------- methods
def run_ours(volume, grid, kind):
    t0 = time.perf_counter()
    tree = analyze(volume.astype(np.uint8) if kind == "mask" else volume, grid)
    seconds = time.perf_counter() - t0
    pts = np.concatenate([s.points_mm for s in tree.segments])
    rad = np.concatenate([np.where(s.valid, s.radius_area_mm, np.nan) for s in tree.segments])
    out = {"points": pts, "radius": rad, "time_s": seconds, "note": "",
           "branch_pts": sum(n.degree >= 3 for n in tree.nodes), "ends": sum(n.degree == 1 for n in tree.nodes),
           "lesions": tree.lesions}
    return out


def _neighbour_counts(skel: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    counts = ndimage.convolve(skel.astype(np.uint8), np.ones((3, 3, 3), np.uint8), mode="constant")
    return counts.astype(np.int32) - 1


def resample_nearest(mask: np.ndarray, grid: VolumeGrid) -> tuple[np.ndarray, VolumeGrid]:
    """The mask on an isotropic grid at its finest spacing over the same box, nearest neighbour."""
    h = float(min(grid.spacing_mm))
    lo, hi = grid.bounds_mm
    shape = np.round((hi - lo) / h).astype(int)
    new = VolumeGrid(tuple(int(s) for s in shape), (h, h, h), tuple(lo + 0.5 * h))
    idx = [np.clip(np.floor((new.axes_mm()[a] - lo[a]) / grid.spacing_mm[a]).astype(int), 0, grid.shape[a] - 1)
           for a in range(3)]
    return mask[np.ix_(*idx)], new


def run_skimage(volume, grid, kind):
    from scipy import ndimage
    from skimage.morphology import skeletonize

    t0 = time.perf_counter()
    mask = volume < 0 if kind == "sdf" else np.asarray(volume, bool)
    if not np.allclose(grid.spacing_mm, grid.spacing_mm[0]):
        mask, grid = resample_nearest(mask, grid)
    skel = skeletonize(mask).astype(bool)
    edt = ndimage.distance_transform_edt(mask, sampling=grid.spacing_mm)
    idx = np.argwhere(skel)
    pts = grid.origin + idx * grid.spacing
    rad = edt[skel]
    seconds = time.perf_counter() - t0
    nb = _neighbour_counts(skel)
    junction = skel & (nb > 2)
    _, n_junctions = ndimage.label(junction, structure=np.ones((3, 3, 3)))
    ends = int((skel & (nb == 1)).sum() + 2 * (skel & (nb == 0)).sum())
    return {"points": pts, "radius": rad, "time_s": seconds, "note": "", "branch_pts": int(n_junctions),
            "ends": ends}


def run_kimimaro(volume, grid, kind):
    import kimimaro
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    t0 = time.perf_counter()
    labels = (volume < 0 if kind == "sdf" else np.asarray(volume, bool)).astype(np.uint32)
    skels = kimimaro.skeletonize(labels, anisotropy=tuple(grid.spacing_mm), fix_branching=True, fix_borders=True,
                                 progress=False, parallel=1, teasar_params=dict(TEASAR_PARAMS),
                                 dust_threshold=KIMIMARO_DUST_THRESHOLD)
    seconds = time.perf_counter() - t0
    if 1 not in skels:
        raise RuntimeError(f"kimimaro returned no skeleton for label 1 (labels {sorted(skels)})")
    s = skels[1]
    verts = np.asarray(s.vertices, float)
    edges = np.asarray(s.edges, int).reshape(-1, 2)
    pts = verts + grid.origin
    deg = np.bincount(edges.ravel(), minlength=len(verts))
    junction = deg >= 3
    jj = edges[junction[edges[:, 0]] & junction[edges[:, 1]]]
    jid = np.nonzero(junction)[0]
    n_junctions = 0
    if len(jid):
        remap = -np.ones(len(verts), int)
        remap[jid] = np.arange(len(jid))
        adj = coo_matrix((np.ones(len(jj)), (remap[jj[:, 0]], remap[jj[:, 1]])), shape=(len(jid),) * 2)
        n_junctions = connected_components(adj, directed=False)[0]
    note = f"{len(skels)} skeletons" if len(skels) > 1 else ""
    return {"points": pts, "radius": np.asarray(s.radius, float), "time_s": seconds, "note": note,
            "branch_pts": int(n_junctions), "ends": int((deg == 1).sum())}


METHODS = {"ours": run_ours, "skimage+EDT": run_skimage, "kimimaro": run_kimimaro}


# ------------------------------------------------------------------------------------- metrics
def baseline_stenosis(case: Case, pts, rad):
    x = pts @ OBLIQUE
    length = case.truth["L"]
    lesion = np.abs(x) < 0.5 * length
    healthy = (np.abs(x) > 0.5 * length + case.truth["r0"]) & (np.abs(x) < case.truth["half"] - END_MARGIN_MM)
    if not lesion.any() or not healthy.any():
        return NAN, NAN
    mld = 2 * float(np.min(rad[lesion]))
    ref = 2 * float(np.median(rad[healthy]))
    return mld, 100 * (1 - mld / ref)


def score(case: Case, res: dict, method: str) -> dict:
    pts, rad = res["points"], res["radius"]
    ref, ref_r = case.reference(pts)
    m = centerline_overlap(pts, ref, ref_r)
    r_true, keep = case.true_radius(pts)
    keep &= np.isfinite(rad)
    err = rad[keep] - r_true[keep]
    row = {"AI_mm": m["AI_mm"], "OV": m["OV"], "r_bias_mm": float(err.mean()) if err.size else NAN,
           "r_MAE_mm": float(np.abs(err).mean()) if err.size else NAN, "r_pts": int(keep.sum()),
           "MLD_err_mm": NAN, "DS_err_pts": NAN, "branch_pts": res["branch_pts"],
           "spurs": res["ends"] - case.truth["ends"], "time_s": res["time_s"], "note": res["note"]}
    if case.family == "stenosis":
        r0, f = case.truth["r0"], case.truth["f"]
        if method == "ours":
            lesions = res["lesions"]
            if lesions:
                les = min(lesions, key=lambda q: np.linalg.norm(q.point_mm))
                mld, ds = les.mld_mm, les.percent_diameter_stenosis
            else:
                mld = ds = NAN
            if len(lesions) != 1:
                row["note"] = (row["note"] + f" {len(lesions)} lesions").strip()
        else:
            mld, ds = baseline_stenosis(case, pts, rad)
        row["MLD_err_mm"] = mld - 2 * r0 * (1 - f)
        row["DS_err_pts"] = ds - 100 * f
    return row


COLUMNS = ["phantom", "input", "method", "AI_mm", "OV", "r_bias_mm", "r_MAE_mm", "r_pts", "MLD_err_mm",
           "DS_err_pts", "branch_pts", "spurs", "time_s", "note"]


def fmt(v, key):
    if isinstance(v, str):
        return v
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if key == "OV":
        return f"{v:.3f}"
    if key in ("time_s",):
        return f"{v:.2f}"
    if key == "DS_err_pts":
        return f"{v:+.1f}"
    return f"{v:+.3f}" if key in ("r_bias_mm", "MLD_err_mm") else f"{v:.3f}"


def markdown(rows, columns):
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(c, ""), c).replace("|", "/") for c in columns) + " |")
    return "\n".join(lines)


def warm_up() -> None:
    """One untimed run of every method on a small tube (imports, first-call set-up)."""
    fn, lo, hi = tube_case(1.5, 10.0)
    g = box_grid(lo, hi, 0.3)
    volume = sample(fn, g)
    for method in METHODS.values():
        method(volume, g, "sdf")


def accuracy(quick: bool, out_csv: str | None) -> None:
    warm_up()
    rows = []
    for case in make_cases(quick):
        inputs = []
        g = box_grid(case.lo, case.hi, case.sdf_spacing)
        inputs.append((f"SDF {case.sdf_spacing:g} mm", sample(case.fn, g), g, "sdf"))
        g = box_grid(case.lo, case.hi, MASK_SPACING)
        inputs.append(("mask 0.4x0.4x1.0", ct_like_mask(case.fn, g), g, "mask"))
        for label, volume, grid, kind in inputs:
            for method, fn in METHODS.items():
                row = {"phantom": case.name, "input": label, "method": method}
                try:
                    result = fn(volume, grid, kind)
                except Exception as exc:  # a failing method is a result, not a crash
                    msg = " ".join(f"{type(exc).__name__}: {exc}".split())
                    row.update({c: NAN for c in COLUMNS[3:-1]})
                    row["note"] = msg[:160]
                else:
                    row.update(score(case, result, method))
                rows.append(row)
                print(f"  {case.name:20s} {label:18s} {method:12s} AI {fmt(row['AI_mm'], 'AI_mm')} "
                      f"MAE {fmt(row['r_MAE_mm'], 'r_MAE_mm')} t {fmt(row['time_s'], 'time_s')} s {row['note']}",
                      file=sys.stderr, flush=True)
    print(markdown(rows, COLUMNS))
    if out_csv:
        with open(out_csv, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=COLUMNS)
            w.writeheader()
            for r in rows:
                w.writerow({c: r.get(c, "") for c in COLUMNS})
        print(f"\nwritten {out_csv}", file=sys.stderr)


# --------------------------------------------------------------------------------------- speed
CACHE = Path("/tmp")
SDF_CACHE = CACHE / "vf_bench_coronary_sdf200.npy"
MASK_CACHE = CACHE / "vf_bench_coronary_mask512x512x256.npy"
GRIDS_CACHE = CACHE / "vf_bench_coronary_grids.json"  # so that a measurement process needs neither torch nor the tree


def coronary_grids():
    from vesselfield.phantoms.coronary import coronary_tree

    tree = coronary_tree("left")
    lo, hi = tree.bounds_mm()
    lo, hi = lo - 2.0, hi + 2.0
    h = float((hi - lo).max()) / 200
    sdf_grid = VolumeGrid.centered((200, 200, 200), h, (lo + hi) / 2)
    mask_grid = VolumeGrid.centered((512, 512, 256), MASK_SPACING, (lo + hi) / 2)
    return tree, sdf_grid, mask_grid


def build_caches() -> None:
    from vesselfield.phantoms.sdf import sdf_volume

    tree, sdf_grid, mask_grid = coronary_grids()
    GRIDS_CACHE.write_text(json.dumps({"sdf": sdf_grid.to_dict(), "mask": mask_grid.to_dict()}))
    if not SDF_CACHE.exists():
        t0 = time.perf_counter()
        np.save(SDF_CACHE, sdf_volume(tree, sdf_grid))
        print(f"built {SDF_CACHE} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    if not MASK_CACHE.exists():
        t0 = time.perf_counter()
        mask = np.zeros(mask_grid.shape, bool)
        step = 32
        for i in range(0, mask_grid.shape[0], step):
            n = min(step, mask_grid.shape[0] - i)
            sub = VolumeGrid((n,) + mask_grid.shape[1:], mask_grid.spacing_mm,
                             tuple(mask_grid.origin + np.array([i, 0, 0]) * mask_grid.spacing))
            mask[i:i + n] = sdf_volume(tree, sub, max_distance_mm=1.0) < 0  # only the sign is kept
        np.save(MASK_CACHE, mask)
        print(f"built {MASK_CACHE} ({int(mask.sum())} voxels inside) in {time.perf_counter() - t0:.0f} s",
              file=sys.stderr)


def measure_one(which: str, max_memory_gb: float | None) -> dict:
    """In this (fresh) process: load the cached volume, time ``analyze``, report peak RSS."""
    from vesselfield.analysis import AnalysisConfig

    grid = VolumeGrid.from_dict(json.loads(GRIDS_CACHE.read_text())[which])
    volume = np.load(SDF_CACHE if which == "sdf" else MASK_CACHE)
    if which == "mask":
        volume = volume.astype(np.uint8)
    config = AnalysisConfig() if max_memory_gb is None else AnalysisConfig(max_memory_gb=max_memory_gb)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    hwm_before = _vm_hwm_mib()
    t0 = time.perf_counter()
    out = {"error": ""}
    try:
        tree = analyze(volume, grid, config=config)
        out.update(segments=len(tree.segments), bifurcations=len(tree.bifurcations), lesions=len(tree.lesions),
                   details={k: v for k, v in tree.details.items() if k.endswith("_s")})
    except Exception as exc:
        out["error"] = " ".join(f"{type(exc).__name__}: {exc}".split())
    out["seconds"] = time.perf_counter() - t0
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    out["rss_before_mib"], out["hwm_before_mib"], out["hwm_mib"] = rss_before, hwm_before, _vm_hwm_mib()
    return out


def _vm_hwm_mib() -> float:
    """This process's own peak RSS (VmHWM, reset by execve, unlike ru_maxrss which Linux keeps across it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return NAN


def speed() -> None:
    import re

    # The caches are built in their own process: Linux keeps ru_maxrss across fork + execve, so a
    # measurement started from a parent that built them would inherit the parent's peak.
    subprocess.run([sys.executable, __file__, "--_build-caches"], check=True)
    grids = {k: VolumeGrid.from_dict(v) for k, v in json.loads(GRIDS_CACHE.read_text()).items()}
    plan = [("sdf", None), ("mask", None)]
    rows = []
    while plan:
        which, mem = plan.pop(0)
        cmd = [sys.executable, __file__, "--_measure", which] + ([] if mem is None else ["--_max-memory-gb", str(mem)])
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
        if proc.returncode != 0:
            res = {"error": (proc.stderr.strip().splitlines() or ["?"])[-1], "seconds": NAN, "peak_rss_mib": NAN,
                   "rss_before_mib": NAN, "hwm_mib": NAN}
        else:
            res = json.loads(proc.stdout.strip().splitlines()[-1])
        grid = grids[which]
        shape = "x".join(str(s) for s in grid.shape)
        spacing = "x".join(f"{s:.3g}" for s in grid.spacing_mm)
        det = res.get("details", {})
        outside = res["seconds"] - det["total_s"] if "total_s" in det else NAN
        rows.append({"input": f"{which} {shape} @ {spacing} mm", "config": "default" if mem is None else
                     f"max_memory_gb={mem:g}", "time_s": res["seconds"], "outside_total_s": outside,
                     "peak_rss_MiB": res["peak_rss_mib"], "rss_before_MiB": res["rss_before_mib"],
                     "VmHWM_MiB": res.get("hwm_mib", NAN),
                     "segments": res.get("segments", "–"), "bifurcations": res.get("bifurcations", "–"),
                     "stages_s": " ".join(f"{k[:-2]} {v:.1f}" for k, v in det.items()),
                     "note": res["error"][:200]})
        print(f"  {rows[-1]}", file=sys.stderr, flush=True)
        wanted = re.search(r"max_memory_gb ([0-9.]+)", res["error"]) if res["error"] else None
        need = re.search(r"needs? about ([0-9.]+) GB", res["error"]) if res["error"] else None
        if mem is None and wanted and need:
            plan.append((which, math.ceil(float(need.group(1)) + 0.5)))
    cols = ["input", "config", "time_s", "outside_total_s", "peak_rss_MiB", "rss_before_MiB", "VmHWM_MiB",
            "segments", "bifurcations", "stages_s", "note"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        cells = []
        for c in cols:
            v = r[c]
            cells.append("–" if isinstance(v, float) and math.isnan(v) else
                         f"{v:.1f}" if isinstance(v, float) and c.endswith("_s") else
                         f"{v:.0f}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    print("\n".join(lines))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="R 1.5 tube, 50 %% stenosis and Y only")
    p.add_argument("--out", help="CSV of the accuracy rows")
    p.add_argument("--speed", action="store_true", help="the coronary speed section instead of the accuracy")
    p.add_argument("--_measure", choices=("sdf", "mask"), help=argparse.SUPPRESS)
    p.add_argument("--_max-memory-gb", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--_build-caches", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._build_caches:
        build_caches()
        return
    if args._measure:
        print(json.dumps(measure_one(args._measure, args._max_memory_gb)))
        return
    if args.speed:
        speed()
    else:
        accuracy(args.quick, args.out)


if __name__ == "__main__":
    main()
