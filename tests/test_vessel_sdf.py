"""VesselSDF: networks, the detach, sliding windows, resampling, train / predict end to end, resume, CLI errors."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import expect_user_error

from vesselfield.cli import main
from vesselfield.datasets.msd import CaseVolumes, write_msd_dataset
from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid
from vesselfield.io.volumes import load_volume, save_volume
from vesselfield.methods.vessel_sdf import (
    VARIANTS,
    VesselSdfConfig,
    build_model,
    make_objective,
    predict_volume,
)
from vesselfield.networks.unet import pooling_strides, total_strides
from vesselfield.phantoms.ct import ct_like_image

SPACING = (0.8, 0.8, 3.2)
# Tiny networks: every variant trains an epoch in well under a second.
TINY = ["channels=4,8", "refiner_channels=4,8", "patches_per_case=2"]


def _tube_case(name, seed, shape=(24, 24, 8), spacing=SPACING):
    rng = np.random.default_rng(seed)
    g = VolumeGrid(shape, spacing)
    x, y, z = np.meshgrid(*g.axes_mm(), indexing="ij")
    c = rng.uniform(7, 12, 2)
    occ = (((x - c[0] - 0.1 * z) ** 2 + (y - c[1]) ** 2) < rng.uniform(2, 3.5) ** 2).astype(np.uint8)
    return CaseVolumes(name, ct_like_image(occ.astype(np.float32), g, seed=seed), occ, g)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ct") / "ds"
    write_msd_dataset(root, [_tube_case(f"case{i}", i) for i in range(3)])
    return root


# ------------------------------------------------------------------------------- networks
def test_pooling_strides_follow_the_anisotropy():
    # 0.8 x 0.8 x 3.2 mm: in-plane axes are pooled until their voxels reach 3.2 mm (two levels:
    # 1.6, then 3.2), then all three; z alone never goes below 4 voxels.
    assert pooling_strides((0.8, 0.8, 3.2), (64, 64, 16), 3) == [(2, 2, 1), (2, 2, 1), (2, 2, 2)]
    assert total_strides([(2, 2, 1), (2, 2, 1), (2, 2, 2)]) == (8, 8, 2)
    # Isotropic: every axis every level.
    assert pooling_strides((1, 1, 1), (32, 32, 32), 2) == [(2, 2, 2), (2, 2, 2)]
    # An axis with too few voxels is not pooled: 8 -> 4 once, then never below 4.
    assert pooling_strides((1, 1, 1), (32, 32, 8), 2) == [(2, 2, 2), (2, 2, 1)]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_has_the_right_outputs_and_shapes(variant):
    config = VesselSdfConfig(variant=variant, channels=(4, 8, 16), refiner_channels=(4, 8))
    strides = pooling_strides(SPACING, (32, 32, 8), 2)
    model = build_model(config, strides, pooling_strides(SPACING, (32, 32, 8), 1))
    out = model(torch.randn(2, 1, 32, 32, 8))
    assert (out["occupancy_logits"] is not None) == config.has_occupancy
    assert (out["sdf_mm"] is not None) == config.has_sdf
    for t in out.values():
        if t is not None:
            assert t.shape == (2, 1, 32, 32, 8)
    if config.has_sdf:
        # The SDF head starts at zero (its last convolution is zero-initialised): the SDF starts
        # as the residual refiner's prior of the stage-1 occupancy, or 0 without a refiner.
        expected = torch.zeros_like(out["sdf_mm"])
        if out["occupancy_logits"] is not None:
            expected = config.refiner_prior_mm * (1 - 2 * torch.sigmoid(out["occupancy_logits"]))
        torch.testing.assert_close(out["sdf_mm"], expected, rtol=0, atol=1e-6)


def test_stage_two_is_detached_from_stage_one():
    config = VesselSdfConfig(channels=(4, 8), refiner_channels=(4, 8))
    model = build_model(config, [(2, 2, 1)], [(2, 2, 1)])
    out = model(torch.randn(1, 1, 16, 16, 4))
    # Make the SDF depend on the input (the zero-initialised head would give zero gradients).
    torch.nn.init.normal_([m for m in model.refiner.modules() if isinstance(m, torch.nn.Conv3d)][-1].weight)
    out = model(torch.randn(1, 1, 16, 16, 4))
    out["sdf_mm"].abs().mean().backward()
    stage1 = [p.grad for p in model.occupancy_net.parameters()]
    stage2 = [p.grad for p in model.refiner.parameters()]
    assert all(g is None for g in stage1)  # no gradient of an SDF term reaches stage 1
    assert any(g is not None and float(g.abs().sum()) > 0 for g in stage2)
    model.zero_grad()
    model(torch.randn(1, 1, 16, 16, 4))["occupancy_logits"].mean().backward()
    assert all(p.grad is not None for p in model.occupancy_net.parameters() if p.requires_grad)


def test_objective_gradients_reach_both_stages_through_their_own_terms():
    config = VesselSdfConfig(channels=(4, 8), refiner_channels=(4, 8))
    model = build_model(config, [(2, 2, 1)], [(2, 2, 1)])
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.randn(2, 1, 16, 16, 6, generator=g),
             "occupancy": (torch.rand(2, 1, 16, 16, 6, generator=g) > 0.7).float(),
             "sdf_mm": torch.randn(2, 1, 16, 16, 6, generator=g), "spacing_mm": torch.tensor([SPACING, SPACING])}
    loss, terms = make_objective(config)(model, batch)
    assert set(terms) == {"occ", "sdf", "eik", "gauss", "sur"}
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_sliding_window_on_a_volume_larger_than_the_patch_equals_the_pointwise_result():
    # A pointwise network (1x1x1 convolutions) gives the same value in every window covering a
    # voxel, and Gaussian blending of equal values returns that value: the sliding window must
    # reproduce the whole-volume result to float32 rounding (weights sum to 1: ~1e-6 relative).
    net_cls = type(build_model(VesselSdfConfig(variant="attention-unet", channels=(4, 8)), [(2, 2, 1)], [(2, 2, 1)]))
    torch.manual_seed(0)
    occ = torch.nn.Conv3d(1, 1, 1)
    ref = torch.nn.Conv3d(1, 1, 1)
    model = net_cls(occ, ref, None, 10.0)
    image = np.random.default_rng(1).standard_normal((40, 35, 13)).astype(np.float32)
    out = predict_volume(model, image, (16, 16, 8), overlap=0.25, sw_batch_size=3)
    with torch.no_grad():
        direct = model(torch.from_numpy(image)[None, None])
    assert out["occupancy"].shape == image.shape and out["sdf_mm"].shape == image.shape
    np.testing.assert_allclose(out["occupancy"], torch.sigmoid(direct["occupancy_logits"])[0, 0].numpy(), atol=1e-5)
    np.testing.assert_allclose(out["sdf_mm"], direct["sdf_mm"][0, 0].numpy(), atol=1e-4 * 10)


# ------------------------------------------------------------------------------- config
def test_config_fills_and_checks():
    assert VesselSdfConfig().lambda_gauss == 0.1
    assert VesselSdfConfig(variant="vessel-sdf-no-gauss").lambda_gauss == 0.0
    with pytest.raises(VesselfieldError, match="without L_gauss"):
        VesselSdfConfig(variant="vessel-sdf-no-gauss", lambda_gauss=0.1)
    with pytest.raises(VesselfieldError, match="variant"):
        VesselSdfConfig(variant="nnunet")
    # The paper's trainer settings are the defaults of the nested group, also when one is changed.
    from vesselfield.config import build_config

    c = build_config(VesselSdfConfig, {"trainer.epochs": 3}, ["trainer.batch_size=4"])
    assert (c.trainer.epochs, c.trainer.batch_size, c.trainer.learning_rate) == (3, 4, 5e-4)


# ------------------------------------------------------------------------------- resampling
def test_resample_linear_reproduces_a_linear_field_and_iso_grid():
    from vesselfield.meshing.occupancy import iso_grid_over, resample_linear

    g = VolumeGrid((10, 9, 5), (0.8, 0.8, 4.0), (1.0, -2.0, 3.0))
    x, y, z = np.meshgrid(*g.axes_mm(), indexing="ij")
    f = (0.3 * x - 0.2 * y + 0.7 * z + 1.0).astype(np.float32)
    iso = iso_grid_over(g, 0.8)
    # (5 - 1) * 4 mm = 16 mm -> 21 centres at 0.8 mm; x, y keep their 10 and 9.
    assert iso.shape == (10, 9, 21) and iso.origin_mm == g.origin_mm
    up = resample_linear(f, g, iso)
    xi, yi, zi = np.meshgrid(*iso.axes_mm(), indexing="ij")
    # float32 sums of two weighted values of magnitude <= 20: rounding ~1e-5.
    np.testing.assert_allclose(up, 0.3 * xi - 0.2 * yi + 0.7 * zi + 1.0, atol=1e-4)


def test_save_volume_like_keeps_the_reference_affine(tmp_path):
    import nibabel as nib

    from vesselfield.io.volumes import save_volume_like

    data = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2)
    affine = np.array([[0.0, 0.9, 0, -10], [-0.8, 0, 0, 20], [0, 0, 4.0, 5], [0, 0, 0, 1]])  # permuted, flipped
    ref = tmp_path / "ref.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), str(ref))
    array, grid = load_volume(ref)
    assert save_volume_like(tmp_path / "out.nii.gz", array * 2, grid, ref)
    out = nib.load(str(tmp_path / "out.nii.gz"))
    np.testing.assert_array_equal(out.affine, nib.load(str(ref)).affine)
    np.testing.assert_array_equal(np.asarray(out.dataobj), data * 2)


# ------------------------------------------------------------------------------- end to end
def _train(dataset, variant, out, *extra):
    return main(["train", variant, "--data", dataset, "--out", out, "--epochs", "1", "--quiet", "--set", *TINY,
                 *extra])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_smoke_train_and_predict_every_variant(dataset, tmp_path, variant, capsys):
    run = tmp_path / "run"
    assert _train(str(dataset), variant, str(run)) == 0
    for name in ("config.yaml", "log.csv", "last.pt", "best.pt", "model.pt", "summary.json"):
        assert (run / name).exists(), name
    log = (run / "log.csv").read_text().splitlines()
    assert len(log) == 2 and "val_dice" in log[0]
    pred = tmp_path / "pred"
    image = dataset / "imagesTr" / "case0.nii.gz"
    assert main(["predict", "--run", str(run), "--image", str(image), "--out", str(pred), "--quiet",
                 "--mesh-spacing", "0.8"]) == 0
    import nibabel as nib

    ref = nib.load(str(image))
    for name in ("sdf.nii.gz", "occupancy.nii.gz"):
        img = nib.load(str(pred / name))
        assert img.shape == ref.shape
        np.testing.assert_array_equal(img.affine, ref.affine)
    occ = np.asarray(nib.load(str(pred / "occupancy.nii.gz")).dataobj)
    assert occ.min() >= 0 and occ.max() <= 1
    summary = json.loads((pred / "summary.json").read_text())
    assert summary["variant"] == variant and summary["mesh_spacing_mm"] == 0.8
    # report.html with its 3D view: the CT and, when the prediction has a surface, that surface.
    page = (pred / "report.html").read_text(encoding="utf-8")
    payload = json.loads(page.split('window.__vfViewerData["vf-view-1"]=', 1)[1].split(";\n", 1)[0])
    assert payload["volumes"][0]["name"] == "image"
    assert ("mesh" in summary["files"]) == any(m["name"] == "surface" for m in payload["meshes"])


def test_mesh_is_upsampled_from_the_continuous_field_in_world_mm(dataset, tmp_path):
    # A trained SDF is not needed to check the mesh path: a ball's exact SDF on sparse slices,
    # upsampled and meshed, lies on the ball within the trilinear error and is not a staircase.
    from vesselfield.pipelines.predict_ct import upsampled_surface

    g = VolumeGrid((40, 40, 10), (0.8, 0.8, 3.2), (-16.0, -16.0, -14.4))
    x, y, z = np.meshgrid(*g.axes_mm(), indexing="ij")
    sdf = (np.sqrt(x ** 2 + y ** 2 + z ** 2) - 8.0).astype(np.float32)
    mesh, iso = upsampled_surface({"sdf_mm": sdf, "occupancy": None, "has_sdf": True}, g, 0.8)
    assert iso.spacing_mm == (0.8, 0.8, 0.8)
    r = np.linalg.norm(mesh.vertices, axis=1)
    # Trilinear interpolation of |x| between slices 3.2 mm apart errs by at most h²/(8 d) =
    # 3.2²/(8 * 8) = 0.16 mm on the sphere (second derivative of |x| along z is <= 1/d).
    assert np.abs(r - 8.0).max() < 0.16 + 0.05
    # Vertices at every z level of the 0.8 mm grid, not only on the 3.2 mm slices.
    assert len(np.unique(np.round(mesh.vertices[:, 2], 3))) > 4 * 5


def test_resume_continues_exactly(dataset, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(["train", "vessel-sdf", "--data", str(dataset), "--out", str(full), "--epochs", "2", "--quiet",
                 "--set", *TINY]) == 0
    assert main(["train", "vessel-sdf", "--data", str(dataset), "--out", str(part), "--epochs", "1", "--quiet",
                 "--set", *TINY]) == 0
    assert main(["train", "vessel-sdf", "--data", str(dataset), "--out", str(part), "--epochs", "2", "--quiet",
                 "--resume", "--set", *TINY]) == 0
    a = torch.load(full / "last.pt", weights_only=True)["states"]["model"]
    b = torch.load(part / "last.pt", weights_only=True)["states"]["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_one_case_dataset_trains_and_validates_on_it_with_a_warning(tmp_path, capsys):
    root = tmp_path / "one"
    write_msd_dataset(root, [_tube_case("only", 5)])
    assert _train(str(root), "attention-unet", str(tmp_path / "run")) == 0
    out = capsys.readouterr().out
    assert "warning: the dataset has one case (only): training on it and validating on it too" in out


# ------------------------------------------------------------------------------- bad input
def test_bad_inputs_are_one_line_errors(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(str(dataset), "unet3d", str(run)) == 0
    capsys.readouterr()
    # A run folder of another variant cannot be resumed as this one.
    expect_user_error(capsys, ["train", "vessel-sdf", "--data", dataset, "--out", run, "--epochs", "1", "--resume",
                               "--set", *TINY], "different configuration")
    # predict with a run folder of another command.
    other = tmp_path / "fit"
    other.mkdir()
    (other / "config.yaml").write_text("command: vesselfield fit points --points p.npy --out fit\ninputs: {}\n"
                                       "config: {}\n")
    expect_user_error(capsys, ["predict", "--run", other, "--image", dataset / "imagesTr/case0.nii.gz", "--out",
                               tmp_path / "p"], "is a `fit points` run folder")
    # A NaN image and a 2D file.
    g = VolumeGrid((24, 24, 8), SPACING)
    bad = np.zeros(g.shape, dtype=np.float32)
    bad[3, 3, 3] = np.nan
    save_volume(tmp_path / "nan.nii.gz", bad, g)
    expect_user_error(capsys, ["predict", "--run", run, "--image", tmp_path / "nan.nii.gz", "--out", tmp_path / "p"],
                      "NaN", out_dir=tmp_path / "p")
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.float32), np.eye(4)), str(tmp_path / "flat.nii.gz"))
    expect_user_error(capsys, ["predict", "--run", run, "--image", tmp_path / "flat.nii.gz", "--out", tmp_path / "p"],
                      "3D", out_dir=tmp_path / "p")
    # A label that does not exist.
    expect_user_error(capsys, ["train", "unet3d", "--data", dataset, "--out", tmp_path / "r2", "--label", "artery"],
                      "artery", out_dir=tmp_path / "r2")
    # Unknown variant.
    expect_user_error(capsys, ["train", "nnunet", "--data", dataset, "--out", tmp_path / "r3"], "variant",
                      out_dir=tmp_path / "r3")


def test_predict_warns_on_a_very_different_spacing(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(str(dataset), "unet3d", str(run)) == 0
    case = _tube_case("coarse", 7, spacing=(2.0, 2.0, 3.2))
    save_volume(tmp_path / "coarse.nii.gz", case.image, case.grid)
    capsys.readouterr()
    assert main(["predict", "--run", str(run), "--image", str(tmp_path / "coarse.nii.gz"), "--out",
                 str(tmp_path / "p"), "--quiet"]) == 0
    assert "warning: the image's voxel size 2x2x3.2 mm differs from the training data's 0.8x0.8x3.2 mm" in \
        capsys.readouterr().out
    assert Path(tmp_path / "p" / "sdf.nii.gz").exists()


def test_our_overlap_metrics_agree_with_monai():
    # Our metrics are the reference; MONAI's DiceMetric and MeanIoU define the same ratios of
    # voxel counts, so the two agree to float32 rounding of a ratio of integers (< 1e-6).
    from monai.metrics import DiceMetric, MeanIoU

    from vesselfield.metrics import dice, iou

    rng = np.random.default_rng(4)
    for _ in range(3):
        pred = rng.random((20, 18, 9)) > 0.6
        target = rng.random((20, 18, 9)) > 0.5
        p = torch.from_numpy(pred)[None, None].float()
        t = torch.from_numpy(target)[None, None].float()
        monai_dice = float(DiceMetric(include_background=True)(p, t).item())
        monai_iou = float(MeanIoU(include_background=True)(p, t).item())
        assert dice(pred, target) == pytest.approx(monai_dice, abs=1e-6)
        assert iou(pred, target) == pytest.approx(monai_iou, abs=1e-6)


def test_training_writes_tensorboard_events(dataset, tmp_path):
    pytest.importorskip("tensorboard")  # in the test extras; optional for users
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    assert main(["train", "attention-unet", "--data", str(dataset), "--out", str(run), "--epochs", "2", "--quiet",
                 "--set", *TINY]) == 0
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert "train_loss" in tags or any(t.endswith("train_loss") for t in tags)
    series = [e for t in tags if t.endswith("val_dice") for e in events.Scalars(t)]
    assert [e.step for e in series] == [0, 1]


def test_train_under_torchrun_with_two_gloo_processes(dataset, tmp_path):
    # The multi-GPU path on the CPU: two processes (Gloo), DistributedDataParallel; rank 0 alone
    # writes the run folder, and the model it writes loads and predicts.
    import os
    import subprocess
    import sys

    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "vesselfield", "train", "attention-unet", "--data", str(dataset), "--out", str(run),
                           "--epochs", "2", "--quiet", "--device", "cpu", "--set", *TINY],
                          capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in run.iterdir() if p.name != "tensorboard") == [
        "best.pt", "config.yaml", "last.pt", "log.csv", "model.pt", "summary.json"]
    last = torch.load(run / "last.pt", weights_only=True)
    assert last["loop"]["world_size"] == 2
    assert len((run / "log.csv").read_text().splitlines()) == 3
    from vesselfield.pipelines.predict_ct import load_trained_run

    trained = load_trained_run(run)
    out = trained.predict(np.zeros((24, 24, 8), np.float32))
    assert out["occupancy"].shape == (24, 24, 8)


def test_every_config_field_is_documented_and_settable():
    import dataclasses

    from vesselfield.config import field_docs, format_value, parse_value

    docs = field_docs(VesselSdfConfig)
    assert not [f.name for f in dataclasses.fields(VesselSdfConfig) if not docs.get(f.name)]
    config = VesselSdfConfig()
    for f in dataclasses.fields(VesselSdfConfig):
        if f.name == "trainer":  # a nested group: set as trainer.FIELD (tested in test_config)
            continue
        assert parse_value(VesselSdfConfig, f.name, format_value(getattr(config, f.name))) == getattr(config, f.name)


def test_intensity_normalisation_statistics():
    from vesselfield.methods.vessel_sdf import IntensityNormalisation

    a = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    b = np.arange(1000, 2000, dtype=np.float32).reshape(10, 10, 10)
    # Every voxel when they fit: the percentiles and moments of 0..1999 (numpy's linear percentile).
    n = IntensityNormalisation.fit([a, b], (0.5, 99.5))
    assert (n.low, n.high) == pytest.approx((np.percentile(np.arange(2000), 0.5), np.percentile(np.arange(2000), 99.5)))
    clipped = np.clip(np.arange(2000.0), n.low, n.high)
    # The voxels are float32, so the clip bounds carry float32 rounding (2^-24 relative): 1e-6.
    assert (n.mean, n.std) == pytest.approx((clipped.mean(), clipped.std()), rel=1e-6)
    # Subsampled image by image, in proportion to size: 200 voxels from each; the statistics of a
    # uniform ramp stay within sampling error (std of a mean of 400 draws from U(0, 2000): 29).
    sub = IntensityNormalisation.fit([a, b], (0.5, 99.5), max_samples=400, seed=1)
    assert abs(sub.mean - 999.5) < 4 * 29
    x = n.apply(np.array([[[n.low - 5, n.high + 5]]], dtype=np.float32))
    assert x.ravel() == pytest.approx([(n.low - n.mean) / n.std, (n.high - n.mean) / n.std], rel=1e-5)
