"""Every method's report and ``vesselfield view`` in a real headless Chromium, offline.

Chromium is Debian's (``apt-get install chromium``), driven by Playwright for Python; Playwright's
own browser download is never used. Without a Chromium (or Playwright) these tests are skipped
with the reason; ``VESSELFIELD_BROWSER_TESTS=require`` (set by ``.ci/run``) turns that skip into a
failure, so in CI they must run.

Each page is opened from ``file://`` with every request that is not ``file:``, ``data:`` or
``blob:`` aborted, and must: log no console error, throw no page error, fail no request, signal
ready (``window.__vfReady``), draw non-background pixels, and change its picture under a mouse drag.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from conftest import sphere_points, tube
from vesselfield.geometry import ConeBeamView, Geometry
from vesselfield.grid import VolumeGrid
from vesselfield.meshing import mesh_from_volume
from vesselfield.render import project_volume
from vesselfield.report.viewer.browser import canvas_pixels, find_chromium

REQUIRED = os.environ.get("VESSELFIELD_BROWSER_TESTS", "").lower() == "require"


def _why_not() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -e '.[test]')"
    if find_chromium() is None:
        return "no Chromium found: install Debian's chromium (apt-get install chromium) or set VESSELFIELD_CHROMIUM"
    return None


REASON = _why_not()
if REASON is not None:
    if REQUIRED:
        pytest.fail(f"browser tests are required (VESSELFIELD_BROWSER_TESTS=require) but {REASON}", pytrace=False)
    pytest.skip(f"browser tests skipped: {REASON}", allow_module_level=True)

# A pixel is "background" within this distance of the page's white (8-bit channels); NiiVue's
# anti-aliased edges and the light grey reference are far from it.
WHITE_TOLERANCE = 6

GRID = VolumeGrid.centered((32, 32, 32), 1.0)
VIEWS = [ConeBeamView(0.0, 0.0, 1000.0, 750.0, (64, 64), (0.8, 0.8)),
         ConeBeamView(90.0, 0.0, 1000.0, 750.0, (64, 64), (0.8, 0.8))]


def drawn_fraction(rgb: np.ndarray) -> float:
    """Share of the canvas pixels that are not the white background."""
    return float((np.abs(rgb.astype(np.int16) - 255).max(axis=2) > WHITE_TOLERANCE).mean())


# ------------------------------------------------------------------------------ the pages
def _xray_report(out):
    from vesselfield.analysis import analyze
    from vesselfield.report.sdf_car import write_xray_report

    truth = tube(GRID, (0.0, 0.0), 4.0, half_length_mm=12.0)
    pred = tube(GRID, (1.0, 0.0), 4.0, half_length_mm=12.0)  # 1 mm to +L: errors of about ±1 mm
    with torch.no_grad():
        targets = [project_volume(torch.from_numpy(truth), GRID, v).numpy() for v in VIEWS]
        rendered = [project_volume(torch.from_numpy(pred), GRID, v).numpy() for v in VIEWS]
    mesh = mesh_from_volume(pred, GRID, 0.5, inside="above")
    tree = analyze(mesh)
    return write_xray_report(out, geometry=Geometry(GRID, VIEWS), targets=targets, kind="line_integral",
                             rendered=rendered, occupancy=pred, mesh=mesh, gt_occupancy=truth, analysis=tree)


def _ct_report(out):
    from vesselfield.report.prediction import write_prediction_report

    occupancy = tube(GRID, (0.0, 0.0), 4.0, half_length_mm=12.0)
    image = (400.0 * occupancy + np.random.default_rng(0).normal(0.0, 30.0, GRID.shape)).astype(np.float32)
    mesh = mesh_from_volume(occupancy, GRID, 0.5, inside="above")
    return write_prediction_report(out, title="CT prediction", lines=["a tube"], image=image, grid=GRID,
                                   overlay=occupancy, mesh=mesh)


def _inr_report(out):
    from vesselfield.meshing import mesh_from_volume as mfv
    from vesselfield.methods.implicit_vessel import fit_implicit_sdf, inr_config
    from vesselfield.report.implicit_vessel import write_inr_report

    points = sphere_points(300, 8.0)[0]
    model = fit_implicit_sdf(points, config=inr_config("fast", iterations=0, prior_steps=0), device="cpu").model
    grid = VolumeGrid.centered((40, 40, 40), 0.6)
    with torch.no_grad():
        sdf = model.sdf_torch(torch.from_numpy(grid.voxel_centers_mm().reshape(-1, 3)))
    mesh = mfv(sdf[:, 0].reshape(grid.shape).numpy(), grid, 0.0, inside="below")
    return write_inr_report(out, model=model, points=points, mesh=mesh)["report"]


def _analysis_report(out):
    from vesselfield.analysis import analyze
    from vesselfield.report.analysis import write_analysis_report

    occupancy = tube(GRID, (0.0, 0.0), 4.0, half_length_mm=12.0)
    return write_analysis_report(out, analyze(mesh_from_volume(occupancy, GRID, 0.5, inside="above")))


def _view_page(out, **limits):
    from vesselfield.io.meshes import save_mesh
    from vesselfield.io.volumes import save_volume
    from vesselfield.pipelines.view import view_files
    from vesselfield.report.viewer.scene import ViewerLimits

    occupancy = tube(GRID, (0.0, 0.0), 4.0, half_length_mm=12.0)
    save_mesh(out / "mesh.stl", mesh_from_volume(occupancy, GRID, 0.5, inside="above"))
    save_volume(out / "ct.nii.gz", (300.0 * occupancy).astype(np.float32), GRID)
    page, _ = view_files([out / "mesh.stl", out / "ct.nii.gz"], out / "view.html", limits=ViewerLimits(**limits))
    return page


BUILDERS = {"xray": _xray_report, "ct": _ct_report, "inr": _inr_report, "analysis": _analysis_report,
            "view": _view_page, "view_folder": lambda out: _view_page(out, max_page_mb=1.0)}


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    out = {}
    for name, build in BUILDERS.items():
        folder = tmp_path_factory.mktemp(name)
        out[name] = build(folder)
    return out


@pytest.fixture(scope="module")
def context():
    from vesselfield.report.viewer.browser import browser

    with browser() as ctx:
        yield ctx


def opened(context, path, **kwargs):
    from vesselfield.report.viewer.browser import open_page

    page, check = open_page(context, path, **kwargs)
    assert check.problems() == [], check.problems()
    return page, check


# ------------------------------------------------------------------------------- the tests
@pytest.mark.parametrize("name", list(BUILDERS))
def test_every_report_opens_offline_ready_and_draws(context, pages, name):
    if name == "view_folder":
        assert (pages[name].parent / "view_files" / "data.js").is_file()  # folder mode was used
    page, check = opened(context, pages[name])
    assert check.blocked_requests == []
    state = check.viewers["vf-view-1"]
    assert state["ok"] and state["reason"] is None
    assert state["canvas"][0] > 300 and state["canvas"][1] > 300
    # Drawn share of the canvas, measured 9.6 % (analysis) to 48.6 % (CT) on these pages, the same
    # with OMP_NUM_THREADS=1 and 2 (software rendering is deterministic); an empty canvas has 0.
    assert drawn_fraction(canvas_pixels(page)) > 0.02
    page.close()


@pytest.mark.parametrize("name, start", [("xray", 0.5), ("analysis", 0.5), ("ct", 0.12)])
def test_a_mouse_drag_changes_the_picture(context, pages, name, start):
    # 3D pages turn under the drag; the CT page starts in its axial slice tile, where a drag moves
    # the cross and the other slices with it (its volume render would take seconds per software frame).
    page, check = opened(context, pages[name])
    before = canvas_pixels(page)
    box = page.locator('[data-vf-viewer="vf-view-1"] canvas').bounding_box()
    x, y = box["x"] + box["width"] * start, box["y"] + box["height"] * 0.45
    page.mouse.move(x, y)
    page.mouse.down()
    for k in range(1, 5):
        page.mouse.move(x + 25 * k, y + 6 * k)
    page.mouse.up()
    page.wait_for_timeout(300)
    after = canvas_pixels(page)
    changed = float((np.abs(after.astype(np.int16) - before.astype(np.int16)).max(axis=2) > 16).mean())
    # A 100-pixel drag turns the scene by tens of degrees (or moves the cross by about 10 mm):
    # measured 5.0 % (analysis), 9.0 % (CT) and 15.1 % (X-ray) of the pixels change, the same with
    # 1 and 2 threads; a drag that did nothing changes none.
    assert changed > 0.005
    page.close()


def test_error_colour_bar_is_there_with_a_reference_only(context, pages):
    page, check = opened(context, pages["xray"])
    state = check.viewers["vf-view-1"]
    assert state["colorbars"] == ["error_mm", "radius_mm"] and state["niivueColorbars"] >= 2
    legend = page.locator(".vf-legend").inner_text()
    assert "signed distance to the reference surface (mm" in legend
    # The bar's ends are drawn on the canvas: the blue and red ends of the error map (measured 374
    # and 225 pixels within 12 levels of them; 0 on the pages without an error layer).
    rgb = canvas_pixels(page).astype(np.int16)
    for end in ((33, 102, 172), (178, 24, 43)):
        assert (np.abs(rgb - np.array(end)).max(axis=2) <= 12).sum() > 50
    page.close()
    page, check = opened(context, pages["ct"])
    assert "error_mm" not in check.viewers["vf-view-1"]["colorbars"]
    page.close()


def test_without_webgl2_the_panel_says_so_in_one_line_and_the_pictures_stay(context, pages):
    no_webgl2 = ("(() => { const get = HTMLCanvasElement.prototype.getContext;"
                 " HTMLCanvasElement.prototype.getContext = function (type, ...rest) {"
                 " return type === 'webgl2' ? null : get.call(this, type, ...rest); }; })();")
    page, check = opened(context, pages["xray"], init_script=no_webgl2)
    assert check.viewers["vf-view-1"]["reason"] == "no-webgl2"
    status = page.locator(".vf-status")
    assert status.is_visible() and "no WebGL2" in status.inner_text() and "\n" not in status.inner_text()
    assert not page.locator(".vf-canvas-box").is_visible()
    assert page.locator("figure img").count() >= 3  # the static pictures
    page.close()


def test_a_hidden_panel_is_resized_when_shown(context, pages):
    page, check = opened(context, pages["view"])
    page.evaluate("document.querySelector('.vf-panel').open = false")
    page.set_viewport_size({"width": 900, "height": 800})
    page.wait_for_timeout(200)
    page.evaluate("document.querySelector('.vf-panel').open = true")
    page.wait_for_timeout(400)
    width, box_width = page.evaluate("() => { const c = document.querySelector('.vf-canvas-box canvas');"
                                     " return [c.width, c.parentElement.clientWidth * devicePixelRatio]; }")
    assert abs(width - box_width) <= 2 and width < 1100  # follows the new, narrower box
    assert drawn_fraction(canvas_pixels(page)) > 0.02
    page.close()
