"""ImageCAS label volumes -> one occupancy volume per coronary tree on the NeCA / SDF-CAR grid.

ImageCAS (Zeng et al., "ImageCAS: A large-scale dataset and benchmark for coronary artery
segmentation based on computed tomography angiography images", Computerized Medical Imaging and
Graphics 2023) holds 1000 CCTA cases, each ``N.img.nii.gz`` (CT) and ``N.label.nii.gz`` (binary
coronary mask), about 512 x 512 x (206-275) voxels, 0.29-0.43 mm in plane, 0.25 mm slices. The
Kaggle / figshare archives (``1-200.change2zip`` + ``.z01`` parts, ...) unpack into folders of 200
cases: ``1-200/``, ``201-400/``, ... NeCA and SDF-CAR reconstruct one coronary tree at a time on a
128^3 grid of 0.8 mm voxels (a 102.4 mm cube) made from these labels.

:func:`prepare_imagecas` does that for a whole download:

1. :func:`find_label_files`: every ``*.label.nii.gz`` / ``*.label.nii`` under SRC, at any depth.
2. ``load_volume`` brings each into LPS mm; :func:`split_coronary_trees` binarises it (> 0),
   finds 26-connected components and keeps the two largest as the left and right trees.
3. :func:`vesselfield.meshing.resample_occupancy` puts each tree onto a 128^3, 0.8 mm grid
   centred on it as exact partial-volume occupancy (box overlap: volume is conserved exactly);
   the grid keeps the tree's LPS position.
4. ``DST/<case>_left.nii.gz``, ``DST/<case>_right.nii.gz`` (float32) and ``DST/cases.csv``.

Left or right: the component whose centroid has the larger LPS x (further to the patient's left)
is the left tree. The left coronary artery leaves the left aortic sinus and its branches run to the
patient's left: the LAD down the anterior interventricular groove towards the apex (left,
anterior, inferior), the circumflex in the left atrioventricular groove. The right coronary artery
leaves the right (anterior) sinus and runs in the right atrioventricular groove, on the patient's
right of the heart. Known ambiguities, recorded rather than fixed: trees merged by a labelling
error (or touching) form one component (``split_status`` "one-component", written as
``<case>_both``); a tree broken by a labelling gap, or a conus branch with its own ostium, gives
extra components, and the second largest may then be a fragment of the left tree rather than the
right tree (``"more-components"``, with ``dropped_voxels``); in a left-dominant heart the right
tree is small and its centroid closer to the midline (``lr_separation_mm``, the x gap between the
two centroids, shows how clear the decision was).
"""

from __future__ import annotations

import csv
import io
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid
from vesselfield.io.atomic import write_text_atomic
from vesselfield.io.run_folder import write_json
from vesselfield.meshing.occupancy import resample_occupancy

LABEL_SUFFIXES = (".label.nii.gz", ".label.nii")
CENTERS = ("tree", "label", "volume")
SIDES = ("left", "right", "both")
CASES_CSV = "cases.csv"
SETTINGS_JSON = "settings.json"
CSV_COLUMNS = (
    "case", "side", "source", "output", "split_status", "voxels", "volume_mm3", "clipped_fraction",
    "centre_mm", "centroid_mm", "lr_separation_mm", "components", "dropped_voxels", "error",
)
_INT_COLUMNS = ("voxels", "components", "dropped_voxels")
_FLOAT_COLUMNS = ("volume_mm3", "clipped_fraction", "lr_separation_mm")
_VECTOR_COLUMNS = ("centre_mm", "centroid_mm")
# Below this a "clipped" fraction is rounding, not tree outside the grid.
_CLIP_TOL = 1e-6


# ------------------------------------------------------------------------------- finding files
def _case_name(filename: str) -> str | None:
    lower = filename.lower()
    for suffix in LABEL_SUFFIXES:
        if lower.endswith(suffix) and len(filename) > len(suffix):
            return filename[: -len(suffix)]
    return None


def _case_sort_key(case: str):
    # "2" before "10": ImageCAS cases are numbers.
    return (0, int(case), case) if case.isdigit() else (1, 0, case)


def find_label_files(src) -> list[tuple[str, Path]]:
    """``[(case, path), ...]`` for every ImageCAS label file under ``src``, in case order.

    Scans ``src`` at any depth (a flat folder, the ``1-200/``, ``201-400/``, ... folders of the
    published archives, or one folder per case) for ``<case>.label.nii.gz`` and
    ``<case>.label.nii``; hidden files and folders (``._1.label.nii.gz`` from macOS) are ignored.
    Raises VesselfieldError when ``src`` is missing, holds no label file, or two files claim the
    same case.
    """
    src = Path(src)
    if not src.exists():
        raise VesselfieldError(f"ImageCAS folder {src} does not exist")
    if not src.is_dir():
        raise VesselfieldError(f"ImageCAS source {src} is not a folder")
    found: dict[str, Path] = {}
    for path in src.rglob("*"):
        if any(part.startswith(".") for part in path.relative_to(src).parts):
            continue
        case = _case_name(path.name)
        if case is None or not path.is_file():
            continue
        if case in found:
            raise VesselfieldError(f"ImageCAS case {case} has two label files: {found[case]} and {path}")
        found[case] = path
    if not found:
        raise VesselfieldError(f"no ImageCAS label files (*.label.nii.gz or *.label.nii) under {src}")
    return sorted(found.items(), key=lambda item: _case_sort_key(item[0]))


# ------------------------------------------------------------------------------- splitting
@dataclass
class CoronarySplit:
    """The coronary trees of one label volume.

    Attributes:
        trees: side (``"left"``, ``"right"``, or ``"both"`` for a single component) -> ``(mask,
            grid)``: the tree's bool mask cropped to its bounding box and the grid placing that
            crop in LPS mm (same spacing as the label volume).
        split_status: ``"two-trees"`` (exactly two components of at least the minimum size),
            ``"more-components"`` (more than two; the two largest kept), ``"one-component"``, or
            ``"empty"`` (no component of the minimum size).
        components: number of 26-connected components of at least the minimum size.
        dropped_voxels: foreground voxels in no kept tree (specks and extra components).
        lr_separation_mm: LPS x of the left tree's centroid minus the right tree's (> 0), mm;
            None unless two trees were kept.
        centroids_mm: side -> (3,) LPS centroid of the tree's voxel centres, mm.
    """

    trees: dict[str, tuple[np.ndarray, VolumeGrid]]
    split_status: str
    components: int
    dropped_voxels: int
    lr_separation_mm: float | None
    centroids_mm: dict[str, np.ndarray]


def split_coronary_trees(mask, grid: VolumeGrid, *, min_component_voxels: int = 100) -> CoronarySplit:
    """Split a coronary label volume into its left and right trees by connected components.

    Args:
        mask: (X, Y, Z) label volume on ``grid`` (LPS); voxels > 0 are vessel.
        grid: its grid.
        min_component_voxels: components smaller than this are specks and dropped.

    Components are 26-connected (a voxel touches the 26 around it: thin oblique vessels stay in
    one piece). The two largest components are the trees; the one whose centroid has the larger
    LPS x (towards the patient's left) is the left tree (see the module docstring for why, and
    for when this fails).
    """
    from scipy import ndimage

    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise VesselfieldError(f"label volume must be 3D, got shape {mask.shape}")
    grid.check_array(mask, "label volume")
    if int(min_component_voxels) < 1:
        raise VesselfieldError(f"min_component_voxels must be >= 1, got {min_component_voxels}")
    foreground = mask > 0
    box = _bounding_box(foreground)
    if box is None:
        return CoronarySplit({}, "empty", 0, 0, None, {})
    offset = np.array([s.start for s in box])
    labels, count = ndimage.label(foreground[box], structure=np.ones((3, 3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    order = np.argsort(-sizes, kind="stable")
    big = [int(i) + 1 for i in order if sizes[i] >= min_component_voxels]
    kept = big[:2]
    dropped = int(sizes.sum() - sum(sizes[k - 1] for k in kept))
    if not kept:
        return CoronarySplit({}, "empty", 0, dropped, None, {})
    objects = ndimage.find_objects(labels)
    centres = ndimage.center_of_mass(foreground[box], labels, kept)
    centroids = {k: grid.index_to_world(offset + np.asarray(c)) for k, c in zip(kept, centres)}
    if len(kept) == 1:
        sides = {"both": kept[0]}
        status, separation = "one-component", None
    else:
        a, b = kept
        left, right = (a, b) if centroids[a][0] >= centroids[b][0] else (b, a)
        sides = {"left": left, "right": right}
        status = "two-trees" if len(big) == 2 else "more-components"
        separation = float(centroids[left][0] - centroids[right][0])
    trees = {}
    for side, k in sides.items():
        crop = objects[k - 1]
        start = offset + np.array([s.start for s in crop])
        tree = labels[crop] == k
        trees[side] = (tree, VolumeGrid(tree.shape, grid.spacing_mm, tuple(grid.index_to_world(start))))
    return CoronarySplit(trees, status, len(big), dropped, separation,
                         {side: centroids[k] for side, k in sides.items()})


def _bounding_box(mask: np.ndarray) -> tuple[slice, slice, slice] | None:
    box = []
    for axis in range(3):
        hit = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(3) if a != axis)))
        if hit.size == 0:
            return None
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


# ------------------------------------------------------------------------------- cases.csv
def _format(column: str, value) -> str:
    if value is None:
        return ""
    if column in _VECTOR_COLUMNS:
        return " ".join(f"{v:.3f}" for v in value)
    if column == "clipped_fraction":
        return f"{value:.6f}"
    if column in _FLOAT_COLUMNS:
        return f"{value:.6g}"
    return str(value)


def _parse(column: str, text: str, path: Path, line: int):
    if column not in _INT_COLUMNS + _FLOAT_COLUMNS + _VECTOR_COLUMNS:
        return text
    if text == "":
        return None
    try:
        if column in _INT_COLUMNS:
            return int(text)
        if column in _FLOAT_COLUMNS:
            return float(text)
        vector = [float(v) for v in text.split()]
    except ValueError:
        raise VesselfieldError(f"{path} line {line}: {column} {text!r} is not a number") from None
    if len(vector) != 3:
        raise VesselfieldError(f"{path} line {line}: {column} must hold 3 numbers, got {text!r}")
    return vector


def read_cases_csv(path) -> list[dict]:
    """Rows of a ``cases.csv`` written by :func:`prepare_imagecas`, with numbers parsed back
    (columns as in :data:`CSV_COLUMNS`; empty cells are None, vectors lists of 3 floats in mm)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise VesselfieldError(f"cannot read {path}: {exc.strerror or exc}") from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise VesselfieldError(f"{path} is not an ImageCAS cases table: missing column(s) {', '.join(missing)}")
    return [{c: _parse(c, row[c] or "", path, line) for c in CSV_COLUMNS}
            for line, row in enumerate(reader, start=2)]


def _write_cases_csv(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow([_format(c, row[c]) for c in CSV_COLUMNS])
    write_text_atomic(path, buffer.getvalue())


def summarize_cases(rows: Sequence[dict]) -> str:
    """One line for the command line: ``"3 cases: 2 two-trees, 1 error; 4 volumes, 1 clipped"``."""
    statuses: dict[str, str] = {}
    for row in rows:
        statuses.setdefault(row["case"], row["split_status"])
    counts = {s: list(statuses.values()).count(s) for s in ("two-trees", "more-components", "one-component",
                                                             "empty", "error")}
    parts = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    volumes = [r for r in rows if r["output"]]
    clipped = sum(1 for r in volumes if (r["clipped_fraction"] or 0.0) > _CLIP_TOL)
    return f"{len(statuses)} cases: {parts}; {len(volumes)} volumes, {clipped} clipped"


# ------------------------------------------------------------------------------- preparation
def _check_options(shape, spacing_mm, center, min_component_voxels) -> tuple[tuple, tuple]:
    out = VolumeGrid.centered(shape, spacing_mm)  # validates shape and spacing
    if center not in CENTERS:
        raise VesselfieldError(f"center must be one of {', '.join(CENTERS)}, got {center!r}")
    if isinstance(min_component_voxels, bool) or not isinstance(min_component_voxels, (int, np.integer)) \
            or min_component_voxels < 1:
        raise VesselfieldError(f"min_component_voxels must be an integer >= 1, got {min_component_voxels!r}")
    return out.shape, out.spacing_mm


def _previous_rows(dst: Path, settings: dict, overwrite: bool) -> tuple[dict[str, list[dict]], bool]:
    """Rows of an earlier run into ``dst`` by case, and whether its settings match this run's."""
    csv_path, settings_path = dst / CASES_CSV, dst / SETTINGS_JSON
    if not csv_path.exists() and not settings_path.exists():
        return {}, True
    before = None
    if settings_path.exists():
        try:
            before = json.loads(settings_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            if not overwrite:
                raise VesselfieldError(f"cannot read {settings_path}: {exc}") from None
    elif not overwrite:
        raise VesselfieldError(f"{dst} has a {CASES_CSV} but no {SETTINGS_JSON}: use an empty folder or overwrite")
    same = isinstance(before, dict) and all(before.get(k) == v for k, v in settings.items())
    if isinstance(before, dict) and not same and not overwrite:
        shown = ", ".join(f"{k} {before.get(k)} -> {v}" for k, v in settings.items() if before.get(k) != v)
        raise VesselfieldError(f"{dst} was prepared with other settings ({shown}): use another folder or overwrite")
    rows: dict[str, list[dict]] = {}
    if csv_path.exists():
        try:
            for row in read_cases_csv(csv_path):
                rows.setdefault(row["case"], []).append(row)
        except VesselfieldError:
            if not overwrite:
                raise
    return rows, same


def _is_done(rows: list[dict] | None, dst: Path) -> bool:
    return bool(rows) and all(r["split_status"] != "error" and (not r["output"] or (dst / r["output"]).is_file())
                              for r in rows)


def _row(case: str, source: str, status: str, **values) -> dict:
    row = dict.fromkeys(CSV_COLUMNS, None)
    row.update(case=case, side="", source=source, output="", split_status=status, error="")
    row.update(values)
    return row


def _centre_of(grids: Sequence[VolumeGrid]) -> np.ndarray:
    lo = np.min([g.origin for g in grids], axis=0)
    hi = np.max([g.origin + (np.asarray(g.shape) - 1) * g.spacing for g in grids], axis=0)
    return (lo + hi) / 2.0


def _prepare_case(case: str, path: Path, source: str, dst: Path, shape, spacing_mm, center: str,
                  min_component_voxels: int) -> list[dict]:
    from vesselfield.io import volumes

    try:
        label, grid = volumes.load_volume(path, what="ImageCAS label volume")
        split = split_coronary_trees(label, grid, min_component_voxels=min_component_voxels)
    except VesselfieldError as exc:
        return [_row(case, source, "error", error=str(exc))]
    del label
    common = dict(components=split.components, dropped_voxels=split.dropped_voxels,
                  lr_separation_mm=split.lr_separation_mm)
    if not split.trees:
        return [_row(case, source, split.split_status, **common)]
    if center == "label":
        shared_centre = _centre_of([g for _, g in split.trees.values()])
    elif center == "volume":
        shared_centre = grid.center_mm
    else:
        shared_centre = None
    rows = []
    for side in (s for s in SIDES if s in split.trees):
        tree, tree_grid = split.trees[side]
        centre = tree_grid.center_mm if shared_centre is None else shared_centre
        # Centres on a 0.001 mm lattice give origins that NIfTI's float32 header stores exactly.
        centre = np.round(centre, 3)
        out_grid = VolumeGrid.centered(shape, spacing_mm, centre)
        occupancy = resample_occupancy(tree, tree_grid, out_grid)
        voxels = int(np.count_nonzero(tree))
        volume_mm3 = voxels * tree_grid.voxel_volume_mm3
        inside_mm3 = float(occupancy.sum(dtype=np.float64)) * out_grid.voxel_volume_mm3
        clipped = max(0.0, 1.0 - inside_mm3 / volume_mm3)
        if clipped > _CLIP_TOL:
            extent = " x ".join(f"{n * s:g}" for n, s in zip(out_grid.shape, out_grid.spacing_mm))
            what = "single-component tree" if side == "both" else f"{side} tree"
            warnings.warn(f"ImageCAS case {case}: {clipped:.1%} of the {what} lies outside the "
                          f"{extent} mm grid", stacklevel=3)
        output = f"{case}_{side}.nii.gz"
        volumes.save_volume(dst / output, occupancy, out_grid)
        rows.append(_row(case, source, split.split_status, side=side, output=output, voxels=voxels,
                         volume_mm3=volume_mm3, clipped_fraction=clipped,
                         centre_mm=[float(v) for v in centre],
                         centroid_mm=[float(v) for v in split.centroids_mm[side]], **common))
    return rows


def prepare_imagecas(
    src,
    dst,
    *,
    shape: Sequence[int] = (128, 128, 128),
    spacing_mm: float | Sequence[float] = 0.8,
    center: str = "tree",
    min_component_voxels: int = 100,
    overwrite: bool = False,
    progress: bool = True,
) -> list[dict]:
    """Split every ImageCAS label volume into its coronary trees, each on a NeCA / SDF-CAR grid.

    Args:
        src: the ImageCAS folder (flat, or the published ``1-200/``, ``201-400/``, ... folders).
        dst: output folder (created).
        shape: output grid size in voxels along LPS x, y, z (NeCA, SDF-CAR: 128^3).
        spacing_mm: output voxel size in mm, one number or three (NeCA, SDF-CAR: 0.8 mm, so the
            grid is a 102.4 mm cube).
        center: where each grid is centred: ``"tree"`` (the tree's bounding-box centre; each tree
            its own grid), ``"label"`` (the bounding-box centre of both kept trees; left and right
            share one grid) or ``"volume"`` (the centre of the label volume's field of view).
        min_component_voxels: components smaller than this (in label voxels, about 0.03 mm^3 each
            in ImageCAS) are specks: dropped, and not counted as trees.
        overwrite: redo every case; otherwise cases that ``cases.csv`` records and whose volumes
            exist are skipped (a stopped run resumes), and cases recorded as errors are retried.
        progress: show a progress bar (stderr).

    Writes, in ``dst``:
        ``<case>_left.nii.gz``, ``<case>_right.nii.gz`` (``<case>_both.nii.gz`` for a single
        component): float32 occupancy in [0, 1] (:func:`vesselfield.meshing.resample_occupancy`) on a grid of
        ``shape`` x ``spacing_mm`` in the label's LPS frame (the NIfTI affine places it where the
        tree is in the CT); ``cases.csv``: one row per written volume, or one per case without
        volumes (``"empty"``, ``"error"`` with the message), columns :data:`CSV_COLUMNS`;
        ``settings.json``: the options, so that a rerun with other options is refused (use
        ``overwrite``). ``cases.csv`` is rewritten after every case and keeps rows of cases from
        earlier runs with the same settings.

    Returns the rows of the cases found in ``src`` (as in ``cases.csv``, with numbers as numbers:
    ``voxels`` of the tree in the label, its ``volume_mm3``, ``clipped_fraction`` of that volume
    outside the grid (a warning is issued when > 0), ``centre_mm`` of the grid and ``centroid_mm``
    of the tree in LPS mm).

    Raises VesselfieldError for a missing ``src``, no label files, bad options or a ``dst``
    prepared with other settings; an unreadable label file is recorded as an ``"error"`` row and
    the other cases go on.
    """
    shape, spacing = _check_options(shape, spacing_mm, center, min_component_voxels)
    src = Path(src)
    cases = find_label_files(src)
    dst = Path(dst)
    if dst.exists() and not dst.is_dir():
        raise VesselfieldError(f"output folder {dst} is a file")
    settings = {"shape": list(shape), "spacing_mm": list(spacing), "center": center,
                "min_component_voxels": int(min_component_voxels)}
    previous, same_settings = _previous_rows(dst, settings, overwrite)
    # Rows made with other settings describe volumes on another grid: they are not kept.
    records = dict(previous) if same_settings else {}
    dst.mkdir(parents=True, exist_ok=True)
    write_json(dst / SETTINGS_JSON, settings)

    from tqdm.auto import tqdm

    for case, path in tqdm(cases, desc="ImageCAS", unit="case", disable=not progress, dynamic_ncols=True):
        if not overwrite and _is_done(records.get(case), dst):
            continue
        rows = _prepare_case(case, path, path.relative_to(src).as_posix(), dst, shape, spacing, center,
                             int(min_component_voxels))
        _remove_stale(previous.get(case, []), rows, dst, case)
        records[case] = rows
        ordered = sorted(records, key=_case_sort_key)
        _write_cases_csv(dst / CASES_CSV, [r for c in ordered for r in records[c]])
    if not (dst / CASES_CSV).exists():
        _write_cases_csv(dst / CASES_CSV, [])
    return [row for case, _ in cases for row in records[case]]


def _remove_stale(old: list[dict], new: list[dict], dst: Path, case: str) -> None:
    # A case redone with another split (say "one-component" after "two-trees") must not leave
    # its former volumes behind; only our own file names are touched.
    keep = {r["output"] for r in new}
    ours = re.compile(rf"^{re.escape(case)}_({'|'.join(SIDES)})\.nii\.gz$")
    for row in old:
        name = row["output"]
        if name and name not in keep and ours.match(name):
            (dst / name).unlink(missing_ok=True)
