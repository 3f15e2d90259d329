"""CT datasets without downloads, in the MSD layout: for tests, demos and benchmarks.

- :func:`make_phantom_ct_dataset`: random branching tubes (radii 1-4 mm) with CT-like images
  (:func:`vesselfield.phantoms.ct.ct_like_image`), one seed per case.
- :func:`make_hepatic_ct_dataset`: the real hepatic label volumes of ``data/samples/hepatic_msd``
  (MSD Task08: 0 background, 1 vessel, 2 tumour) with a synthesised portal-venous CT.
- :func:`make_vmtk_aorta_dataset`: the real CT of the vmtk aorta with its label (level set < 0),
  as one case or split along z into slabs (a train/test split by region).

Each writes its folder with :func:`vesselfield.datasets.msd.write_msd_dataset` (atomically,
``dataset.json`` last) and returns a :class:`~vesselfield.io.run_folder.RunSummary`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vesselfield.datasets.msd import BINARY_LABELS, CaseVolumes, write_msd_dataset
from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid
from vesselfield.io.run_folder import RunSummary

#: MSD Task08's labels, as published.
HEPATIC_LABELS = {0: "background", 1: "Vessel", 2: "Tumour"}
HEPATIC_CASES = ("002", "008", "010")
#: Portal-venous phase intensities (HU) of the synthesised hepatic CT: enhanced liver
#: parenchyma about 100 HU, portal and hepatic veins about 180 HU, hypovascular tumours
#: (metastases) about 40 HU, i.e. vessel brighter and tumour darker than the liver.
LIVER_HU, HEPATIC_VESSEL_HU, TUMOUR_HU = 100.0, 180.0, 40.0
AORTA_LABELS = {0: "background", 1: "aorta"}


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise VesselfieldError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# ------------------------------------------------------------------------------- random tubes
def random_tube_segments(rng: np.random.Generator, grid: VolumeGrid, *, radius_range_mm=(1.0, 4.0),
                         step_mm: float = 5.0, max_depth: int = 2, branch_probability: float = 0.45) -> np.ndarray:
    """Segments of two random branching vessel trees crossing ``grid``'s box.

    One trunk enters through the low-z face and runs along +z (vessels crossing the axial
    slices), a second through a low-x or low-y face and runs in-plane (vessels that sparse
    axial slices cut obliquely). Each tree is a random walk of ``step_mm`` steps (direction
    jittered by a Gaussian of 0.3 per step) whose radius tapers by 0-10 % per step; at each
    step a branch leaves with ``branch_probability`` at 35-75 degrees with 0.55-0.8 of the
    parent radius, down to ``max_depth`` levels. Radii stay within ``radius_range_mm``; walks
    stop one step outside the box.

    Returns:
        (S, 8) float64: ``a (3), b (3), radius_a, radius_b`` per segment, LPS mm.
    """
    r_min, r_max = (float(r) for r in radius_range_mm)
    lo, hi = grid.bounds_mm
    extent = hi - lo
    segments: list[list[float]] = []

    def unit(v):
        return v / np.linalg.norm(v)

    def grow(start, direction, radius, depth, max_steps):
        p, d, r = np.asarray(start, float), unit(np.asarray(direction, float)), radius
        for _ in range(max_steps):
            d = unit(d + 0.3 * rng.normal(size=3))
            q = p + d * step_mm * rng.uniform(0.7, 1.3)
            r_next = max(r_min, r * rng.uniform(0.9, 1.0))
            segments.append([*p, *q, r, r_next])
            if depth < max_depth and rng.random() < branch_probability and r_next * 0.55 >= r_min:
                side = unit(np.cross(d, rng.normal(size=3)))
                angle = np.deg2rad(rng.uniform(35.0, 75.0))
                child = np.cos(angle) * d + np.sin(angle) * side
                grow(q, child, max(r_min, r_next * rng.uniform(0.55, 0.8)), depth + 1, int(rng.integers(2, 5)))
            p, r = q, r_next
            if np.any(p < lo - step_mm) or np.any(p > hi + step_mm):
                break

    longest = int(np.ceil(extent.max() / (0.7 * step_mm))) + 2
    # Trunk 1: from the low-z face, in the middle 60 % of x and y, upwards.
    start = lo + extent * np.r_[rng.uniform(0.2, 0.8, 2), 0.0]
    grow(start, [0.0, 0.0, 1.0], rng.uniform(max(r_min, 0.75 * r_max), r_max), 0, longest)
    # Trunk 2: from the low-x or low-y face, mid-height, across the slices.
    axis = int(rng.integers(0, 2))
    start = lo + extent * rng.uniform(0.25, 0.75, 3)
    start[axis] = lo[axis]
    direction = np.zeros(3)
    direction[axis] = 1.0
    grow(start, direction, rng.uniform(max(r_min, 0.5 * r_max), 0.85 * r_max), 0, longest)
    return np.asarray(segments, dtype=np.float64)


def tube_distance(segments: np.ndarray, grid: VolumeGrid, max_distance_mm: float) -> np.ndarray:
    """(X, Y, Z) float32 approximate signed distance (mm) of a union of tapered tubes on ``grid``.

    Per segment ``|p - a - t (b - a)| - r(t)``, ``t`` the clamped projection of ``p`` and
    ``r(t)`` the linearly interpolated radius (exact for constant radius; for the slow tapers of
    :func:`random_tube_segments` it differs from the exact cone distance by less than the
    radius change times the cone's slope). Only voxels within ``max_distance_mm`` of a segment's
    box are visited (vectorised per segment); others hold ``max_distance_mm``.
    """
    out = np.full(grid.shape, float(max_distance_mm), dtype=np.float32)
    axes = grid.axes_mm()
    for seg in np.asarray(segments, dtype=np.float64):
        a, b, ra, rb = seg[:3], seg[3:6], seg[6], seg[7]
        reach = max(ra, rb) + max_distance_mm
        box_lo = np.minimum(a, b) - reach
        box_hi = np.maximum(a, b) + reach
        index = []
        for k in range(3):
            i0, i1 = np.searchsorted(axes[k], [box_lo[k], box_hi[k]])
            index.append(slice(int(i0), int(i1)))
        if any(s.stop <= s.start for s in index):
            continue
        x, y, z = np.meshgrid(*(axes[k][index[k]] for k in range(3)), indexing="ij")
        p = np.stack([x, y, z], axis=-1)
        ab = b - a
        t = np.clip(((p - a) @ ab) / max(float(ab @ ab), 1e-12), 0.0, 1.0)
        d = np.linalg.norm(p - a - t[..., None] * ab, axis=-1) - (ra + t * (rb - ra))
        block = out[tuple(index)]
        np.minimum(block, d.astype(np.float32), out=block)
    return out


def phantom_case(seed, shape=(64, 64, 32), spacing_mm=(0.8, 0.8, 0.8)) -> CaseVolumes:
    """One random-tube CT case (unnamed): image (float32 HU), label (uint8 0/1) and grid.

    The occupancy is a partial-volume ramp, ``clip(0.5 - d / h, 0, 1)`` with ``d`` the tube
    distance (:func:`tube_distance`) and ``h`` the smallest spacing (1 inside, 0 outside, linear
    across one voxel at the wall); the label is ``d < 0``; the image is
    ``ct_like_image(occupancy, grid, seed)`` (contrast-enhanced vessels, 350 HU on 40 HU tissue).
    ``seed`` is an int or a sequence of ints (a :class:`numpy.random.SeedSequence` entropy).
    """
    from vesselfield.phantoms.ct import ct_like_image

    grid = VolumeGrid.centered(shape, spacing_mm)
    sequence = np.random.SeedSequence(seed)
    rng = np.random.default_rng(sequence)
    h = float(grid.spacing.min())
    distance = tube_distance(random_tube_segments(rng, grid), grid, max_distance_mm=2.0 * h)
    occupancy = np.clip(0.5 - distance / h, 0.0, 1.0)
    label = (distance < 0).astype(np.uint8)
    image_seed = int(sequence.generate_state(1)[0])
    return CaseVolumes("", ct_like_image(occupancy, grid, seed=image_seed), label, grid)


def make_phantom_ct_dataset(out, n_cases: int = 4, shape: Sequence[int] = (64, 64, 32),
                            spacing_mm: Sequence[float] = (0.8, 0.8, 0.8), seed: int = 0, *,
                            progress: bool = False) -> RunSummary:
    """``n_cases`` random-tube CT phantoms (:func:`phantom_case`) as an MSD dataset in ``out``.

    Case ``i`` is ``phantom_{i:03d}`` from the seed sequence ``(seed, i)``: the same ``seed``
    gives the same dataset, and each case differs. Labels ``0 background, 1 vessel``; grids
    centred on the origin.
    """
    n_cases = _check_int(n_cases, "n_cases", 1)
    seed = _check_int(seed, "seed", 0)
    grid = VolumeGrid.centered(shape, spacing_mm)  # validates shape and spacing
    if min(grid.shape) < 2:
        raise VesselfieldError(f"shape must have at least 2 voxels per axis, got {grid.shape}")

    def cases():
        for i in range(n_cases):
            case = phantom_case((seed, i), grid.shape, grid.spacing_mm)
            case.name = f"phantom_{i:03d}"
            yield case

    out = Path(out)
    names = write_msd_dataset(out, cases(), labels=BINARY_LABELS, name="vesselfield_phantoms",
                              description=f"random branching tubes, CT-like images, seed {seed}",
                              vesselfield={"synthetic": "phantoms", "seed": seed, "shape": list(grid.shape),
                                           "spacing_mm": list(grid.spacing_mm)},
                              progress=progress)
    return RunSummary(verb="data synth-ct phantoms", out_dir=out, files={"dataset": out / "dataset.json"},
                      lines=[(f"{len(names)} phantom case(s), shape {grid.shape}, spacing {grid.spacing_mm} mm, "
                              f"seed {seed}")])


# ------------------------------------------------------------------------------- hepatic
def _block_fractions(labels: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """(vessel, tumour) fractions of each ``factor x factor x 1`` block of a label volume."""
    x, y, z = labels.shape
    shape = (x // factor, factor, y // factor, factor, z)
    fractions = []
    for value in (1, 2):
        part = (labels[: shape[0] * factor, : shape[2] * factor] == value).reshape(shape)
        fractions.append(part.mean(axis=(1, 3), dtype=np.float32))
    return fractions[0], fractions[1]


def hepatic_case(label_path, seed: int, inplane_factor: int = 1, crop_margin_mm: float | None = None) -> CaseVolumes:
    """One hepatic case (unnamed): the label volume as published and a synthesised CT.

    Args:
        label_path: an MSD Task08 label volume (0 background, 1 vessel, 2 tumour).
        seed: the image's noise and texture seed.
        inplane_factor: F >= 1: blocks of F x F in-plane voxels become one (slices unchanged);
            each output voxel's vessel / tumour fractions are the block's, its label the class
            with the largest fraction (ties go to vessel, then tumour), its grid spacing F times
            the source's and its centre the block's centre. X and Y are cut to multiples of F.
        crop_margin_mm: when given, first crop in-plane to the labels' bounding box plus this
            margin (all slices kept).

    The CT: ``ct_like_image`` of the vessel fraction on a liver-like background (vessel
    :data:`HEPATIC_VESSEL_HU`, liver :data:`LIVER_HU`), plus the tumour fraction times
    ``TUMOUR_HU - LIVER_HU`` blurred by the same point-spread function (the image chain is
    linear, so this is the chain applied to the three-tissue mixture, with the tissue texture
    kept inside the tumour).
    """
    from scipy.ndimage import gaussian_filter

    from vesselfield.io.volumes import load_volume
    from vesselfield.phantoms.ct import ct_like_image

    labels, grid = load_volume(label_path, what="hepatic label volume")
    labels = np.asarray(labels)
    origin = grid.origin.copy()
    if crop_margin_mm is not None:
        if not np.isfinite(crop_margin_mm) or crop_margin_mm < 0:
            raise VesselfieldError(f"crop_margin_mm must be >= 0, got {crop_margin_mm}")
        hit = np.argwhere(np.any(labels > 0, axis=2))
        margin = np.ceil(float(crop_margin_mm) / grid.spacing[:2]).astype(int)
        start = np.maximum(hit.min(axis=0) - margin, 0)
        stop = np.minimum(hit.max(axis=0) + 1 + margin, labels.shape[:2])
        labels = labels[start[0]:stop[0], start[1]:stop[1]]
        origin[:2] += start * grid.spacing[:2]
    factor = _check_int(inplane_factor, "inplane_factor", 1)
    if factor > min(labels.shape[:2]):
        raise VesselfieldError(f"inplane_factor {factor} is larger than the volume ({labels.shape[:2]} in plane)")
    vessel, tumour = _block_fractions(labels, factor)
    spacing = grid.spacing * np.array([factor, factor, 1])
    origin[:2] += (factor - 1) / 2.0 * grid.spacing[:2]  # the centre of block (0, 0)
    out_grid = VolumeGrid(vessel.shape, tuple(spacing), tuple(origin))
    background = 1.0 - vessel - tumour
    label = np.zeros(vessel.shape, dtype=np.uint8)
    label[(tumour > vessel) & (tumour >= background)] = 2
    label[(vessel > 0) & (vessel >= tumour) & (vessel >= background)] = 1
    image = ct_like_image(vessel, out_grid, seed=seed, vessel_hu=HEPATIC_VESSEL_HU, background_hu=LIVER_HU)
    # ct_like_image's default point-spread function: 0.6 mm in every direction.
    image += gaussian_filter(tumour * np.float32(TUMOUR_HU - LIVER_HU), sigma=0.6 / out_grid.spacing, mode="nearest")
    return CaseVolumes("", image.astype(np.float32), label, out_grid)


def make_hepatic_ct_dataset(out, seed: int = 0, *, inplane_factor: int = 1, crop_margin_mm: float | None = None,
                            progress: bool = False) -> RunSummary:
    """The shared hepatic labels (``data/samples/hepatic_msd``, 3 cases) with synthesised CT.

    Cases ``hepaticvessel_002``, ``_008``, ``_010`` (MSD Task08 names), labels as published
    (``0 background, 1 Vessel, 2 Tumour``), image seeds ``seed + i``; 512 x 512 x {66, 47, 49}
    voxels unless reduced by ``inplane_factor`` / ``crop_margin_mm`` (:func:`hepatic_case`):
    ``inplane_factor=4`` gives 128 x 128 in-plane voxels of 3.4-3.8 mm, small enough for CPU
    benchmarks.
    """
    from vesselfield.io import sample_path

    seed = _check_int(seed, "seed", 0)
    factor = _check_int(inplane_factor, "inplane_factor", 1)
    paths = [sample_path("hepatic_msd", f"hepaticvessel_{c}_vsnet.nii.gz") for c in HEPATIC_CASES]

    def cases():
        for i, (number, path) in enumerate(zip(HEPATIC_CASES, paths)):
            case = hepatic_case(path, seed + i, factor, crop_margin_mm)
            case.name = f"hepaticvessel_{number}"
            yield case

    out = Path(out)
    write_msd_dataset(out, cases(), labels=HEPATIC_LABELS, name="hepatic_synthetic_ct",
                      description="MSD Task08 hepatic vessel labels (data/samples/hepatic_msd) with synthesised CT",
                      vesselfield={"synthetic": "hepatic", "seed": seed, "inplane_factor": factor,
                                   "crop_margin_mm": crop_margin_mm},
                      progress=progress)
    crop = f", cropped to the labels + {crop_margin_mm:g} mm" if crop_margin_mm is not None else ""
    return RunSummary(verb="data synth-ct hepatic", out_dir=out, files={"dataset": out / "dataset.json"},
                      lines=[(f"{len(HEPATIC_CASES)} hepatic case(s) (labels 1 Vessel, 2 Tumour), in-plane factor "
                              f"{factor}{crop}, seed {seed}")])


# ------------------------------------------------------------------------------- vmtk aorta
def make_vmtk_aorta_dataset(out, regions: int = 1, *, axis: int = 2, crop_to_label: bool = False,
                            progress: bool = False) -> RunSummary:
    """The vmtk aorta's real CT with its label (final level set < 0) as an MSD dataset.

    ``data/samples/vmtk_aorta/aorta.mha`` (157 x 393 x 34, 0.878906 x 0.878906 x 1.50009 mm;
    intensities as stored, 0-2570, not calibrated HU) and ``aorta-final-levelset.mha`` on the
    same grid. ``regions=1``: one case ``aorta``. ``regions=R``: the volume is cut along z into
    R slabs of consecutive slices (``numpy.array_split`` of the 34 slices: sizes differ by at most
    one, e.g. 17 + 17 for R = 2), cases ``aorta_part0`` (lowest z) ... ``aorta_part{R-1}``, each
    on its own grid at its true world position: a train/test split by region. Labels
    ``0 background, 1 aorta``. Every slab must hold aorta voxels (the aorta spans slices 9-23).

    ``axis`` (0, 1 or 2) is the array axis the regions are cut along (default z). The aorta runs
    along y in this scan (its long axis), and the level set labels only its lower part, the
    bifurcation and the iliac arteries: the contrast-filled aorta above is in the image but not
    in the label. ``crop_to_label=True`` first crops the volume along ``axis`` to the label's
    extent, so that every bright vessel in a region is labelled; ``axis=1, crop_to_label=True,
    regions=2`` cuts the labelled vessel in two along its length (upper and lower half), the
    split by region the VesselSDF benchmark uses.
    """
    from vesselfield.io import sample_path
    from vesselfield.io.volumes import load_volume

    regions = _check_int(regions, "regions", 1)
    image, grid = load_volume(sample_path("vmtk_aorta", "aorta.mha"), what="CT image")
    level, level_grid = load_volume(sample_path("vmtk_aorta", "aorta-final-levelset.mha"), what="level set")
    grid.require_same(level_grid, "the vmtk aorta CT and its level set")
    label = (np.asarray(level) < 0).astype(np.uint8)
    if isinstance(axis, bool) or axis not in (0, 1, 2):
        raise VesselfieldError(f"axis must be 0, 1 or 2, got {axis!r}")
    first = 0
    n = grid.shape[axis]
    if crop_to_label:
        present = np.flatnonzero(np.moveaxis(label, axis, 0).reshape(n, -1).any(axis=1))
        first, n = int(present[0]), int(present[-1] - present[0] + 1)
    if regions > n // 2:
        raise VesselfieldError(f"regions must be at most {n // 2} (slabs of 2 slices or more), got {regions}")
    slabs = np.array_split(np.arange(first, first + n), regions)

    def take(array, slab):
        index = [slice(None)] * 3
        index[axis] = slice(int(slab[0]), int(slab[-1]) + 1)
        return np.ascontiguousarray(array[tuple(index)])

    for i, slab in enumerate(slabs):
        if not take(label, slab).any():
            raise VesselfieldError(f"region {i} (slices {slab[0]}-{slab[-1]}) holds no aorta voxel: use fewer regions")

    def cases():
        for i, slab in enumerate(slabs):
            shift = np.zeros(3)
            shift[axis] = slab[0] * grid.spacing[axis]
            lab = take(label, slab)
            sub_grid = VolumeGrid(lab.shape, grid.spacing_mm, tuple(grid.origin + shift))
            name = "aorta" if regions == 1 else f"aorta_part{i}"
            yield CaseVolumes(name, take(np.asarray(image, dtype=np.float32), slab), lab, sub_grid)

    out = Path(out)
    write_msd_dataset(out, cases(), labels=AORTA_LABELS, name="vmtk_aorta",
                      description="vmtk test data aorta CT; label = aorta-final-levelset.mha < 0",
                      vesselfield={"synthetic": "vmtk-aorta", "regions": regions, "axis": axis,
                                   "crop_to_label": bool(crop_to_label),
                                   "slabs": [[int(s[0]), int(s[-1])] for s in slabs]},
                      progress=progress)
    parts = ", ".join(f"slices {s[0]}-{s[-1]}" for s in slabs)
    return RunSummary(verb="data synth-ct vmtk-aorta", out_dir=out, files={"dataset": out / "dataset.json"},
                      lines=[f"vmtk aorta CT in {regions} region(s) along {'xyz'[axis]}: {parts}"])


__all__ = [
    "HEPATIC_LABELS",
    "hepatic_case",
    "make_hepatic_ct_dataset",
    "make_phantom_ct_dataset",
    "make_vmtk_aorta_dataset",
    "phantom_case",
    "random_tube_segments",
    "tube_distance",
]
