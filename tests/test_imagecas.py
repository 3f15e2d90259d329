"""ImageCAS preparation on small synthetic label volumes with known trees.

Two tube trees are drawn in RAS millimetres (what a NIfTI affine maps to): the left coronary tree
at negative RAS x (the patient's left, positive LPS x), the right tree at positive RAS x. Their
voxel counts, centroids and extents are then known in LPS without running the code under test.
"""

from __future__ import annotations

import csv
import functools
import warnings

import nibabel as nib
import numpy as np
import pytest

from vesselfield.datasets import imagecas
from vesselfield.datasets.imagecas import (
    find_label_files,
    prepare_imagecas,
    read_cases_csv,
    split_coronary_trees,
    summarize_cases,
)
from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid
from vesselfield.io.volumes import load_volume

SPACING_RAS = (0.4, 0.4, 0.5)
SHAPE_SRC = (150, 150, 120)  # a 60 x 60 x 60 mm field of view
# Segments (RAS mm) and radius (mm) of each tree.
LEFT_TREE = ([((-8, -5, 40), (-20, -10, 30)), ((-20, -10, 30), (-22, -20, 15)),
              ((-20, -10, 30), (-25, 0, 20))], 1.5)
RIGHT_TREE = ([((8, -5, 40), (18, -8, 25)), ((18, -8, 25), (15, 0, 10))], 1.2)
BIG_RIGHT_TREE = ([((8, -5, 40), (18, -8, 25)), ((18, -8, 25), (15, 0, 10)), ((18, -8, 25), (24, -20, 12))], 2.0)
BRIDGE = ([((-8, -5, 40), (8, -5, 40))], 1.0)
SMALL = (48, 48, 48)  # 38.4 mm at 0.8 mm: holds each tree, fast


def _affine(flipped: bool) -> np.ndarray:
    """Index -> RAS affine of the synthetic volumes, covering RAS x, y in [-30, 30], z in [0, 60].

    ``flipped`` stores the columns running towards patient left/posterior (negative RAS steps),
    as DICOM-derived NIfTI files often do; the world is the same either way.
    """
    sx, sy, sz = SPACING_RAS
    half = (np.array(SHAPE_SRC[:2]) - 1) / 2.0 * np.array([sx, sy])
    if flipped:
        return np.array([[-sx, 0, 0, half[0]], [0, -sy, 0, half[1]], [0, 0, sz, 0.25], [0, 0, 0, 1]])
    return np.array([[sx, 0, 0, -half[0]], [0, sy, 0, -half[1]], [0, 0, sz, 0.25], [0, 0, 0, 1]])


@functools.lru_cache(maxsize=2)
def _ras_centres(flipped: bool) -> np.ndarray:
    """(X, Y, Z, 3) RAS mm of every voxel centre of the synthetic volumes."""
    affine = _affine(flipped)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE_SRC], indexing="ij"), axis=-1).astype(float)
    centres = idx @ affine[:3, :3].T + affine[:3, 3]
    centres.flags.writeable = False
    return centres


def _tubes(points: np.ndarray, tree) -> np.ndarray:
    segments, radius = tree
    inside = np.zeros(points.shape[:-1], dtype=bool)
    for a, b in segments:
        a, b = np.asarray(a, float), np.asarray(b, float)
        # Only points in the segment's bounding box (plus the radius) can be inside: faster.
        near = np.all((points >= np.minimum(a, b) - radius) & (points <= np.maximum(a, b) + radius), axis=-1)
        p = points[near]
        t = np.clip(((p - a) @ (b - a)) / np.dot(b - a, b - a), 0.0, 1.0)
        inside[near] |= np.linalg.norm(p - a - t[:, None] * (b - a), axis=-1) <= radius
    return inside


def _write_case(path, trees, *, flipped=False) -> dict:
    """Write a label NIfTI holding ``trees``; return each tree's voxel count and LPS centroid."""
    affine = _affine(flipped)
    points = _ras_centres(flipped)
    label = np.zeros(SHAPE_SRC, dtype=np.uint8)
    truth = {}
    for name, tree in trees.items():
        inside = _tubes(points, tree)
        label[inside] = 1
        lps = points[inside] * np.array([-1.0, -1.0, 1.0])
        truth[name] = {"voxels": int(inside.sum()), "centroid_lps": lps.mean(axis=0),
                       "lo_lps": lps.min(axis=0), "hi_lps": lps.max(axis=0)}
    truth["all"] = {"voxels": int(label.sum())}
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(label, affine), str(path))
    return truth


def _occupancy_centroid(occ: np.ndarray, grid: VolumeGrid) -> np.ndarray:
    return (occ[..., None] * grid.voxel_centers_mm(np.float64)).sum(axis=(0, 1, 2)) / occ.sum()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Cases 1 (left tree larger), 2 (right tree larger, flipped storage), 3 (trees bridged) and
    4 (corrupt) in a ``1-200/`` folder, with 2 as ``.label.nii``; and an image file to ignore."""
    root = tmp_path_factory.mktemp("imagecas")
    folder = root / "1-200"
    truth = {
        "1": _write_case(folder / "1.label.nii.gz", {"left": LEFT_TREE, "right": RIGHT_TREE}),
        "2": _write_case(folder / "2.label.nii", {"left": LEFT_TREE, "right": BIG_RIGHT_TREE}, flipped=True),
        "3": _write_case(folder / "3.label.nii.gz", {"left": LEFT_TREE, "right": RIGHT_TREE, "bridge": BRIDGE}),
    }
    (folder / "4.label.nii.gz").write_bytes(b"not a NIfTI file at all" * 10)
    (folder / "1.img.nii.gz").write_bytes(b"the CT, not read")
    (folder / "._1.label.nii.gz").write_bytes(b"macOS metadata")
    return root, truth


@pytest.fixture(scope="module")
def prepared(dataset, tmp_path_factory):
    root, truth = dataset
    dst = tmp_path_factory.mktemp("prepared")
    # Bridged, the two trees are about 50 mm wide: more than the 38.4 mm grid holds.
    clipped = "case 3: .* of the single-component tree lies outside the 38.4 x 38.4 x 38.4 mm grid"
    with pytest.warns(UserWarning, match=clipped):
        rows = prepare_imagecas(root, dst, shape=SMALL, progress=False)
    return root, truth, dst, rows


# ------------------------------------------------------------------------------ finding files
def test_find_label_files_scans_subfolders_in_case_order(dataset, tmp_path):
    root, _ = dataset
    found = find_label_files(root)
    assert [c for c, _ in found] == ["1", "2", "3", "4"]
    assert found[1][1].name == "2.label.nii"
    flat = tmp_path / "flat"
    for n in (10, 2, 1):
        (flat / f"{n}.label.nii.gz").parent.mkdir(exist_ok=True)
        (flat / f"{n}.label.nii.gz").write_bytes(b"")
    assert [c for c, _ in find_label_files(flat)] == ["1", "2", "10"]


def test_find_label_files_errors(tmp_path):
    with pytest.raises(VesselfieldError, match="does not exist"):
        find_label_files(tmp_path / "nowhere")
    (tmp_path / "1.img.nii.gz").write_bytes(b"")
    with pytest.raises(VesselfieldError, match="no ImageCAS label files"):
        find_label_files(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "7.label.nii.gz").write_bytes(b"")
    (tmp_path / "b" / "7.label.nii").write_bytes(b"")
    with pytest.raises(VesselfieldError, match="case 7 has two label files"):
        find_label_files(tmp_path)


# ------------------------------------------------------------------------------ splitting
def test_split_uses_26_connectivity_and_drops_specks():
    grid = VolumeGrid((20, 10, 10), (0.5, 0.5, 0.5), (-5.0, 0.0, 0.0))
    mask = np.zeros(grid.shape, dtype=np.uint8)
    mask[2:5, 2:5, 2:5] = 1  # low x: the patient's right
    mask[5, 5, 5] = 1  # touches the block above only at a corner: same component under 26-connectivity
    mask[12:16, 2:6, 2:6] = 2  # high x: the patient's left, label value 2 still counts as vessel
    mask[18, 8, 8] = 1  # a one-voxel speck
    split = split_coronary_trees(mask, grid, min_component_voxels=5)
    assert split.split_status == "two-trees"
    assert split.components == 2 and split.dropped_voxels == 1
    assert int(split.trees["right"][0].sum()) == 28 and int(split.trees["left"][0].sum()) == 64
    left_mask, left_grid = split.trees["left"]
    assert left_grid.origin_mm == (1.0, 1.0, 1.0) and left_mask.shape == (4, 4, 4)
    np.testing.assert_allclose(split.centroids_mm["left"], [1.75, 1.75, 1.75])
    assert split.lr_separation_mm == pytest.approx(1.75 - (-5.0 + 0.5 * (27 * 3 + 5) / 28))


def test_split_statuses():
    grid = VolumeGrid((12, 4, 4), (1.0, 1.0, 1.0))
    mask = np.zeros(grid.shape, dtype=bool)
    assert split_coronary_trees(mask, grid).split_status == "empty"
    mask[0:2, :2, :2] = True
    mask[5:7, :2, :2] = True
    mask[10:12, :2, :2] = True
    assert split_coronary_trees(mask, grid, min_component_voxels=9).split_status == "empty"
    more = split_coronary_trees(mask, grid, min_component_voxels=8)
    assert (more.split_status, more.components, more.dropped_voxels) == ("more-components", 3, 8)
    mask[:, :2, :2] = True
    one = split_coronary_trees(mask, grid, min_component_voxels=8)
    assert one.split_status == "one-component" and list(one.trees) == ["both"]


# ------------------------------------------------------------------------------ preparing
def test_left_and_right_trees_keep_volume_and_position(prepared):
    _, truth, dst, rows = prepared
    by_key = {(r["case"], r["side"]): r for r in rows}
    for case in ("1", "2"):
        for side in ("left", "right"):
            row = by_key[(case, side)]
            want = truth[case][side]
            assert row["split_status"] == "two-trees"
            assert row["voxels"] == want["voxels"]
            # The patient-left tree sits at LPS x ~ +20 mm, the right one at ~ -13 mm.
            assert (row["centroid_mm"][0] > 0) == (side == "left")
            np.testing.assert_allclose(row["centroid_mm"], want["centroid_lps"], atol=1e-6)
            occ, grid = load_volume(dst / f"{case}_{side}.nii.gz")
            assert occ.dtype == np.float32 and grid.shape == SMALL
            np.testing.assert_allclose(grid.spacing_mm, (0.8, 0.8, 0.8))
            np.testing.assert_allclose(grid.center_mm, row["centre_mm"], atol=1e-6)
            volume_mm3 = want["voxels"] * np.prod(SPACING_RAS)
            assert row["volume_mm3"] == pytest.approx(volume_mm3, rel=1e-6)
            # Exact box averaging: measured relative volume error 2e-16.
            assert occ.sum(dtype=np.float64) * grid.voxel_volume_mm3 == pytest.approx(volume_mm3, rel=1e-5)
            assert row["clipped_fraction"] < 1e-6
            # Bounded by half an output voxel per axis (0.4 mm); measured 0.0001-0.0009 mm here.
            assert np.linalg.norm(_occupancy_centroid(occ, grid) - want["centroid_lps"]) < 0.01


def test_one_component_and_corrupt_cases_are_recorded(prepared):
    _, truth, dst, rows = prepared
    three = [r for r in rows if r["case"] == "3"]
    assert len(three) == 1 and three[0]["split_status"] == "one-component" and three[0]["side"] == "both"
    assert three[0]["voxels"] == truth["3"]["all"]["voxels"]
    assert (dst / "3_both.nii.gz").is_file() and not (dst / "3_left.nii.gz").exists()
    four = [r for r in rows if r["case"] == "4"]
    assert len(four) == 1 and four[0]["split_status"] == "error"
    assert "4.label.nii.gz" in four[0]["error"] and four[0]["output"] == ""
    assert 0.1 < three[0]["clipped_fraction"] < 0.5
    assert summarize_cases(rows) == "4 cases: 2 two-trees, 1 one-component, 1 error; 5 volumes, 1 clipped"


def test_cases_csv_matches_the_returned_rows(prepared):
    _, _, dst, rows = prepared
    with open(dst / "cases.csv", newline="") as fh:
        header = next(csv.reader(fh))
    assert tuple(header) == imagecas.CSV_COLUMNS
    back = read_cases_csv(dst / "cases.csv")
    assert [(r["case"], r["side"], r["source"], r["split_status"], r["voxels"]) for r in back] == \
        [(r["case"], r["side"], r["source"], r["split_status"], r["voxels"]) for r in rows]
    assert back[0]["source"] == "1-200/1.label.nii.gz"
    for a, b in zip(back, rows):
        if b["centre_mm"] is not None:
            np.testing.assert_allclose(a["centre_mm"], b["centre_mm"], atol=5e-4)


def test_rerun_skips_finished_cases_and_retries_errors(prepared, monkeypatch):
    root, _, dst, rows = prepared
    before = {p.name: p.stat().st_mtime_ns for p in dst.glob("*.nii.gz")}
    import vesselfield.io.volumes as volumes

    loaded = []
    original = volumes.load_volume

    def counting(path, *args, **kwargs):
        loaded.append(path.name)
        return original(path, *args, **kwargs)

    monkeypatch.setattr(volumes, "load_volume", counting)
    again = prepare_imagecas(root, dst, shape=SMALL, progress=False)
    assert loaded == ["4.label.nii.gz"]
    assert {p.name: p.stat().st_mtime_ns for p in dst.glob("*.nii.gz")} == before
    assert [(r["case"], r["side"], r["voxels"]) for r in again] == [(r["case"], r["side"], r["voxels"]) for r in rows]
    with pytest.raises(VesselfieldError, match="other settings"):
        prepare_imagecas(root, dst, shape=(32, 32, 32), progress=False)


def test_default_grid_and_shared_centre(dataset, tmp_path):
    root, truth = dataset
    src = tmp_path / "flat"
    src.mkdir()
    (src / "1.label.nii.gz").write_bytes((root / "1-200" / "1.label.nii.gz").read_bytes())
    rows = prepare_imagecas(src, tmp_path / "out", center="label", progress=False)
    assert [r["side"] for r in rows] == ["left", "right"]
    grids = [load_volume(tmp_path / "out" / r["output"])[1] for r in rows]
    assert grids[0].shape == (128, 128, 128) and grids[0].spacing_mm == (0.8, 0.8, 0.8)
    assert grids[0] == grids[1]  # one grid for both trees, 102.4 mm wide
    # Centred on the box around both trees' voxel centres (about LPS x -19 to +26.5 mm).
    lo = np.minimum(truth["1"]["left"]["lo_lps"], truth["1"]["right"]["lo_lps"])
    hi = np.maximum(truth["1"]["left"]["hi_lps"], truth["1"]["right"]["hi_lps"])
    np.testing.assert_allclose(grids[0].center_mm, (lo + hi) / 2, atol=1e-3)


def test_clipped_fraction_matches_the_volume_outside_the_grid(tmp_path):
    """A straight 40 mm tube along z in a 12.8 mm cube: the clipped part is known voxel by voxel."""
    tube = ([((0, 0, 10), (0, 0, 50))], 1.5)
    stub = ([((25, 0, 30), (25, 0, 31))], 1.5)  # a second tree, far from the tube
    truth = _write_case(tmp_path / "src" / "9.label.nii.gz", {"left": tube, "right": stub})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = prepare_imagecas(tmp_path / "src", tmp_path / "out", shape=(16, 16, 16), progress=False)
    tube_row = next(r for r in rows if r["voxels"] == truth["left"]["voxels"])
    assert any("outside the 12.8 x 12.8 x 12.8 mm grid" in str(w.message) for w in caught)
    points = _ras_centres(False)
    z = points[_tubes(points, tube)][:, 2]
    centre_z = tube_row["centre_mm"][2]
    inside = np.clip(np.minimum(z + 0.25, centre_z + 6.4) - np.maximum(z - 0.25, centre_z - 6.4), 0, 0.5) / 0.5
    assert tube_row["clipped_fraction"] == pytest.approx(1.0 - inside.mean(), abs=1e-5)
    assert tube_row["clipped_fraction"] == pytest.approx(1.0 - 12.8 / 43.0, abs=0.03)


def test_bad_options_and_folders(dataset, tmp_path):
    root, _ = dataset
    with pytest.raises(VesselfieldError, match="center must be one of"):
        prepare_imagecas(root, tmp_path / "o", center="heart", progress=False)
    with pytest.raises(VesselfieldError, match="min_component_voxels"):
        prepare_imagecas(root, tmp_path / "o", min_component_voxels=0, progress=False)
    with pytest.raises(VesselfieldError, match="spacing_mm must be positive"):
        prepare_imagecas(root, tmp_path / "o", spacing_mm=-0.8, progress=False)
    with pytest.raises(VesselfieldError, match="does not exist"):
        prepare_imagecas(tmp_path / "missing", tmp_path / "o", progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(VesselfieldError, match="is a file"):
        prepare_imagecas(root, tmp_path / "file", progress=False)


def test_importing_datasets_is_light():
    from conftest import modules_loaded_by

    assert modules_loaded_by("import vesselfield.datasets", ["vesselfield.datasets.imagecas", "scipy"]) == []
    import vesselfield.datasets as d

    assert callable(d.prepare_imagecas)  # loaded on first use


@pytest.mark.filterwarnings("ignore:ImageCAS case 1")  # an 8^3 grid clips the trees, on purpose: fast
def test_overwrite_redoes_cases_and_removes_former_volumes(dataset, tmp_path):
    root, truth = dataset
    src = tmp_path / "flat"
    src.mkdir()
    (src / "1.label.nii.gz").write_bytes((root / "1-200" / "1.label.nii.gz").read_bytes())
    out = tmp_path / "out"
    prepare_imagecas(src, out, shape=(8, 8, 8), progress=False)
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["1_left.nii.gz", "1_right.nii.gz"]
    # The right tree (2089 voxels) becomes a speck: one component left, written as "both".
    min_voxels = truth["1"]["right"]["voxels"] + 1
    rows = prepare_imagecas(src, out, shape=(8, 8, 8), min_component_voxels=min_voxels, overwrite=True,
                            progress=False)
    assert [(r["side"], r["split_status"], r["dropped_voxels"]) for r in rows] == \
        [("both", "one-component", truth["1"]["right"]["voxels"])]
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["1_both.nii.gz"]
    assert len(read_cases_csv(out / "cases.csv")) == 1
