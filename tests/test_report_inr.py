"""The implicit-model report (vesselfield.report.implicit_vessel): slice geometry, zero contours, residuals, HTML, boxplots.

The models are untrained (iterations=0): the geometric initialisation already gives each channel a
closed zero level around the points' centre (lumpy where the hash features add to it), enough for
checking the figures against ``model.sdf`` without a fit.
"""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest
import trimesh
from matplotlib.image import imread

from conftest import sphere_points

from vesselfield.errors import VesselfieldError
from vesselfield.methods.implicit_vessel import fit_implicit_sdf, inr_config
from vesselfield.report.implicit_vessel import (
    FIGURE_FILES,
    figure_points,
    figure_robustness_boxplot,
    figure_sdf_slices,
    point_residuals_mm,
    sdf_slices,
    write_inr_report,
    zero_contours,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    """(height, width) in pixels of a PNG, after checking its signature."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    return imread(path).shape[:2]


def no_temp_files(folder) -> bool:
    return not [p.name for p in folder.iterdir() if p.name.startswith(".")]


def first_zero_crossing(model, origin, direction, r_max: float) -> np.ndarray:
    """The first point along the ray ``origin + r direction`` (0 <= r <= r_max) where model.sdf changes sign."""
    r = np.linspace(0.0, r_max, 301)
    sign = np.sign(model.sdf(origin + r[:, None] * direction))
    i = int(np.flatnonzero(sign[1:] != sign[0])[0])
    lo, hi = r[i], r[i + 1]
    for _ in range(20):  # bisection: the bracket of 0.05 mm shrinks below 1e-7 mm
        mid = 0.5 * (lo + hi)
        same = np.sign(model.sdf((origin + mid * direction)[None])[0]) == sign[0]
        lo, hi = (mid, hi) if same else (lo, mid)
    return origin + 0.5 * (lo + hi) * direction


def distance_to_polyline(point: np.ndarray, line: np.ndarray) -> float:
    """Euclidean distance from a 2D point to an (M, 2) polyline."""
    a, b = line[:-1], line[1:]
    ab = b - a
    t = np.clip(np.einsum("ij,ij->i", point - a, ab) / np.maximum(np.einsum("ij,ij->i", ab, ab), 1e-30), 0, 1)
    return float(np.linalg.norm(a + t[:, None] * ab - point, axis=1).min())


@pytest.fixture(scope="module")
def sphere():
    points = sphere_points(400, 10.0)[0]
    return fit_implicit_sdf(points, config=inr_config("fast", iterations=0), device="cpu").model, points


@pytest.fixture(scope="module")
def two_surfaces():
    lumen, wall = sphere_points(200, 6.0, seed=1)[0], sphere_points(300, 10.0, seed=2)[0]
    fit = fit_implicit_sdf([lumen, wall], names=["lumen", "wall"], config=inr_config("fast", iterations=0),
                           device="cpu")
    return fit.model, [lumen, wall]


# ------------------------------------------------------------------------- slices
def test_slices_are_isotropic_mid_planes_of_the_points_box(sphere):
    model, _ = sphere
    slices = sdf_slices(model, resolution=41)
    lo, hi = model.bounds_mm
    centre, margin = 0.5 * (lo + hi), 0.1 * (hi - lo).max()
    spacing = ((hi - lo).max() + 2 * margin) / 40
    assert [s.axis for s in slices] == [0, 1, 2] and [s.name for s in slices] == ["sagittal", "coronal", "axial"]
    for s in slices:
        a, b = s.in_plane_axes
        assert s.position_mm == pytest.approx(centre[s.axis])
        for coords, d in ((s.u_mm, a), (s.v_mm, b)):
            assert np.allclose(np.diff(coords), spacing)
            assert coords.mean() == pytest.approx(centre[d])
            # The samples cover the box plus the margin, within one spacing.
            assert coords[0] <= lo[d] - margin + spacing and coords[-1] >= hi[d] + margin - spacing
        assert s.sdf_mm.shape == (len(s.v_mm), len(s.u_mm), 1)
        grid = s.points_mm()
        assert np.all(grid[..., s.axis] == s.position_mm)
        assert grid[3, 5, a] == s.u_mm[5] and grid[3, 5, b] == s.v_mm[3]
        assert np.allclose(s.sdf_mm, model.sdf(grid, "all"), atol=1e-6)
    # Samples per world axis: `resolution` along the box's longest side.
    counts = {}
    for s in slices:
        a, b = s.in_plane_axes
        counts.setdefault(a, set()).add(len(s.u_mm))
        counts.setdefault(b, set()).add(len(s.v_mm))
    assert all(len(c) == 1 for c in counts.values())
    assert counts[int(np.argmax(hi - lo))] == {41}


def test_zero_contour_lies_where_the_model_sdf_vanishes(sphere):
    model, _ = sphere
    for s in sdf_slices(model, resolution=81):
        contours = zero_contours(s, model.surface_names)
        assert list(contours) == ["surface"] and contours["surface"]
        a, b = s.in_plane_axes
        for line in contours["surface"]:
            world = np.full((len(line), 3), s.position_mm)
            world[:, a], world[:, b] = line[:, 0], line[:, 1]
            # Linear interpolation between samples 0.3 mm apart misses the zero level by far less than that.
            assert np.abs(model.sdf(world)).max() < 0.03
        # Along the +u half-axis through the centre (inside the initial shape), the first sign change of
        # model.sdf, found by bisection, lies on a contour.
        origin = np.zeros(3)
        origin[s.axis], origin[a], origin[b] = s.position_mm, s.u_mm.mean(), s.v_mm.mean()
        assert model.sdf(origin[None])[0] < 0
        hit = first_zero_crossing(model, origin, np.eye(3)[a], r_max=s.u_mm[-1] - origin[a])
        gap = min(distance_to_polyline(hit[[a, b]], line) for line in contours["surface"])
        assert gap < 0.03


def test_slab_selects_points_within_the_half_width(sphere):
    model, points = sphere
    axial = sdf_slices(model, resolution=11)[2]
    near = axial.near(points, 1.0)
    assert np.array_equal(near, np.abs(points[:, 2] - axial.position_mm) <= 1.0)
    # Uniform points on a sphere: the fraction in a slab of width 2 through the centre is 2 / (2 R).
    assert near.mean() == pytest.approx(2.0 / 20.0, abs=0.04)


def test_two_surfaces_give_one_contour_and_legend_entry_each(two_surfaces, tmp_path):
    model, points = two_surfaces
    s = sdf_slices(model, resolution=31)[0]
    assert s.sdf_mm.shape[-1] == 2
    contours = zero_contours(s, model.surface_names)
    assert list(contours) == ["lumen", "wall"] and all(contours.values())
    path, labels = figure_sdf_slices(tmp_path / "slices.png", model, points, resolution=31, surface="wall")
    assert labels[:2] == ["lumen: SDF = 0", "wall: SDF = 0"]
    assert len(labels) == 3 and labels[2].startswith("input points within ±")
    h, w = png_size(path)
    assert w > 800 and h > 300
    assert no_temp_files(tmp_path)


# ------------------------------------------------------------------------- residuals
def test_residuals_are_abs_sdf_of_each_points_own_surface(sphere, two_surfaces):
    model, points = sphere
    positions, residuals = point_residuals_mm(model, points)
    assert np.array_equal(positions, points)
    assert np.allclose(residuals, np.abs(model.sdf(points)), atol=1e-6)

    model, (lumen, wall) = two_surfaces
    _, residuals = point_residuals_mm(model, [lumen, wall])
    expected = np.concatenate([np.abs(model.sdf(lumen, "lumen")), np.abs(model.sdf(wall, "wall"))])
    assert np.allclose(residuals, expected, atol=1e-6)
    # One array for two surfaces: the distance to the nearer zero level.
    _, residuals = point_residuals_mm(model, wall)
    assert np.allclose(residuals, np.abs(model.sdf(wall, "all")).min(axis=1), atol=1e-6)
    with pytest.raises(VesselfieldError, match="2 surface"):
        point_residuals_mm(model, [wall])
    with pytest.raises(VesselfieldError, match=r"\(N, 3\)"):
        point_residuals_mm(model, wall[:, :2])
    with pytest.raises(VesselfieldError, match="ImplicitVesselModel"):
        point_residuals_mm("model.pt", wall)


def test_points_figure_subsamples_and_shows_held_out_panel(sphere, tmp_path):
    model, points = sphere
    path = figure_points(tmp_path / "p.png", model, points, held_out=sphere_points(50, 10.0, seed=9)[0], max_points=100)
    h, w = png_size(path)
    assert w > 1000 and h > 400  # two panels side by side
    assert no_temp_files(tmp_path)


# ------------------------------------------------------------------------- report
def test_report_writes_figures_and_self_contained_html(sphere, tmp_path):
    model, points = sphere
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=6.0)
    log = [{"iteration": float(i), "time_s": 0.1 * i, "loss": 1.0 / (i + 1), "loss_surface": 0.8 / (i + 1),
            "loss_eikonal": 0.02} for i in range(30)]
    metrics = {"dice": 0.91234, "asd_mm": 0.3456, "hausdorff_mm": None}
    out = tmp_path / "report"
    written = write_inr_report(out, model=model, points=points, log=log, mesh=mesh, metrics=metrics,
                               title="sphere <test>", held_out=sphere_points(40, 10.0, seed=5)[0], resolution=40)
    assert set(written) == {"slices", "points", "mesh", "losses", "report"}
    for key, name in FIGURE_FILES.items():
        assert written[key] == out / name
        h, w = png_size(written[key])
        assert 300 < h < 2000 and 300 < w < 3000
    text = written["report"].read_text(encoding="utf-8")
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(embedded) == 4
    assert sorted(base64.b64decode(e) for e in embedded) == sorted(written[k].read_bytes() for k in FIGURE_FILES)
    assert "<title>sphere &lt;test&gt;</title>" in text
    for value in ("0.9123", "0.3456", "n/a", "surface", f"{model.scale_mm:.4f}", "hidden_dim"):
        assert value in text
    assert ", ".join(f"{c:.3f}" for c in model.center_mm) in text
    flat = text.replace("</td><td", "</td>\n<td")
    assert f"<td>faces</td>\n<td class=\"num\">{len(mesh.faces)}</td>" in flat
    assert "held-out points" in text and "<td>watertight</td>\n<td class=\"num\">yes</td>" in flat
    assert f"<td>volume (mm³)</td>\n<td class=\"num\">{mesh.volume:.6g}</td>" in flat
    assert no_temp_files(out)


def test_minimal_report_has_slices_only(two_surfaces, tmp_path):
    model, _ = two_surfaces
    written = write_inr_report(tmp_path, model=model, resolution=31)
    assert set(written) == {"slices", "report"}
    text = written["report"].read_text(encoding="utf-8")
    assert text.count("data:image/png;base64,") == 1
    assert "lumen, wall" in text and "No metrics were given." in text
    assert 'class="warning"' not in text
    warned = write_inr_report(tmp_path / "w", model=model, resolution=31, warnings=["the mesh is <not> CFD-ready"])
    text = warned["report"].read_text(encoding="utf-8")
    # Shown before the summary, HTML-escaped.
    assert text.index("Warning: the mesh is &lt;not&gt; CFD-ready") < text.index("<h2>Summary</h2>")
    with pytest.raises(VesselfieldError, match="metrics"):
        write_inr_report(tmp_path, model=model, metrics=[0.9])
    with pytest.raises(VesselfieldError, match="pass points too"):
        write_inr_report(tmp_path, model=model, held_out=sphere_points(20, 10.0)[0])
    assert no_temp_files(tmp_path)


# ------------------------------------------------------------------------- robustness figure
def test_robustness_boxplots_per_shape_and_metric(tmp_path):
    rng = np.random.default_rng(0)
    rows = [{"shape": shape, "n_points": str(n), "dice": 1.0 - 1.0 / n ** 0.5 + 0.01 * rng.normal(),
             "asd_mm": 5.0 / n ** 0.5 * rng.uniform(0.5, 1.5)}
            for shape in ("bifurcation", "aneurysm") for n in (1000, 50, 200) for _ in range(5)]
    rows.append({"shape": "aneurysm", "n_points": 50, "dice": float("nan"), "asd_mm": ""})
    dice = figure_robustness_boxplot(rows, tmp_path / "dice.png")
    asd = figure_robustness_boxplot(rows, tmp_path / "asd.png", metric="asd_mm")
    assert dice == tmp_path / "dice.png" and asd == tmp_path / "asd.png"
    for path in (dice, asd):
        h, w = png_size(path)
        assert w > 500 and h > 300
    assert dice.read_bytes() != asd.read_bytes()
    with pytest.raises(VesselfieldError, match="cldice"):
        figure_robustness_boxplot(rows, tmp_path / "x.png", metric="cldice")
    with pytest.raises(VesselfieldError, match="no robustness rows"):
        figure_robustness_boxplot([], tmp_path / "x.png")
    with pytest.raises(VesselfieldError, match="whole number"):
        figure_robustness_boxplot([{"shape": "s", "n_points": 2.5, "dice": 0.9}], tmp_path / "x.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["asd.png", "dice.png"]
