"""The X-ray report (vesselfield.report.sdf_car) and the generic figures it draws (vesselfield.report.figures):
figure pixels, overlay counts, HTML contents, input checks."""

from __future__ import annotations

import base64
import math
import re

import numpy as np
import pytest
import torch
import trimesh
from matplotlib import colormaps
from matplotlib.image import imread
from scipy import ndimage

from conftest import tube

from vesselfield.errors import VesselfieldError
from vesselfield.geometry import ConeBeamView, Geometry
from vesselfield.grid import VolumeGrid
from vesselfield.meshing import mesh_from_volume
from vesselfield.metrics import evaluate_volumes
from vesselfield.render import project_volume
from vesselfield.report import sdf_car
from vesselfield.report.figures import figure_losses, figure_mesh, figure_mips, simplify_for_display
from vesselfield.report.sdf_car import FIGURE_FILES, figure_error_overlay, figure_views, write_xray_report

GREEN, RED, BLUE = (0, 255, 0), (255, 0, 0), (0, 0, 255)


def png_rgb(path) -> np.ndarray:
    """(H, W, 3) uint8 pixels of a PNG."""
    return np.round(imread(path)[..., :3] * 255).astype(np.int16)


def near(rgb: np.ndarray, color, tol: int = 0) -> np.ndarray:
    return np.all(np.abs(rgb - np.asarray(color)[None, None, :]) <= tol, axis=-1)


def cmap_rgb(name: str, value: float) -> np.ndarray:
    return np.round(np.asarray(colormaps[name](value)[:3]) * 255).astype(np.int16)


def box(shape, lo, hi) -> np.ndarray:
    out = np.zeros(shape, dtype=np.float32)
    out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = 1.0
    return out


# ------------------------------------------------------------------------- synthetic case
GRID = VolumeGrid.centered((32, 32, 32), 1.0)
VIEWS = [ConeBeamView(0.0, 0.0, 1000.0, 750.0, (64, 64), (0.8, 0.8)),
         ConeBeamView(90.0, 0.0, 1000.0, 750.0, (64, 64), (0.8, 0.8))]
GEOMETRY = Geometry(GRID, VIEWS)


@pytest.fixture(scope="module")
def case():
    truth = tube(GRID, (0.0, 0.0), 4.0, half_length_mm=12.0)
    pred = tube(GRID, (1.0, 0.0), 4.0, half_length_mm=12.0)  # shifted 1 mm to +L
    with torch.no_grad():
        targets = [project_volume(torch.from_numpy(truth), GRID, v).numpy() for v in VIEWS]
        rendered = [project_volume(torch.from_numpy(pred), GRID, v).numpy() for v in VIEWS]
    mesh = mesh_from_volume(pred, GRID, 0.5, inside="above")
    return truth, pred, targets, rendered, mesh


@pytest.fixture(scope="module")
def full_report(case, tmp_path_factory):
    truth, pred, targets, rendered, mesh = case
    metrics = {**evaluate_volumes(pred, truth, GRID), "hausdorff_mm": None, "assd_mm": math.nan,
               "seconds": 1.25, "iterations": 30}
    log = [{"iteration": str(i), "time_s": 0.1 * i, "loss": 1.0 / (i + 1), "loss_occ": str(0.5 / (i + 1)),
            "loss_geo": 0.01} for i in range(30)]
    out = tmp_path_factory.mktemp("report")
    path = write_xray_report(out, geometry=GEOMETRY, targets=targets, kind="line_integral", rendered=rendered,
                             occupancy=pred, mesh=mesh, gt_occupancy=truth, metrics=metrics, log_rows=log,
                             title="tube <test> & co", info={"method": "sdf-car", "optimisation time (s)": 1.25})
    return out, path, metrics


def test_generic_figures_keep_their_old_import_path():
    # Callers written against report/xray.py import the generic figures from the X-ray report.
    assert sdf_car.figure_mips is figure_mips and sdf_car.figure_mesh is figure_mesh
    assert sdf_car.figure_losses is figure_losses and sdf_car.simplify_for_display is simplify_for_display
    assert set(sdf_car.__all__) <= set(dir(sdf_car))


# ------------------------------------------------------------------------- error overlay
def test_overlay_counts_equal_closed_form_for_shifted_boxes(tmp_path):
    shape = (24, 24, 24)
    grid = VolumeGrid(shape, (0.5, 1.0, 2.0))
    # Soft values 0.7 inside / 0.3 outside: the threshold decides, not "non-zero".
    pred = 0.3 + 0.4 * box(shape, (4, 6, 8), (16, 18, 20))
    gt = box(shape, (6, 6, 5), (20, 16, 15))
    path, counts = figure_error_overlay(tmp_path / "o.png", pred, gt, grid, threshold=0.5)
    overlap = (16 - 6) * (16 - 6) * (15 - 8)
    assert counts == {"overlap": overlap, "predicted_only": 12 ** 3 - overlap, "missed": 14 * 10 * 10 - overlap}
    assert path == tmp_path / "o.png" and path.is_file()
    _, counts = figure_error_overlay(tmp_path / "o.png", pred, gt, grid, threshold=0.8)
    assert counts == {"overlap": 0, "predicted_only": 0, "missed": 1400}


def test_overlay_pixels_are_pure_class_colours_in_lps_order(tmp_path):
    shape = (32, 32, 32)
    grid = VolumeGrid.centered(shape, 1.0)
    pred = box(shape, (4, 4, 4), (20, 20, 20))
    gt = box(shape, (8, 4, 4), (24, 20, 20))  # the truth is 4 voxels further towards +x (L)
    path, counts = figure_error_overlay(tmp_path / "o.png", pred, gt, grid)
    assert counts == {"overlap": 12 * 16 * 16, "predicted_only": 4 * 16 * 16, "missed": 4 * 16 * 16}
    rgb = png_rgb(path)
    codes = np.zeros(rgb.shape[:2], dtype=np.int8)
    for code, color in ((1, GREEN), (2, RED), (3, BLUE)):
        codes[near(rgb, color)] = code
    row = codes[int(np.argmax((codes == 1).sum(axis=1)))]
    # Runs of pure colour along the row through all three panels (other pixels ignored).
    runs = []
    for col, code in enumerate(row):
        if code == 0:
            continue
        if runs and runs[-1][0] == code and col == runs[-1][2]:
            runs[-1][2] = col + 1
        else:
            runs.append([code, col, col + 1])
    # Sagittal (along x): everything overlaps; coronal and axial (x to the right): red at small x
    # (predicted only), green, blue at large x (missed).
    assert [r[0] for r in runs] == [1, 2, 1, 3, 2, 1, 3]
    for start in (1, 4):
        red, green, blue = (runs[start + k][2] - runs[start + k][1] for k in range(3))
        assert red / green == pytest.approx(4 / 12, abs=0.03)
        assert blue / green == pytest.approx(4 / 12, abs=0.03)
        # The three runs touch: every pixel between them is one of the classes.
        assert runs[start + 1][1] == runs[start][2] and runs[start + 2][1] == runs[start + 1][2]


# ------------------------------------------------------------------------- MIPs
def test_mips_keep_mm_proportions_and_lps_orientation(tmp_path):
    shape = (24, 12, 48)
    grid = VolumeGrid(shape, (1.0, 2.0, 0.5))  # a 24 mm cube of anisotropic voxels
    volume = box(shape, (2, 1, 4), (10, 5, 20))  # an 8 mm cube at small x, y, z
    volume[16:22, 8:11, 32:44] = 0.5  # a 6 mm cube at large x, y, z
    path = figure_mips(tmp_path / "m.png", volume, grid)
    rgb = png_rgb(path)

    def components(color, tol):
        labels, n = ndimage.label(near(rgb, color, tol))
        out = []
        for sl in ndimage.find_objects(labels):
            h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
            if h * w > 1000:
                out.append(((sl[0].start + sl[0].stop) / 2, (sl[1].start + sl[1].stop) / 2, h, w))
        return sorted(out, key=lambda c: c[1])

    big = components(cmap_rgb("magma", 1.0), 3)
    small = components(cmap_rgb("magma", 0.5), 6)
    assert len(big) == len(small) == 3
    for (_, _, h, w), (_, _, h2, w2) in zip(big, small):
        # Cubes in mm are squares on screen whatever the voxel spacing (voxel counts 8:4:16).
        assert w / h == pytest.approx(1.0, abs=0.05)
        assert w2 / h2 == pytest.approx(1.0, abs=0.05)
        assert w2 / w == pytest.approx(6 / 8, abs=0.05)
    for panel, ((r_big, c_big, *_), (r_small, c_small, *_)) in enumerate(zip(big, small)):
        assert c_small > c_big  # +P (sagittal) or +L (coronal, axial) to the right
        if panel < 2:
            assert r_small < r_big  # sagittal and coronal: +S up
        else:
            assert r_small > r_big  # axial, seen from the feet: +P down
    with pytest.raises(VesselfieldError, match="ground truth has shape"):
        figure_mips(tmp_path / "m.png", volume, grid, gt=np.zeros((24, 12, 47)))


# ------------------------------------------------------------------------- mesh
def test_mesh_figure_has_equal_mm_scales(tmp_path):
    ellipsoid = trimesh.creation.icosphere(subdivisions=3, radius=5.0)
    ellipsoid.apply_scale((2.0, 1.0, 1.0))  # 20 x 10 x 10 mm
    ellipsoid.apply_translation((30.0, -4.0, 7.0))
    path = figure_mesh(tmp_path / "mesh.png", ellipsoid, elevation_deg=0.0, azimuth_deg=-90.0)
    rgb = png_rgb(path)
    shaded = (rgb[..., 0] - rgb[..., 1] > 50) & (rgb[..., 0] > 60)
    rows, cols = np.nonzero(shaded)
    width, height = np.ptp(cols) + 1, np.ptp(rows) + 1
    # Seen along +y (x to the right, z up): the 20 mm x 10 mm outline.
    assert width / height == pytest.approx(2.0, rel=0.04)
    # Lambert shading from the camera: brightest at the face-on centre, darker towards the rim.
    r = rgb[..., 0][shaded]
    assert r.max() >= 0.97 * 255 * 0.80 and r.min() < 0.6 * r.max()


def test_simplify_for_display_keeps_the_shape_within_budget():
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=10.0)
    v, f = simplify_for_display(sphere.vertices, sphere.faces, max_faces=3000)
    assert 1000 < len(f) <= 3000
    assert np.linalg.norm(v, axis=1).max() <= 10.0 + 1e-9
    coarse = trimesh.Trimesh(v, f, process=False)
    assert coarse.area == pytest.approx(4 * math.pi * 100, rel=0.05)
    # Orientation kept: the signed volume stays positive and close to the sphere's.
    assert coarse.volume == pytest.approx(4 / 3 * math.pi * 1000, rel=0.06)
    same_v, same_f = simplify_for_display(sphere.vertices, sphere.faces, max_faces=len(sphere.faces))
    assert np.array_equal(same_f, sphere.faces) and np.array_equal(same_v, sphere.vertices)


# ------------------------------------------------------------------------- views
def test_views_difference_has_symmetric_limits_and_sign(tmp_path):
    target = np.zeros((64, 64), dtype=bool)
    target[:, :32] = True
    rendered = np.zeros((64, 64), dtype=np.float32)
    rendered[:, :16] = 20.0  # silhouette ~1 where the mask is: no difference
    rendered[48:, 40:] = 20.0  # silhouette ~1 outside the mask: +1
    path = figure_views(tmp_path / "v.png", [target], [rendered], "mask")
    rgb = png_rgb(path)
    minus, plus = near(rgb, cmap_rgb("RdBu_r", 0.0), 2).sum(), near(rgb, cmap_rgb("RdBu_r", 1.0), 2).sum()
    # -1 over 64 x 16 pixels, +1 over 16 x 24: areas in proportion, both at the ends of the scale.
    assert minus / plus == pytest.approx((64 * 16) / (16 * 24), rel=0.12)

    line = np.zeros((64, 64), dtype=np.float32)
    more = line.copy()
    more[:32, :32] = 3.0
    path = figure_views(tmp_path / "v.png", [line], [more], "line_integral", views=VIEWS[:1])
    rgb = png_rgb(path)
    assert near(rgb, cmap_rgb("RdBu_r", 1.0), 2).sum() > 1000  # +3 mm is the top of ±3 mm
    assert near(rgb, cmap_rgb("RdBu_r", 0.0), 2).sum() < 50  # nothing negative (colour bar end only)


def test_views_reject_mismatched_inputs(tmp_path):
    a = np.zeros((64, 64))
    with pytest.raises(VesselfieldError, match="2 target views but 1 rendered"):
        figure_views(tmp_path / "v.png", [a, a], [a], "line_integral")
    with pytest.raises(VesselfieldError, match="view 1: target has shape"):
        figure_views(tmp_path / "v.png", [a], [np.zeros((64, 63))], "line_integral")
    with pytest.raises(VesselfieldError, match="detector is"):
        figure_views(tmp_path / "v.png", [a[:32]], [a[:32]], "line_integral", views=VIEWS[:1])
    with pytest.raises(VesselfieldError, match="unknown input kind"):
        figure_views(tmp_path / "v.png", [a], [a], "silhouette")
    bad = a.copy()
    bad[0, 0] = np.nan
    with pytest.raises(VesselfieldError, match="NaN"):
        figure_views(tmp_path / "v.png", [a], [bad], "line_integral")
    assert not (tmp_path / "v.png").exists()


# ------------------------------------------------------------------------- losses
def test_losses_draw_every_loss_column(tmp_path):
    rows = [{"iteration": str(i), "time_s": 0.1 * i, "loss": str(10.0 ** (-i / 10)), "loss_occ": 0.5 ** i,
             "loss_geo": "" if i % 2 else -1.0, "lr": 1e-3} for i in range(40)]
    rgb = png_rgb(figure_losses(tmp_path / "l.png", rows))
    # Matplotlib's first two cycle colours (C0 loss, C1 loss_occ); loss_geo has nothing drawable.
    assert near(rgb, (31, 119, 180), 1).sum() > 200
    assert near(rgb, (255, 127, 14), 1).sum() > 200
    with pytest.raises(VesselfieldError, match="empty"):
        figure_losses(tmp_path / "l.png", [])
    with pytest.raises(VesselfieldError, match="no loss"):
        figure_losses(tmp_path / "l.png", [{"iteration": 0, "time_s": 1.0}])
    with pytest.raises(VesselfieldError, match="log row 1 loss is not a number"):
        figure_losses(tmp_path / "l.png", [{"loss": 1.0}, {"loss": "fast"}])


# ------------------------------------------------------------------------- HTML report
def outside_scripts(text: str) -> str:
    """The page without the bodies of its inline scripts (the 3D view's library and data)."""
    return re.sub(r"(?s)<script>.*?</script>", "<script></script>", text)


def test_report_embeds_every_figure_and_no_links(full_report):
    out, path, _ = full_report
    assert path == out / "report.html"
    full = path.read_text(encoding="utf-8")
    text = outside_scripts(full)
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(uris) == text.count("data:image/png;base64,") == len(FIGURE_FILES) == 5
    # The embedded images are exactly the PNGs written next to the report, in report order.
    for key, data in zip(("views", "mips", "error_overlay", "mesh", "losses"), uris):
        assert base64.b64decode(data) == (out / FIGURE_FILES[key]).read_bytes()
    assert "http://" not in full and "https://" not in full and "<link" not in text
    # The only scripts are the 3D view's, inline (data, library, starter): nothing loads from elsewhere.
    assert re.findall(r"<script[^>]*>", text) == ["<script>"] * 3 and 'data-vf-viewer="vf-view-1"' in text
    assert re.findall(r'src="([a-z]+):', text) == ["data"] * 5
    assert "Error overlay" in text
    assert sorted(p.name for p in out.iterdir()) == sorted([*FIGURE_FILES.values(), "report.html"])


def test_report_shows_metrics_summary_and_escaped_title(full_report, case):
    out, path, metrics = full_report
    text = path.read_text(encoding="utf-8")
    for name in ("dice", "iou", "cldice", "chamfer_mm", "re_mse"):
        value = metrics[name]
        shown = f"{value:.3e}" if value != 0 and abs(value) < 1e-3 else f"{value:.4f}"
        assert f"<td>{name}</td><td class=\"num\">{shown}</td>" in text
    assert '<td>hausdorff_mm</td><td class="num">n/a</td>' in text
    assert '<td>assd_mm</td><td class="num">n/a</td>' in text
    assert '<td>iterations</td><td class="num">30</td>' in text
    assert "<title>tube &lt;test&gt; &amp; co</title>" in text and "<test>" not in text
    assert "<td>grid</td><td>32 × 32 × 32 voxels</td>" in text
    assert "<td>views</td><td>2</td>" in text
    assert "<td>view 2</td><td>LAO 90°, CRA 0°;" in text
    assert "<td>optimisation time (s)</td><td>1.25</td>" in text
    assert 'class="warning"' not in text  # no warnings given, none shown
    truth, pred, *_ = case
    counts = {"overlap": int(((pred >= 0.5) & (truth >= 0.5)).sum()),
              "predicted_only": int(((pred >= 0.5) & (truth < 0.5)).sum())}
    assert f"overlap ({counts['overlap']} voxels)" in text
    assert f"vessel ({counts['predicted_only']})" in text


def test_report_without_ground_truth_has_no_overlay(case, tmp_path):
    _, pred, targets, rendered, mesh = case
    masks = [t > 0.5 for t in targets]
    path = write_xray_report(tmp_path, geometry=GEOMETRY, targets=masks, kind="mask", rendered=rendered,
                             occupancy=pred, mesh=mesh, log_rows=[], warnings=["no mesh.stl: occupancy < 0.5"])
    text = outside_scripts(path.read_text(encoding="utf-8"))
    assert text.count("data:image/png;base64,") == 3  # views, MIPs, mesh
    # The run's warnings come first, escaped.
    assert text.index("Warning: no mesh.stl: occupancy &lt; 0.5") < text.index("<h2>Summary</h2>")
    assert "overlay" not in text.lower() and not (tmp_path / FIGURE_FILES["error_overlay"]).exists()
    assert "No metrics" in text and "binary masks" in text


@pytest.mark.parametrize("change, message", [
    (dict(targets="one"), "1 target views given but the geometry has 2"),
    (dict(rendered="one"), "1 rendered views given but the geometry has 2"),
    (dict(targets="small"), "view 1: image has shape"),
    (dict(occupancy=np.zeros((32, 32, 31))), "occupancy has shape"),
    (dict(gt_occupancy=np.zeros((31, 32, 32))), "ground truth has shape"),
    (dict(kind="projection"), "unknown input kind"),
    (dict(threshold=0.0), "threshold must be in"),
    (dict(geometry=GRID), "geometry must be"),
])
def test_report_rejects_bad_inputs_before_writing(case, tmp_path, change, message):
    _, pred, targets, rendered, _ = case
    kwargs = dict(geometry=GEOMETRY, targets=targets, kind="line_integral", rendered=rendered, occupancy=pred)
    if change.get("targets") == "one":
        change = dict(targets=targets[:1])
    elif change.get("rendered") == "one":
        change = dict(rendered=rendered[:1])
    elif change.get("targets") == "small":
        change = dict(targets=[t[:32] for t in targets], rendered=[r[:32] for r in rendered])
    kwargs.update(change)
    with pytest.raises(VesselfieldError, match=message):
        write_xray_report(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out" / "report.html").exists()
