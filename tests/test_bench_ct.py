"""The CT benchmark (vesselfield.bench.ct, vesselfield.pipelines.benchmark_ct, `vesselfield benchmark ct`).

Metrics on analytic masks (balls on a 1 mm grid), the split by case, the upsampling onto the dense
grid, the tables and CSV, then one tiny end-to-end benchmark through the command line (a
sparsified 3-case dataset, two methods, one epoch of two patches: a few seconds), its resume, and
the one-line errors.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os

import numpy as np
import pytest
from conftest import ball, expect_user_error

from vesselfield.bench import harness
from vesselfield.bench.ct import (
    CSV_COLUMNS,
    METRIC_COLUMNS,
    CtTask,
    case_metrics,
    evaluation_mask,
    field_of_view_mm,
    fragment_counts,
    predict_and_evaluate,
    split_cases,
    tables_markdown,
)
from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid

GRID = VolumeGrid.centered((40, 40, 40), (1.0, 1.0, 1.0))


# ======================================================================================= metrics
def test_two_balls_dice_and_iou_match_the_lens_volume():
    # Two balls of radius R whose centres are d apart overlap in a lens of volume
    # pi (4R + d)(2R - d)^2 / 12, so Dice = V_lens / V_ball and IoU = V_lens / (2 V_ball - V_lens).
    R, d = 10.0, 6.0
    pred, target = ball(GRID, (-d / 2, 0, 0), R), ball(GRID, (d / 2, 0, 0), R)
    m = case_metrics(pred, target, GRID)
    lens, whole = math.pi * (4 * R + d) * (2 * R - d) ** 2 / 12, 4 / 3 * math.pi * R ** 3
    # The voxelised ball of radius 10 voxels holds 4224 voxels for 4188.8 mm³ (0.8 %); the
    # measured gaps to the analytic values are 0.0011 (Dice) and 0.0010 (IoU): 0.01 is the bound.
    assert m["dice"] == pytest.approx(lens / whole, abs=0.01)
    assert m["iou"] == pytest.approx(lens / (2 * whole - lens), abs=0.01)
    assert m["jaccard_distance"] == pytest.approx(1 - m["iou"], abs=1e-12)
    assert m["components"] == m["target_components"] == 1 and m["floating_fragments"] == 0


def test_shifted_and_concentric_balls_have_the_chamfer_distances_of_spheres():
    # A sphere of radius R against its copy shifted by s <= 2R: a point at polar angle t lies
    # |sqrt(R² + s² - 2Rs cos t) - R| from the other sphere, whose mean over the sphere is exactly
    # s / 2; the Hausdorff distance of the shifted voxel sets is s (each boundary point of the
    # copy is s from the original one's, and the poles along the shift are not closer).
    s = 2.0
    m = case_metrics(ball(GRID, (0, 0, 0), 8.0), ball(GRID, (s, 0, 0), 8.0), GRID)
    # Marching-cubes surfaces of voxelised balls, measured 0.935 for R = 8 and 0.932 for R = 8.3.
    assert m["chamfer_mm"] == pytest.approx(s / 2, abs=0.1)
    assert m["hausdorff_mm"] == pytest.approx(s, abs=1e-9)
    assert m["hausdorff95_mm"] == pytest.approx(s, abs=1e-9)
    # Concentric spheres are the radius gap apart everywhere: measured 2.90 and 2.80 for
    # radii (6, 9) and (6.3, 9.3) voxels.
    m = case_metrics(ball(GRID, (0, 0, 0), 6.0), ball(GRID, (0, 0, 0), 9.0), GRID)
    assert m["chamfer_mm"] == pytest.approx(3.0, abs=0.25)


def test_cd_x100_divides_by_the_longest_side_of_the_field_of_view():
    grid = VolumeGrid.centered((40, 30, 20), (1.0, 1.0, 2.5))  # sides 40, 30, 50 mm
    assert field_of_view_mm(grid) == 50.0
    pred, target = ball(grid, (0, 0, 0), 6.0), ball(grid, (2.0, 0, 0), 6.0)
    m = case_metrics(pred, target, grid)
    assert m["fov_mm"] == 50.0
    assert m["cd_x100"] == pytest.approx(100 * m["chamfer_mm"] / 50.0, rel=1e-12)
    given = case_metrics(pred, target, grid, fov_mm=80.0)
    assert given["cd_x100"] == pytest.approx(100 * m["chamfer_mm"] / 80.0, rel=1e-12)
    with pytest.raises(VesselfieldError, match="fov_mm"):
        case_metrics(pred, target, grid, fov_mm=0.0)


def test_a_blob_away_from_the_target_is_one_floating_fragment():
    target = ball(GRID, (-6, 0, 0), 6.0)
    pred = target + ball(GRID, (12, 10, 0), 3.0)
    m = case_metrics(pred, target, GRID)
    assert m["components"] == 2 and m["floating_fragments"] == 1 and m["target_components"] == 1
    assert m["pred_voxels"] == np.count_nonzero(pred) and m["target_voxels"] == np.count_nonzero(target)
    # 26-connectivity: voxels meeting at a corner are one piece; a piece overlapping the target
    # by one voxel is not floating.
    a = np.zeros((4, 4, 4), bool)
    a[0, 0, 0] = a[1, 1, 1] = True
    t = np.zeros_like(a)
    t[1, 1, 1] = True
    assert fragment_counts(a, t) == (1, 0)
    assert fragment_counts(a, np.zeros_like(a)) == (1, 1)
    assert fragment_counts(np.zeros_like(a), t) == (0, 0)


def test_an_empty_prediction_has_infinite_distances():
    m = case_metrics(np.zeros(GRID.shape, bool), ball(GRID, (0, 0, 0), 5.0), GRID)
    assert m["dice"] == 0.0 and m["components"] == 0
    assert math.isinf(m["chamfer_mm"]) and math.isinf(m["cd_x100"]) and math.isinf(m["hausdorff_mm"])


def test_the_field_is_upsampled_between_sparse_slices():
    # A plane SDF f = z - 5.5 mm (and a probability linear in z) on slices 4 mm apart: trilinear
    # upsampling reproduces a linear field exactly, so the dense mask ends at z = 5 mm, which
    # neither neighbouring slice (z = 4, 8) would give.
    sparse = VolumeGrid((6, 5, 4), (1.0, 1.0, 4.0), (0.0, 0.0, 0.0))
    dense = VolumeGrid((6, 5, 13), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    z = np.broadcast_to(sparse.axes_mm()[2], sparse.shape).astype(np.float32)
    expected = np.broadcast_to(dense.axes_mm()[2] <= 5.0, dense.shape)
    with_sdf = {"sdf_mm": z - 5.5, "occupancy": (z < 5.5).astype(np.float32), "has_sdf": True}
    np.testing.assert_array_equal(evaluation_mask(with_sdf, sparse, dense), expected)
    occupancy_only = {"sdf_mm": z - 5.5, "occupancy": 0.5 - (z - 5.5) / 16, "has_sdf": False}
    np.testing.assert_array_equal(evaluation_mask(occupancy_only, sparse, dense), expected)
    # On its own grid the mask is the thresholded field.
    np.testing.assert_array_equal(evaluation_mask(with_sdf, sparse), z < 5.5)


# ========================================================================================= split
def test_split_by_case_is_seeded_and_keeps_a_training_case():
    names = [f"c{i}" for i in range(6)]
    train, test = split_cases(names, 1 / 3, seed=0)
    assert len(test) == 2 and sorted(train + test) == names and not set(train) & set(test)
    assert split_cases(names, 1 / 3, seed=0) == (train, test)
    assert split_cases(["a", "b"], 1 / 3, 0)[1] in (["a"], ["b"])  # round(2/3) = 1 test case
    assert split_cases(["a", "b", "c"], 0.01, 0)[1] != []  # at least one
    assert split_cases(names, test_cases=["c4", "c1"]) == (["c0", "c2", "c3", "c5"], ["c1", "c4"])
    for args, kwargs, message in (
        ((["a"],), {}, "at least two cases"),
        ((names, 1.0), {}, "test fraction"),
        ((["a", "b"], 0.9), {}, "leaves no training case"),
        ((names,), {"test_cases": ["zz"]}, "not in the dataset"),
        ((["a", "b"],), {"test_cases": ["a", "b"]}, "every case"),
    ):
        with pytest.raises(VesselfieldError, match=message):
            split_cases(*args, **kwargs)


# ======================================================================================== tables
def _row(method, case, dice, *, status="ok", chamfer=1.0, components=1.0):
    row = dict.fromkeys(CSV_COLUMNS)
    row.update(method=method, case=case, status=status, error="" if status == "ok" else "boom")
    if status == "ok":
        row.update({k: 0.5 for k in METRIC_COLUMNS}, dice=dice, chamfer_mm=chamfer, components=components,
                   eval_grid="image", predict_seconds=0.1, device="cpu")
    return row


def test_tables_have_the_papers_layouts_and_the_csv_its_columns(tmp_path):
    rows = [_row("unet3d", "a", 0.6), _row("unet3d", "b", 0.8, chamfer=math.nan, components=3.0),
            _row("vessel-sdf", "a", 0.7), _row("vessel-sdf", "b", 0.9),
            _row("attention-unet", "a", None, status="failed"), _row("attention-unet", "b", 0.5)]
    text = tables_markdown(rows, title="T", header="H", methods=["unet3d", "vessel-sdf", "attention-unet"],
                           training={"vessel-sdf": {"epochs_done": 3, "stopped_by": "epochs", "train_seconds": 1.5}})
    lines = text.splitlines()
    header = "| Model | n | Dice ↑ | IoU ↑ | JD ↓ | CD×100 ↓ | HD (mm) ↓ | HD95 (mm) ↓ | clDice ↑ | CD (mm) ↓ | " \
             "fragments | floating ↓ |"
    assert lines.count(header) == 2  # Table 1 and Table 2
    table1 = lines[lines.index("## Table 1: models (2 test cases)") + 2:]
    # Paper order: VesselSDF first, then the baselines; mean ± std over the cases (np.std, ddof 0).
    assert table1[2].startswith("| VesselSDF | 2 | 0.80 ± 0.10 |")
    assert table1[3].startswith("| Attention U-Net (stage 1 alone) | 1 (1 failed) | 0.5 ± 0 |")
    unet = table1[4].split(" | ")
    assert unet[0] == "| 3D-UNet" and unet[2] == "0.70 ± 0.10"
    assert unet[9] == "1 ± 0 [1 n/a]"  # the NaN Chamfer distance is left out and counted
    assert unet[10] == "2 (1–3)"  # fragments: mean (min–max)
    table2 = lines[lines.index("## Table 2: ablations") + 2:]
    assert table2[2].startswith("| VesselSDF |") and table2[3].startswith("| VesselSDF w/o SDF refinement |")
    assert "| VesselSDF | 3 | epochs | 1.5 |" in text

    path = harness.write_csv(tmp_path / "cases.csv", rows, CSV_COLUMNS)
    with open(path, newline="") as fh:
        read = list(csv.DictReader(fh))
    assert tuple(read[0]) == CSV_COLUMNS and len(read) == 6
    assert read[1]["chamfer_mm"] == "nan" and float(read[2]["dice"]) == 0.7 and read[4]["dice"] == ""


def test_figure_of_a_case_shows_a_slice_between_the_image_slices(tmp_path):
    from vesselfield.bench.ct import _slice_index, figure_ct_case
    from vesselfield.meshing import mesh_from_volume
    from vesselfield.report.figures import figure_mesh

    dense = VolumeGrid.centered((24, 24, 13), (1.0, 1.0, 1.0))
    sparse = VolumeGrid((24, 24, 4), (1.0, 1.0, 4.0), dense.origin_mm)  # every 4th dense slice
    centre = (0.0, 0.0, float(dense.axes_mm()[2][4]))  # on dense slice 4, an image slice
    target = ball(dense, centre, 5.0) > 0
    sdf = (np.linalg.norm(sparse.voxel_centers_mm(np.float64) - centre, axis=-1) - 5.0).astype(np.float32)
    # The fullest slice is the image slice 4; the figure shows the fullest of the others: 3 (= 5).
    assert _slice_index(target, dense, sparse) == 3
    mesh_png = figure_mesh(tmp_path / "mesh.png", mesh_from_volume(target.astype(np.float32), dense, 0.5))
    predictions = {"vessel-sdf": {"sdf_mm": sdf, "occupancy": (sdf < 0).astype(np.float32), "has_sdf": True},
                   "unet3d": {"sdf_mm": sdf, "occupancy": np.clip(0.5 - sdf / 2, 0, 1), "has_sdf": False}}
    image = np.where(sdf < 0, 300.0, 40.0).astype(np.float32)
    path = figure_ct_case(tmp_path / "case.png", image, sparse, target, dense, predictions, mesh_png=mesh_png)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.data == path.read_bytes()


# ================================================================================== end to end
def _write_tiny(root, n_cases: int):
    """Tilted tubes in CT-like images, 32 x 32 x 16 voxels of 1 x 1 x 1.6 mm (as /tmp/vs/smoke.py)."""
    from vesselfield.datasets.msd import CaseVolumes, write_msd_dataset
    from vesselfield.phantoms.ct import ct_like_image

    cases = []
    for s in range(n_cases):
        rng = np.random.default_rng(s)
        grid = VolumeGrid((32, 32, 16), (1.0, 1.0, 1.6))
        x, y, z = np.meshgrid(*grid.axes_mm(), indexing="ij")
        c, r = rng.uniform(10, 20, 2), rng.uniform(2.5, 4.0)
        occupancy = (((x - c[0] - 0.1 * z) ** 2 + (y - c[1]) ** 2) < r * r).astype(np.float32)
        cases.append(CaseVolumes(f"case{s}", ct_like_image(occupancy, grid, seed=s), occupancy.astype(np.uint8), grid))
    write_msd_dataset(root, cases)
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A dense 3-case dataset, its sparsified copy (every 2nd slice) and one benchmark run on the latter."""
    from vesselfield.cli import main
    from vesselfield.datasets.msd import sparsify_dataset

    base = tmp_path_factory.mktemp("bench_ct")
    dense = _write_tiny(base / "dense", 3)
    sparse = base / "sparse"
    sparsify_dataset(dense, sparse, every=2)
    out = base / "out"
    args = ["benchmark", "ct", "--data", str(sparse), "--methods", "vessel-sdf", "unet3d", "--out", str(out),
            "--epochs", "1", "--set", "patches_per_case=2", "--device", "cpu", "--quiet"]
    return {"base": base, "dense": dense, "sparse": sparse, "out": out, "args": args, "code": main(args)}


def test_benchmark_ct_end_to_end(tiny, capsys):
    out = tiny["out"]
    assert tiny["code"] == 0
    summary = json.loads((out / "summary.json").read_text())
    test_case = summary["split"]["test"][0]
    # (The mesh view joins figures/ when the barely trained vessel-sdf predicts a surface.)
    for name in ("cases.csv", "tables.md", "summary.json", f"figures/{test_case}.png", "runs/vessel-sdf/model.pt",
                 "runs/unet3d/model.pt", "runs/unet3d/benchmark_training.json"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader(io.StringIO((out / "cases.csv").read_text())))
    assert tuple(rows[0]) == CSV_COLUMNS
    # 3 cases: a seeded third (one case) is tested, the two others trained on.
    assert len(summary["split"]["test"]) == 1 and len(summary["split"]["train"]) == 2
    assert [(r["method"], r["case"]) for r in rows] == [("vessel-sdf", test_case), ("unet3d", test_case)]
    for r in rows:
        assert r["status"] == "ok" and r["eval_grid"] == "dense" and r["device"] == "cpu"
        for key in ("dice", "iou", "cldice"):
            assert 0.0 <= float(r[key]) <= 1.0
        assert float(r["jaccard_distance"]) == pytest.approx(1 - float(r["iou"]))
        # The dense label grid: 32 x 32 x 16 voxels of 1 x 1 x 1.6 mm; L = the image's 32 mm.
        assert float(r["target_voxels"]) > 0 and float(r["fov_mm"]) == 32.0
        assert 0 <= float(r["floating_fragments"]) <= float(r["components"])
        if math.isfinite(float(r["chamfer_mm"])):
            assert float(r["cd_x100"]) == pytest.approx(100 * float(r["chamfer_mm"]) / 32.0)
    tables = (out / "tables.md").read_text()
    assert "## Table 1" in tables and "## Table 2" in tables and "| 3D-UNet | 1 |" in tables
    assert summary["methods"]["unet3d"]["training"]["epochs_done"] == 1
    assert set(summary["means"]["vessel-sdf"]) >= {"dice", "cd_x100", "floating_fragments"}

    # A rerun trains nothing and evaluates nothing again, and writes the same rows.
    stamps = {m: (out / "runs" / m / "model.pt").stat().st_mtime_ns for m in ("vessel-sdf", "unet3d")}
    record = (out / "eval" / "unet3d" / rows[1]["case"] / "metrics.json").stat().st_mtime_ns
    from vesselfield.cli import main

    capsys.readouterr()
    assert main(tiny["args"]) == 0
    printed = capsys.readouterr().out
    assert "## Table 1: models (1 test case)" in printed and f"wrote {out / 'cases.csv'}" in printed
    assert {m: (out / "runs" / m / "model.pt").stat().st_mtime_ns for m in stamps} == stamps
    assert (out / "eval" / "unet3d" / rows[1]["case"] / "metrics.json").stat().st_mtime_ns == record
    assert list(csv.DictReader(io.StringIO((out / "cases.csv").read_text()))) == rows

    # Other settings in the same --out: one line that says what to do.
    more_epochs = ["2" if word == "1" else word for word in tiny["args"]]  # "1" is the --epochs value
    expect_user_error(capsys, more_epochs, "pass --resume")
    expect_user_error(capsys, [*tiny["args"], "--set", "lambda_sdf=0.2"], "trained with other settings")

    # An interrupted training (last.pt, no model.pt yet) needs --resume, which finishes it.
    (out / "runs" / "unet3d" / "model.pt").unlink()
    (out / "runs" / "unet3d" / "benchmark_training.json").unlink()
    expect_user_error(capsys, tiny["args"], "interrupted training")
    assert main([*tiny["args"], "--resume"]) == 0
    record = json.loads((out / "runs" / "unet3d" / "benchmark_training.json").read_text())
    assert record["epochs_done"] == 1 and (out / "runs" / "unet3d" / "model.pt").is_file()


def test_a_dense_dataset_is_evaluated_on_the_image_grid(tiny):
    case = "case1"
    task = CtTask(str(tiny["dense"]), None, case, "unet3d", str(tiny["out"] / "runs" / "unet3d"))
    values = predict_and_evaluate(task, device="cpu", out_dir=tiny["base"])
    assert values["eval_grid"] == "image" and values["device"] == "cpu"
    assert 0.0 <= values["dice"] <= 1.0 and values["fov_mm"] == 32.0
    # The label of case1 on its own 32 x 32 x 16 grid.
    from vesselfield.datasets.msd import load_case, read_msd_dataset

    assert values["target_voxels"] == np.count_nonzero(load_case(read_msd_dataset(tiny["dense"]), case).mask)
    with pytest.raises(VesselfieldError, match="not vessel-sdf"):
        predict_and_evaluate(CtTask(str(tiny["dense"]), None, case, "vessel-sdf", task.run_dir), device="cpu",
                             out_dir=tiny["base"])


def test_bad_benchmark_inputs_are_one_line_errors(tiny, tmp_path, capsys):
    out = tmp_path / "never"
    data = str(tiny["sparse"])
    expect_user_error(capsys, ["benchmark", "ct", "--data", data, "--methods", "vessel-sdf", "nnunet", "--out", out],
                      "unknown method 'nnunet'", out_dir=out)
    expect_user_error(capsys, ["benchmark", "ct", "--data", data, "--methods", "unet3d", "--out", out,
                               "--test-cases", "case9"], "test case 'case9' is not in the dataset", out_dir=out)
    expect_user_error(capsys, ["benchmark", "ct", "--data", data, "--methods", "unet3d", "--out", out,
                               "--test-cases", "case1", "--test-fraction", "0.5"], "not both", out_dir=out)
    expect_user_error(capsys, ["benchmark", "ct", "--data", data, "--methods", "unet3d", "--out", out,
                               "--set", "variant=unet3d"], "--methods", out_dir=out)
    one = _write_tiny(tmp_path / "one", 1)
    expect_user_error(capsys, ["benchmark", "ct", "--data", one, "--methods", "unet3d", "--out", out],
                      "a benchmark needs at least two cases", out_dir=out)
    assert not os.path.exists(out)
