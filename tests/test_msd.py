"""MSD / nnU-Net v2 datasets: reading both published layouts, label choice, bad input, sparsify
(the dense truth kept), nnU-Net export round trip, and the datasets made without downloads.

The small datasets are written here file by file, the way MSD and nnU-Net publish them, so the
reader is tested against the layouts rather than against our own writer. Grid values have at
most 7 significant digits, so NIfTI (float32 geometry) stores them exactly.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from conftest import ball, expect_user_error, sphere_sdf

from vesselfield.cli import main
from vesselfield.datasets.msd import (
    CaseVolumes,
    choose_label,
    export_nnunet,
    load_case,
    load_dense_mask,
    read_msd_dataset,
    sparsify_dataset,
    write_msd_dataset,
)
from vesselfield.datasets.synthetic_ct import (
    hepatic_case,
    make_hepatic_ct_dataset,
    make_phantom_ct_dataset,
    make_vmtk_aorta_dataset,
)
from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid
from vesselfield.io import sample_path
from vesselfield.io.volumes import load_volume, save_volume
from vesselfield.meshing.signed_distance import signed_distance_from_mask

GRID = VolumeGrid((16, 14, 12), (0.7, 0.6, 1.5), (-3.5, 2.0, 10.0))
MSD_LABELS = {"0": "background", "1": "Vessel", "2": "Tumour"}  # MSD Task08's dataset.json


def _case_arrays(seed: int, grid: VolumeGrid = GRID) -> tuple[np.ndarray, np.ndarray]:
    """A CT-like image and a label volume with a vessel (1, a tube along z) and a tumour (2, a ball)."""
    rng = np.random.default_rng(seed)
    centres = grid.voxel_centers_mm(np.float64)
    c = grid.center_mm
    label = np.zeros(grid.shape, dtype=np.uint8)
    label[np.linalg.norm(centres[..., :2] - c[:2] - [1.0, 0.5 * seed], axis=-1) < 1.6] = 1
    label[np.linalg.norm(centres - c - [-2.5, -1.5, 2.0], axis=-1) < 1.5] = 2
    image = (40.0 + 300.0 * (label == 1) - 20.0 * (label == 2) + rng.normal(0, 10, grid.shape)).astype(np.float32)
    return image, label


def _write_msd(root, n_cases=2, *, labels=MSD_LABELS, junk=True, channel_suffix=False, modality=None):
    """An MSD Task08-style dataset: dataset.json with a training list, imagesTr/, labelsTr/.

    ``channel_suffix``: the files carry _0000 while the list does not (nnU-Net v1's datasets).
    ``junk``: the macOS ``._*`` files of the MSD archives, in the folders and in the list.
    """
    training = []
    for i in range(n_cases):
        name = f"hepaticvessel_{i:03d}"
        image, label = _case_arrays(i)
        image_file = f"{name}_0000.nii.gz" if channel_suffix else f"{name}.nii.gz"
        save_volume(root / "imagesTr" / image_file, image, GRID)
        save_volume(root / "labelsTr" / f"{name}.nii.gz", label, GRID)
        training.append({"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"})
    if junk:
        for folder in ("imagesTr", "labelsTr"):
            (root / folder / "._hepaticvessel_000.nii.gz").write_bytes(b"\x00\x05\x16\x07Mac OS X")
        training.append({"image": "./imagesTr/._hepaticvessel_000.nii.gz",
                         "label": "./labelsTr/._hepaticvessel_000.nii.gz"})
    meta = {"name": "HepaticVessel", "tensorImageSize": "3D", "modality": modality or {"0": "CT"},
            "labels": labels, "numTraining": n_cases, "numTest": 0, "training": training[::-1], "test": []}
    (root / "dataset.json").write_text(json.dumps(meta, indent=4))
    return root


def _write_nnunet(root, n_cases=2, *, channels=1):
    """An nnU-Net v2 raw dataset: dataset.json without a case list, {case}_0000.nii.gz images."""
    for i in range(n_cases):
        image, label = _case_arrays(i)
        for ch in range(channels):
            save_volume(root / "imagesTr" / f"liver_{i}_{ch:04d}.nii.gz", image, GRID)
        save_volume(root / "labelsTr" / f"liver_{i}.nii.gz", label, GRID)
    (root / "imagesTr" / "._liver_0_0000.nii.gz").write_bytes(b"junk")
    meta = {"channel_names": {str(ch): "CT" for ch in range(channels)},
            "labels": {"background": 0, "hepatic vessel": 1, "tumour": 2},
            "numTraining": n_cases, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


# ------------------------------------------------------------------------------- reading
def test_reads_msd_layout_with_task08_labels_and_ignores_macos_junk(tmp_path):
    ds = read_msd_dataset(_write_msd(tmp_path / "Task08"))
    assert ds.layout == "msd" and ds.name == "HepaticVessel" and ds.channel == "CT"
    assert [c.name for c in ds.cases] == ["hepaticvessel_000", "hepaticvessel_001"]  # sorted, junk skipped
    assert ds.labels == {0: "background", 1: "Vessel", 2: "Tumour"}
    assert ds.label_values == (1,)
    assert "1 'Vessel'" in ds.label_note and "2 'Tumour' counts as background" in ds.label_note
    assert ds.sparsified_every is None and ds.cases[0].sdf is None
    for i, case in enumerate(ds.cases):
        loaded = load_case(ds, case)
        image, label = _case_arrays(i)
        np.testing.assert_array_equal(loaded.image, image)
        np.testing.assert_array_equal(loaded.mask, label == 1)
        assert loaded.grid == GRID and loaded.name == case.name and loaded.sdf_mm is None
    # By name (any case) and by number, as --label passes them.
    tumour = read_msd_dataset(tmp_path / "Task08" / "dataset.json", label="tumour")
    assert tumour.label_values == (2,)
    np.testing.assert_array_equal(load_case(tumour, "hepaticvessel_001").mask, _case_arrays(1)[1] == 2)
    assert read_msd_dataset(tmp_path / "Task08", label="2").label_values == (2,)


def test_reads_nnunet_v1_lists_whose_files_carry_the_channel_suffix(tmp_path):
    ds = read_msd_dataset(_write_msd(tmp_path / "Task008", channel_suffix=True, junk=False))
    assert ds.cases[1].image.name == "hepaticvessel_001_0000.nii.gz"
    assert ds.cases[1].name == "hepaticvessel_001"
    np.testing.assert_array_equal(load_case(ds, ds.cases[1]).image, _case_arrays(1)[0])


def test_reads_nnunet_v2_layout(tmp_path):
    ds = read_msd_dataset(_write_nnunet(tmp_path / "Dataset008_Hepatic", 3))
    assert ds.layout == "nnunet" and ds.name == "Dataset008_Hepatic"
    assert [c.name for c in ds.cases] == ["liver_0", "liver_1", "liver_2"]
    assert ds.labels == {0: "background", 1: "hepatic vessel", 2: "tumour"}
    assert ds.label_values == (1,)  # "hepatic vessel" is named like "vessel"
    loaded = load_case(ds, "liver_2")
    np.testing.assert_array_equal(loaded.mask, _case_arrays(2)[1] == 1)
    assert loaded.grid == GRID


def test_label_choice_rules_and_notes():
    labels = {0: "background", 1: "Vessel", 2: "Tumour"}
    assert choose_label(labels) == ((1,), ("vessel = label 1 'Vessel' (named like 'vessel'); 2 'Tumour' counts as "
                                           "background; --label chooses another"))
    assert choose_label(labels, "VESSEL")[0] == (1,)  # case-insensitive exact name
    assert choose_label(labels, "tum") == ((2,), "vessel = label 2 'Tumour' (--label 'tum')")  # unique substring
    assert choose_label(labels, 2) == choose_label(labels, "2") == ((2,), "vessel = label 2 'Tumour' (--label 2)")
    # Exact name wins over a substring of another name.
    assert choose_label({0: "bg", 1: "vessel", 2: "vessel wall"}, "vessel")[0] == (1,)
    # Several names like "vessel" all count; none: every non-zero label.
    assert choose_label({0: "bg", 1: "portal vessel", 2: "hepatic vessel", 3: "liver"})[0] == (1, 2)
    values, note = choose_label({0: "background", 1: "artery", 2: "vein"})
    assert values == (1, 2)
    assert note.startswith("no label is named like 'vessel': every non-zero label counts as vessel (1 'artery', 2 'vein')")
    for bad, message in (("liver", "no label named 'liver'"), (3, "no label 3"), (0, "label 0 is the background")):
        with pytest.raises(VesselfieldError, match=message) as info:
            choose_label(labels, bad)
        assert "available labels: 1 'Vessel', 2 'Tumour'" in str(info.value)
    with pytest.raises(VesselfieldError, match="'vein' matches several labels .1 'portal vein', 2 'hepatic vein'."):
        choose_label({0: "background", 1: "portal vein", 2: "hepatic vein"}, "vein")


# ------------------------------------------------------------------------------- bad input
def _corrupt(root, kind: str):
    """Turn a good MSD dataset in ``root`` into one with the named problem."""
    image_path = root / "imagesTr" / "hepaticvessel_001.nii.gz"
    label_path = root / "labelsTr" / "hepaticvessel_001.nii.gz"
    image, label = _case_arrays(1)
    if kind == "no-json":
        (root / "dataset.json").unlink()
    elif kind == "missing-file":
        label_path.unlink()
    elif kind == "grids":
        save_volume(label_path, label, VolumeGrid(GRID.shape, GRID.spacing_mm, (-3.5, 2.0, 11.0)))
    elif kind == "2d":
        nib.save(nib.Nifti1Image(image[:, :, 0], np.eye(4)), str(image_path))
    elif kind == "one-slice":
        save_volume(image_path, image[:, :, :1], VolumeGrid(GRID.shape[:2] + (1,), GRID.spacing_mm, GRID.origin_mm))
    elif kind == "nan":
        image[3, 4, 5] = np.nan
        save_volume(image_path, image, GRID)
    elif kind == "no-class":
        save_volume(label_path, np.where(label == 1, 0, label).astype(np.uint8), GRID)
    elif kind == "fractional":
        save_volume(label_path, label.astype(np.float32) * 0.5, GRID)
    elif kind == "unlisted-value":
        save_volume(label_path, np.where(label == 2, 7, label).astype(np.uint8), GRID)
    elif kind == "multi-modal":
        meta = json.loads((root / "dataset.json").read_text())
        meta["modality"] = {"0": "FLAIR", "1": "T1w"}
        (root / "dataset.json").write_text(json.dumps(meta))
    return root


@pytest.mark.parametrize("kind, message", [
    ("no-json", "has no dataset.json"),
    ("missing-file", "lists label"),
    ("grids", "are on different grids"),
    ("2d", "must be 3D, got shape (16, 14)"),
    ("one-slice", "is 2D (shape (16, 14, 1))"),
    ("nan", "contains 1 NaN or infinite value(s)"),
    ("no-class", "holds no voxel of label 1 'Vessel' (values present: 0, 2)"),
    ("fractional", "holds non-integer values (0.5)"),
    ("unlisted-value", "holds value(s) 7 that dataset.json does not list"),
    ("multi-modal", "2 channels (FLAIR, T1w): only single-channel"),
])
def test_bad_datasets_are_one_line_errors_naming_the_file(tmp_path, capsys, kind, message):
    root = _corrupt(_write_msd(tmp_path / "Task08", junk=False), kind)
    out = tmp_path / "sparse"
    err = expect_user_error(capsys, ["data", "sparsify", "--every", "2", root, out, "--quiet"], message, out_dir=out)
    if kind not in ("no-json", "multi-modal"):
        assert "hepaticvessel_001" in err  # names the file (or case) at fault
    # export-nnunet reads the same way: same error, nothing created.
    expect_user_error(capsys, ["data", "export-nnunet", root, tmp_path / "raw", "--quiet"], message,
                      out_dir=tmp_path / "raw")


def test_bad_arguments_and_layouts(tmp_path, capsys):
    root = _write_msd(tmp_path / "Task08", junk=False)
    out = tmp_path / "o"
    expect_user_error(capsys, ["data", "sparsify", "--every", "2", root, out, "--label", "liver"],
                      "no label named 'liver' in the dataset; available labels: 1 'Vessel', 2 'Tumour'", out_dir=out)
    expect_user_error(capsys, ["data", "sparsify", "--every", "0", root, out], "every must be an integer >= 1",
                      out_dir=out)
    expect_user_error(capsys, ["data", "sparsify", "--every", "2", "--offset", "2", root, out],
                      "offset must be smaller than every", out_dir=out)
    # Every 12th of 12 slices keeps one slice.
    expect_user_error(capsys, ["data", "sparsify", "--every", "12", root, out, "--quiet"], "keeps fewer than 2",
                      out_dir=out)
    expect_user_error(capsys, ["data", "sparsify", "--every", "2", tmp_path / "nowhere", out], "does not exist",
                      out_dir=out)
    expect_user_error(capsys, ["data", "export-nnunet", root, out, "--dataset-id", "1000"], "1..999", out_dir=out)
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    expect_user_error(capsys, ["data", "sparsify", "--every", "2", root, out], "is not empty")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    # nnU-Net: a second channel, and a numTraining that does not match the files.
    multi = _write_nnunet(tmp_path / "Dataset009_Two", channels=2)
    with pytest.raises(VesselfieldError, match="channels .* only single-channel"):
        read_msd_dataset(multi)
    one = _write_nnunet(tmp_path / "Dataset010_One")
    (one / "imagesTr" / "liver_1_0000.nii.gz").unlink()
    with pytest.raises(VesselfieldError, match="numTraining 2 but .* holds 1 case"):
        read_msd_dataset(one)
    meta = json.loads((one / "dataset.json").read_text())
    meta["labels"]["liver"] = [1, 2]
    (one / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(VesselfieldError, match="region-based nnU-Net labels are not supported"):
        read_msd_dataset(one)


# ------------------------------------------------------------------------------- sparsify
DENSE = VolumeGrid((20, 18, 21), (0.6, 0.6, 1.0), (-6.0, -5.4, -10.0))
BALL_CENTRE, BALL_RADIUS = (0.3, -0.2, 0.4), 4.5


def _dense_ball_dataset(root):
    """One case whose vessel (label 1) is a ball and whose tumour (label 2) a slab: dense z, 1 mm."""
    label = ball(DENSE, BALL_CENTRE, BALL_RADIUS).astype(np.uint8)
    label[:, :2, :] = 2
    image = np.where(label == 1, 300.0, 40.0).astype(np.float32) + DENSE.voxel_centers_mm()[..., 2]
    write_msd_dataset(root, [CaseVolumes("ball", image, label, DENSE)], labels={0: "background", 1: "vessel",
                                                                                 2: "tumour"})
    return root, image, label


def test_sparsify_keeps_world_positions_and_the_dense_truth(tmp_path, capsys):
    src, image, label = _dense_ball_dataset(tmp_path / "dense")
    out = tmp_path / "every3"
    assert main(["data", "sparsify", "--every", "3", "--offset", "1", str(src), str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "vessel = label 1 'vessel'" in printed and "z spacing 1 -> 3 mm" in printed
    assert f"wrote {out / 'dataset.json'}" in printed
    ds = read_msd_dataset(out)
    assert ds.sparsified_every == 3 and ds.sparsify_offset == 1
    assert ds.labels == {0: "background", 1: "vessel"} and ds.label_values == (1,)
    assert ds.provenance["source"] == str(src) and ds.provenance["label_values"] == [1]
    loaded = load_case(ds, "ball")
    kept = np.arange(1, DENSE.shape[2], 3)  # slices 1, 4, ..., 19
    assert loaded.grid.shape == (20, 18, len(kept)) and loaded.grid.spacing_mm == (0.6, 0.6, 3.0)
    # Every kept voxel keeps its world position, and a kept slice equals the dense slice.
    np.testing.assert_allclose(loaded.grid.index_to_world([[2, 3, k] for k in range(len(kept))]),
                               DENSE.index_to_world([[2, 3, k] for k in kept]), atol=1e-9)
    np.testing.assert_array_equal(loaded.image, image[:, :, kept])
    np.testing.assert_array_equal(loaded.mask, label[:, :, kept] == 1)
    # sdfTr is the exact SDF of the DENSE mask (dense spacing), sampled at the kept slices.
    dense_sdf = signed_distance_from_mask(label == 1, DENSE.spacing_mm, exact=True)
    np.testing.assert_array_equal(loaded.sdf_mm, dense_sdf[:, :, kept])
    dense_mask, dense_grid = load_dense_mask(ds, "ball")
    np.testing.assert_array_equal(dense_mask, label == 1)
    assert dense_grid == DENSE
    # The chosen class is what becomes "vessel": here the tumour slab.
    tumour = sparsify_dataset(src, tmp_path / "tumour", 2, label="tumour")
    assert tumour.lines[0] == "vessel = label 2 'tumour' (--label 'tumour')"
    np.testing.assert_array_equal(load_case(read_msd_dataset(tmp_path / "tumour"), "ball").mask,
                                  label[:, :, ::2] == 2)
    # Sparsifying a sparsified dataset is refused: its truth would no longer be dense.
    with pytest.raises(VesselfieldError, match="already sparsified"):
        sparsify_dataset(out, tmp_path / "again", 2)


def test_sparse_sdf_matches_the_analytic_ball(tmp_path):
    src, _, _ = _dense_ball_dataset(tmp_path / "dense")
    sparsify_dataset(src, tmp_path / "every2", 2)
    loaded = load_case(read_msd_dataset(tmp_path / "every2"), "ball")
    truth = sphere_sdf(loaded.grid.voxel_centers_mm(np.float64), BALL_CENTRE, BALL_RADIUS)
    # The mask's surface is the boundary of its voxel boxes: it lies between the spheres of radius
    # R - h and R + h, h = half the dense voxel diagonal (0.5 * |(0.6, 0.6, 1.0)| = 0.656 mm), so
    # the exact box distance is within h of the sphere's SDF everywhere (measured: 0.63 mm).
    h = 0.5 * float(np.linalg.norm(DENSE.spacing))
    error = np.abs(loaded.sdf_mm - truth)
    assert error.max() <= h + 1e-5, error.max()
    assert np.all(np.sign(loaded.sdf_mm[np.abs(truth) > h]) == np.sign(truth[np.abs(truth) > h]))
    assert loaded.sdf_mm.min() == pytest.approx(truth.min(), abs=h)  # ~ -4 mm deep: mm, not voxels


# ------------------------------------------------------------------------------- nnU-Net export
def test_export_nnunet_round_trip(tmp_path, capsys):
    src = _write_msd(tmp_path / "Task08")
    raw = tmp_path / "nnUNet_raw"
    assert main(["data", "export-nnunet", str(src), str(raw), "--dataset-id", "8", "--name", "Hepatic Vessel",
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    folder = raw / "Dataset008_HepaticVessel"
    assert "vessel = label 1 'Vessel'" in printed and f"wrote {folder / 'dataset.json'}" in printed
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT"} and meta["labels"] == {"background": 0, "vessel": 1}
    assert meta["numTraining"] == 2 and meta["file_ending"] == ".nii.gz" and "training" not in meta
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == ["hepaticvessel_000_0000.nii.gz",
                                                                       "hepaticvessel_001_0000.nii.gz"]
    assert load_volume(folder / "labelsTr" / "hepaticvessel_001.nii.gz")[0].dtype == np.uint8
    source, exported = read_msd_dataset(src), read_msd_dataset(folder)
    assert exported.layout == "nnunet" and exported.label_values == (1,)
    assert [c.name for c in exported.cases] == [c.name for c in source.cases]
    for case in source.cases:
        a, b = load_case(source, case), load_case(exported, case.name)
        np.testing.assert_array_equal(b.image, a.image)
        np.testing.assert_array_equal(b.mask, a.mask)
        assert b.grid == a.grid
    # The same folder again is refused, and nothing in it changes.
    expect_user_error(capsys, ["data", "export-nnunet", src, raw, "--dataset-id", "8", "--name", "HepaticVessel"],
                      "is not empty")
    # A sparsified dataset keeps its provenance.
    sparse = tmp_path / "sparse"
    sparsify_dataset(src, sparse, 2)
    export_nnunet(sparse, raw, dataset_id=501, name="Sparse")
    assert read_msd_dataset(raw / "Dataset501_Sparse").sparsified_every == 2


# ------------------------------------------------------------------------------- synthetic datasets
def test_phantom_ct_dataset(tmp_path, capsys):
    make_phantom_ct_dataset(tmp_path / "p", n_cases=2, seed=3)
    ds = read_msd_dataset(tmp_path / "p")
    assert [c.name for c in ds.cases] == ["phantom_000", "phantom_001"] and ds.label_values == (1,)
    cases = [load_case(ds, c) for c in ds.cases]
    for c in cases:
        assert c.image.shape == (64, 64, 32) and c.grid.spacing_mm == (0.8, 0.8, 0.8)
        # Two trees of 1-4 mm radius tubes in a 51.2 x 51.2 x 25.6 mm box: 0.5 % - 30 % of it.
        assert 0.005 < c.mask.mean() < 0.3
        # ct_like_image: 350 HU vessel on 40 HU tissue, blurred 0.6 mm: inside >> outside.
        assert c.image[c.mask].mean() > c.image[~c.mask].mean() + 150
    assert not np.array_equal(cases[0].mask, cases[1].mask)  # one seed per case
    # Same seed, same dataset, through the command line.
    assert main(["data", "synth-ct", "phantoms", "--out", str(tmp_path / "q"), "--cases", "1", "--seed", "3",
                 "--quiet"]) == 0
    again = read_msd_dataset(tmp_path / "q")
    np.testing.assert_array_equal(load_case(again, "phantom_000").image, cases[0].image)
    capsys.readouterr()
    small = make_phantom_ct_dataset(tmp_path / "s", n_cases=1, shape=(24, 20, 10), spacing_mm=(0.5, 0.5, 1.0))
    assert small.lines[0] == "1 phantom case(s), shape (24, 20, 10), spacing (0.5, 0.5, 1.0) mm, seed 0"
    assert load_case(read_msd_dataset(tmp_path / "s"), "phantom_000").mask.any()
    expect_user_error(capsys, ["data", "synth-ct", "phantoms", "--out", tmp_path / "r", "--regions", "2"],
                      "--regions does not apply to synth-ct phantoms", out_dir=tmp_path / "r")
    expect_user_error(capsys, ["data", "synth-ct", "brain", "--out", tmp_path / "r"], "unknown synthetic dataset",
                      out_dir=tmp_path / "r")


def test_hepatic_ct_dataset_keeps_the_published_labels(tmp_path):
    # inplane_factor 8: 64 x 64 in-plane voxels, fast; labels as published (1 Vessel, 2 Tumour).
    make_hepatic_ct_dataset(tmp_path / "h", inplane_factor=8)
    ds = read_msd_dataset(tmp_path / "h")
    assert ds.labels == {0: "background", 1: "Vessel", 2: "Tumour"} and ds.label_values == (1,)
    assert [c.name for c in ds.cases] == ["hepaticvessel_002", "hepaticvessel_008", "hepaticvessel_010"]
    for case, slices, dz in zip(ds.cases, (66, 47, 49), (3.75, 5.0, 4.0)):
        c = load_case(ds, case)
        labels = load_volume(case.label)[0]
        assert c.grid.shape == (64, 64, slices) and c.grid.spacing_mm[2] == dz
        assert set(np.unique(labels)) == {0, 1, 2}
        vessel, tumour, liver = (float(c.image[labels == v].mean()) for v in (1, 2, 0))
        # 180 / 40 / 100 HU mixed over 8 x 8 blocks: vessel brighter, tumour darker than liver.
        assert vessel > liver + 20 and tumour < liver - 20, (vessel, liver, tumour)


def test_hepatic_block_merge_conserves_vessel_volume_and_position():
    path = sample_path("hepatic_msd", "hepaticvessel_008_vsnet.nii.gz")
    labels, grid = load_volume(path)
    case = hepatic_case(path, seed=0, inplane_factor=4, crop_margin_mm=10.0)
    assert case.grid.spacing_mm == (3.375, 3.375, 5.0)  # 4 x 0.84375 in plane, slices unchanged
    # Block centres: the vessel's centroid moves by less than one output voxel.
    before = grid.index_to_world(np.argwhere(labels == 1)).mean(axis=0)
    after = case.grid.index_to_world(np.argwhere(case.label == 1)).mean(axis=0)
    assert np.all(np.abs(after - before) < np.array(case.grid.spacing_mm)), (before, after)
    # Cropped to the labels (x 130-330, y 157-302 of 512) plus 10 mm (12 voxels): 224 x 170 -> 56 x 42.
    assert case.label.shape == (56, 42, 47)


def test_vmtk_aorta_dataset_split_by_region(tmp_path, capsys):
    assert main(["data", "synth-ct", "vmtk-aorta", "--out", str(tmp_path / "a"), "--regions", "2", "--quiet"]) == 0
    assert "slices 0-16, slices 17-33" in capsys.readouterr().out
    ds = read_msd_dataset(tmp_path / "a")
    assert [c.name for c in ds.cases] == ["aorta_part0", "aorta_part1"]
    assert ds.labels == {0: "background", 1: "aorta"} and ds.label_values == (1,)
    assert ds.label_note.startswith("no label is named like 'vessel'")
    image, grid = load_volume(sample_path("vmtk_aorta", "aorta.mha"))
    level, _ = load_volume(sample_path("vmtk_aorta", "aorta-final-levelset.mha"))
    parts = [load_case(ds, c) for c in ds.cases]
    for part, start in zip(parts, (0, 17)):
        assert part.grid.shape == (157, 393, 17)
        np.testing.assert_allclose(part.grid.origin, grid.index_to_world([0, 0, start]), atol=1e-5)
        np.testing.assert_array_equal(part.image, image[:, :, start:start + 17])
        np.testing.assert_array_equal(part.mask, level[:, :, start:start + 17] < 0)
    assert sum(int(p.mask.sum()) for p in parts) == int((level < 0).sum()) == 11590
    make_vmtk_aorta_dataset(tmp_path / "whole")
    assert [c.name for c in read_msd_dataset(tmp_path / "whole").cases] == ["aorta"]


def test_vmtk_aorta_split_along_the_vessel_cropped_to_the_label(tmp_path):
    # The aorta runs along y; its level set labels y slices 214-308 only (measured from the file).
    make_vmtk_aorta_dataset(tmp_path / "y", regions=2, axis=1, crop_to_label=True)
    ds = read_msd_dataset(tmp_path / "y")
    image, grid = load_volume(sample_path("vmtk_aorta", "aorta.mha"))
    level, _ = load_volume(sample_path("vmtk_aorta", "aorta-final-levelset.mha"))
    parts = [load_case(ds, c) for c in ds.cases]
    for part, (start, stop) in zip(parts, ((214, 262), (262, 309))):
        assert part.grid.shape == (157, stop - start, 34)
        np.testing.assert_allclose(part.grid.origin, grid.index_to_world([0, start, 0]), atol=1e-5)
        np.testing.assert_array_equal(part.image, image[:, start:stop, :])
        np.testing.assert_array_equal(part.mask, level[:, start:stop, :] < 0)
    # Cropping to the label's extent loses no labelled voxel.
    assert sum(int(p.mask.sum()) for p in parts) == 11590
