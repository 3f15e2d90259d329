"""C-arm cone-beam geometry: the convention by hand, inverse projection, files, checks, DICOM XA."""

import json
import math

import numpy as np
import pytest
from conftest import modules_loaded_by, write_xa_dicom

from vesselfield.errors import VesselfieldError
from vesselfield.geometry import (
    ConeBeamView,
    Geometry,
    check_views_see_volume,
    default_geometry,
    geometry_from_dicom,
    load_geometry,
    save_geometry,
)
from vesselfield.grid import VolumeGrid


def _view(alpha=0.0, beta=0.0, dsd=1000.0, dso=750.0, shape=(40, 60), spacing=(0.5, 0.4)):
    return ConeBeamView(alpha, beta, dsd, dso, shape, spacing)


def _hand_frame(alpha_deg, beta_deg, dsd, dso):
    """The convention written out independently of the code under test."""
    a, b = math.radians(alpha_deg), math.radians(beta_deg)
    d = np.array([math.sin(a) * math.cos(b), -math.cos(a) * math.cos(b), math.sin(b)])
    u = np.array([math.cos(a), math.sin(a), 0.0])
    # v = u x d, expanded by components
    v = np.array([u[1] * d[2] - u[2] * d[1], u[2] * d[0] - u[0] * d[2], u[0] * d[1] - u[1] * d[0]])
    return d, -dso * d, (dsd - dso) * d, u, v


# ------------------------------------------------------------------------------ the convention
def test_frame_at_zero_angles():
    view = _view(0.0, 0.0, 1000.0, 750.0)
    np.testing.assert_allclose(view.direction, [0, -1, 0], atol=1e-15)  # detector anterior
    np.testing.assert_allclose(view.source_mm, [0, 750, 0], atol=1e-12)  # source posterior
    np.testing.assert_allclose(view.detector_center_mm, [0, -250, 0], atol=1e-12)
    np.testing.assert_allclose(view.u, [1, 0, 0], atol=1e-15)  # columns to the patient's left
    np.testing.assert_allclose(view.v, [0, 0, -1], atol=1e-15)  # rows towards the feet
    assert view.magnification == pytest.approx(1000 / 750)


@pytest.mark.parametrize("which", [0, 1])
def test_default_views_by_hand(which):
    view = default_geometry().views[which]
    alpha, beta, dsd, dso = [(29.7, 0.1, 993.0, 757.0605), (2.0, 29.0, 1055.0, 756.9934)][which]
    d, s, c, u, v = _hand_frame(alpha, beta, dsd, dso)
    np.testing.assert_allclose(view.direction, d, atol=1e-14)
    np.testing.assert_allclose(view.source_mm, s, atol=1e-10)
    np.testing.assert_allclose(view.detector_center_mm, c, atol=1e-10)
    np.testing.assert_allclose(view.u, u, atol=1e-14)
    np.testing.assert_allclose(view.v, v, atol=1e-14)
    if which == 0:
        # sin 29.7° cos 0.1° = 0.495457..., DSO·that = 375.0916...
        np.testing.assert_allclose(view.direction, [0.4954579, -0.8686302, 0.0017453], atol=1e-7)
        np.testing.assert_allclose(view.source_mm, [-375.09162, 657.60561, -1.32132], atol=1e-5)
    assert view.detector_shape == (512, 512) and view.pixel_spacing_mm == (0.278, 0.278)


def test_default_volume():
    grid = default_geometry().volume
    assert grid.shape == (128, 128, 128) and grid.spacing_mm == (0.8, 0.8, 0.8)
    np.testing.assert_allclose(grid.center_mm, 0, atol=1e-12)
    np.testing.assert_allclose(grid.bounds_mm[0], -51.2, atol=1e-12)


@pytest.mark.parametrize("alpha,beta", [(0, 0), (29.7, 0.1), (2, 29), (-45, -30), (120, 89.9), (-170, 60)])
def test_frame_is_orthonormal_and_distances_hold(alpha, beta):
    view = _view(alpha, beta, 1100.0, 800.0)
    d, u, v = view.direction, view.u, view.v
    for a in (d, u, v):
        assert np.linalg.norm(a) == pytest.approx(1.0, abs=1e-14)
    assert abs(u @ v) < 1e-14 and abs(u @ d) < 1e-14 and abs(v @ d) < 1e-14
    assert np.linalg.norm(view.source_mm - view.detector_center_mm) == pytest.approx(1100.0, abs=1e-9)
    assert np.linalg.norm(view.source_mm) == pytest.approx(800.0, abs=1e-9)


def test_pixel_centre_formula():
    view = _view(-23.0, 17.0, 1000.0, 700.0, shape=(40, 60), spacing=(0.5, 0.4))
    d, s, c, u, v = _hand_frame(-23.0, 17.0, 1000.0, 700.0)
    all_px = view.pixel_centers_mm()
    assert all_px.shape == (40, 60, 3)
    for r, col in [(0, 0), (39, 59), (7, 42), (20, 30)]:
        expected = c + (col - 29.5) * 0.4 * u + (r - 19.5) * 0.5 * v
        np.testing.assert_allclose(all_px[r, col], expected, atol=1e-10)
    picked = view.pixel_centers_mm(np.array([[7, 42], [39, 59]]))
    np.testing.assert_allclose(picked, all_px[[7, 39], [42, 59]], atol=1e-12)
    # Every pixel centre lies on the detector plane, DSD from the source along d.
    np.testing.assert_allclose((all_px - s) @ d, 1000.0, atol=1e-9)


def test_image_orientation_at_zero_angles():
    """Row 0 is superior, column 0 is the patient's right (x small) in the PA view."""
    view = _view(0.0, 0.0)
    px = view.pixel_centers_mm()
    assert px[0, 0, 2] > px[-1, 0, 2]
    assert px[0, 0, 0] < px[0, -1, 0]


def test_rays_point_from_source_through_pixels():
    view = _view(33.0, -12.0)
    origins, dirs = view.rays()
    assert origins.shape == dirs.shape == (40 * 60, 3)
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=1), 1.0, atol=1e-14)
    np.testing.assert_allclose(origins, np.broadcast_to(view.source_mm, origins.shape))
    centers = view.pixel_centers_mm().reshape(-1, 3)
    t = np.linalg.norm(centers - origins, axis=1)
    np.testing.assert_allclose(origins + t[:, None] * dirs, centers, atol=1e-9)
    # row-major order: ray r * W + c
    np.testing.assert_allclose(view.rays(np.array([[3, 5]]))[1][0], dirs[3 * 60 + 5], atol=1e-15)


@pytest.mark.parametrize("alpha,beta", [(29.7, 0.1), (2.0, 29.0), (-61.0, -35.0)])
def test_project_points_inverts_pixel_centres(alpha, beta):
    view = _view(alpha, beta, 1000.0, 750.0)
    rc = view.project_points(view.pixel_centers_mm().reshape(-1, 3))
    grid_rc = np.stack(np.meshgrid(np.arange(40), np.arange(60), indexing="ij"), -1).reshape(-1, 2)
    np.testing.assert_allclose(rc, grid_rc, atol=1e-9)
    np.testing.assert_allclose(view.project_points(np.zeros((1, 3))), [[19.5, 29.5]], atol=1e-9)
    # every point along a ray lands on that ray's pixel
    origins, dirs = view.rays(np.array([[3, 50]]))
    along = origins + np.array([[100.0], [700.0], [1200.0]]) * dirs
    np.testing.assert_allclose(view.project_points(along), [[3, 50]] * 3, atol=1e-9)
    # behind the source: no projection
    assert np.all(np.isnan(view.project_points(view.source_mm[None] * 2.0)))


def test_marker_lands_where_the_formulas_say_not_at_half_angles():
    """The published SDF-CAR code simulates views at α/2, β/2; ours must use the angles as given."""
    view = default_geometry().views[0]  # α = 29.7, β = 0.1, DSD 993, DSO 757.0605
    marker = np.array([12.0, -8.0, 25.0])

    def by_hand(alpha, beta):
        d, s, c, u, v = _hand_frame(alpha, beta, 993.0, 757.0605)
        # Solve S + t (X - S) = C + a u + b v for (t, a, b).
        t, a, b = np.linalg.solve(np.stack([marker - s, -u, -v], axis=1), c - s)
        return np.array([b / 0.278 + 255.5, a / 0.278 + 255.5])

    expected = by_hand(29.7, 0.1)
    np.testing.assert_allclose(view.project_points(marker[None])[0], expected, atol=1e-8)
    assert np.linalg.norm(expected - by_hand(29.7 / 2, 0.1 / 2)) > 10  # pixels apart (14.5)
    # and the ray of the nearest pixel passes within one pixel footprint of the marker
    origin, direction = view.rays(np.round(expected)[None].astype(int))
    w = marker - origin[0]
    assert np.linalg.norm(w - (w @ direction[0]) * direction[0]) < 0.278 / view.magnification


# ------------------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    "kwargs,needle",
    [
        (dict(dso=1000.0), "smaller than source_to_detector_mm"),
        (dict(dso=1200.0), "smaller than source_to_detector_mm"),
        (dict(dso=-5.0), "must be positive"),
        (dict(dsd=0.0, dso=0.0), "must be positive"),
        (dict(spacing=(0.0, 0.3)), "pixel_spacing_mm must be positive"),
        (dict(spacing=(0.3,)), "pixel_spacing_mm must be two numbers"),
        (dict(shape=(0, 10)), "detector_shape must be two positive integers"),
        (dict(shape=(10.5, 10)), "detector_shape must be two positive integers"),
        (dict(shape="512"), "detector_shape must be two numbers"),
        (dict(alpha=float("nan")), "primary_angle_deg must be finite"),
        (dict(beta=float("inf")), "secondary_angle_deg must be finite"),
        (dict(beta=90.0), "strictly between -90 and 90"),
        (dict(beta=-95.0), "strictly between -90 and 90"),
        (dict(alpha="30"), "primary_angle_deg must be a number"),
        (dict(dsd=True), "source_to_detector_mm must be a number"),
    ],
)
def test_bad_views_raise(kwargs, needle):
    with pytest.raises(VesselfieldError, match=needle) as err:
        _view(**kwargs)
    assert "\n" not in str(err.value)


def test_bad_pixels_and_points_raise():
    view = _view()
    with pytest.raises(VesselfieldError, match="outside the 40x60 detector"):
        view.pixel_centers_mm(np.array([[40, 0]]))
    with pytest.raises(VesselfieldError, match=r"\(N, 2\)"):
        view.rays(np.zeros((3, 3)))
    with pytest.raises(VesselfieldError, match="NaN"):
        view.pixel_centers_mm(np.array([[np.nan, 0.0]]))
    with pytest.raises(VesselfieldError, match=r"\(N, 3\)"):
        view.project_points(np.zeros(3))


# ------------------------------------------------------------------------------ files
def test_json_round_trip(tmp_path):
    geometry = default_geometry()
    path = tmp_path / "sub" / "geometry.json"
    save_geometry(path, geometry)
    assert load_geometry(path) == geometry
    data = json.loads(path.read_text())
    assert data["views"][1] == {
        "primary_angle_deg": 2.0,
        "secondary_angle_deg": 29.0,
        "source_to_detector_mm": 1055.0,
        "source_to_isocenter_mm": 756.9934,
        "detector_shape": [512, 512],
        "pixel_spacing_mm": [0.278, 0.278],
    }
    assert data["volume"]["shape"] == [128, 128, 128]
    # no temporary files left beside it
    assert [p.name for p in path.parent.iterdir()] == ["geometry.json"]
    # extra keys (metadata) are tolerated, odd values round-trip exactly
    data["views"][0]["image"] = "view1.png"
    data["views"][0]["primary_angle_deg"] = -0.1 + 0.2
    path.write_text(json.dumps(data))
    assert load_geometry(path).views[0].primary_angle_deg == -0.1 + 0.2
    assert ConeBeamView.from_dict(geometry.views[0].to_dict()) == geometry.views[0]


def _write(tmp_path, obj, name="g.json"):
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def _good_dict():
    return default_geometry().to_dict()


def _without(d, *keys):
    for key in keys[:-1]:
        d = d[key]
    del d[keys[-1]]


@pytest.mark.parametrize(
    "edit,needle",
    [
        (lambda d: _without(d, "views", 1, "source_to_isocenter_mm"), "view 1: missing key(s): source_to_isocenter_mm"),
        (lambda d: _without(d, "views", 0, "pixel_spacing_mm"), "view 0: missing key(s): pixel_spacing_mm"),
        (lambda d: _without(d, "volume"), "geometry is missing key(s): volume"),
        (lambda d: _without(d, "volume", "spacing_mm"), "volume: volume grid is missing key(s): spacing_mm"),
        (lambda d: d.update(views=[]), "views must be a non-empty list"),
        (lambda d: d.update(views={"a": 1}), "views must be a non-empty list"),
        (lambda d: d["views"].append(3), "view 2: a view must be an object"),
        (lambda d: d["views"][0].update(detector_shape="512x512"), "view 0: detector_shape must be two numbers"),
        (lambda d: d["views"][1].update(primary_angle_deg="LAO 30"), "view 1: primary_angle_deg must be a number"),
        (lambda d: d["views"][1].update(source_to_isocenter_mm=2000), "view 1: source_to_isocenter_mm (2000)"),
        (lambda d: d["volume"].update(shape=[128, 128]), "volume: shape must have 3 values"),
        (lambda d: d["volume"].update(spacing_mm=[0.8, -1, 0.8]), "volume: spacing_mm must be positive"),
    ],
)
def test_bad_geometry_files_raise(tmp_path, edit, needle):
    data = _good_dict()
    edit(data)
    path = _write(tmp_path, data)
    with pytest.raises(VesselfieldError) as err:
        load_geometry(path)
    message = str(err.value)
    assert needle in message and str(path) in message and "\n" not in message


def test_unreadable_geometry_files_raise(tmp_path):
    with pytest.raises(VesselfieldError, match="geometry file not found"):
        load_geometry(tmp_path / "nope.json")
    with pytest.raises(VesselfieldError, match=r"invalid JSON .* line 1 column"):
        load_geometry(_write(tmp_path, '{"volume": '))
    with pytest.raises(VesselfieldError, match="geometry must be an object"):
        load_geometry(_write(tmp_path, "[1, 2]"))
    with pytest.raises(VesselfieldError, match="needs a Geometry"):
        save_geometry(tmp_path / "x.json", {"volume": 1})
    with pytest.raises(VesselfieldError, match="no views"):
        Geometry(VolumeGrid((2, 2, 2), (1, 1, 1)), [])


# ------------------------------------------------------------------------------ visibility
def test_default_views_see_the_volume():
    check_views_see_volume(default_geometry())


def test_views_that_cannot_see_the_volume_raise():
    views = default_geometry().views
    off_to_the_side = Geometry(VolumeGrid.centered((32, 32, 32), 1.0, center_mm=(0, 0, 400.0)), views)
    with pytest.raises(VesselfieldError, match="view 0: the volume box projects entirely outside the 512x512"):
        check_views_see_volume(off_to_the_side)
    # Only view 1 (β = 29°) is tilted enough to see a volume moved 150 mm up along its d.
    shifted = Geometry(VolumeGrid.centered((16, 16, 16), 1.0, center_mm=150 * views[1].direction), views)
    with pytest.raises(VesselfieldError, match="view 0"):
        check_views_see_volume(shifted)
    check_views_see_volume(Geometry(shifted.volume, [views[1]]))
    huge = Geometry(VolumeGrid.centered((100, 100, 100), 20.0), views)
    with pytest.raises(VesselfieldError, match="view 0: the X-ray source .* lies inside the volume box"):
        check_views_see_volume(huge)
    behind = Geometry(VolumeGrid.centered((8, 8, 8), 1.0, center_mm=views[1].source_mm * 1.5), views[1:])
    with pytest.raises(VesselfieldError, match="view 0: the volume lies behind the X-ray source"):
        check_views_see_volume(behind)


def test_importing_geometry_does_not_import_torch_or_pydicom():
    assert modules_loaded_by("import vesselfield.geometry", ["torch", "pydicom"]) == []


# ------------------------------------------------------------------------------ DICOM XA


def test_dicom_round_trip(tmp_path):
    first = write_xa_dicom(tmp_path / "a.dcm")
    second = write_xa_dicom(tmp_path / "b.dcm", PositionerPrimaryAngle=-31.5, PositionerSecondaryAngle=-22.25,
                       DistanceSourceToDetector=1055.0, DistanceSourceToPatient=756.9934, Rows=8, Columns=5,
                       ImagerPixelSpacing=[0.2, 0.25])
    geometry = geometry_from_dicom([first, second])
    assert geometry.volume == default_geometry().volume
    a, b = geometry.views
    assert a == ConeBeamView(29.7, 0.1, 993.0, 757.0605, (4, 6), (0.278, 0.31))
    assert b == ConeBeamView(-31.5, -22.25, 1055.0, 756.9934, (8, 5), (0.2, 0.25))
    grid = VolumeGrid.centered((10, 10, 10), 1.0)
    assert geometry_from_dicom(str(first), volume=grid) == Geometry(grid, [a])


def test_dicom_errors(tmp_path):
    missing = write_xa_dicom(tmp_path / "m.dcm", drop=("DistanceSourceToPatient",))
    with pytest.raises(VesselfieldError, match=r"m\.dcm: DICOM tag DistanceSourceToPatient \(0018,1111\) is missing"):
        geometry_from_dicom([missing])
    no_spacing = write_xa_dicom(tmp_path / "s.dcm", drop=("ImagerPixelSpacing",))
    with pytest.raises(VesselfieldError, match="ImagerPixelSpacing"):
        geometry_from_dicom([no_spacing])
    empty = write_xa_dicom(tmp_path / "e.dcm", DistanceSourceToDetector="")
    with pytest.raises(VesselfieldError, match=r"e\.dcm: DICOM tag DistanceSourceToDetector \(0018,1110\) is missing"):
        geometry_from_dicom([empty])
    text = tmp_path / "notes.dcm"
    text.write_text("not a DICOM file at all")
    with pytest.raises(VesselfieldError, match=r"notes\.dcm is not a readable DICOM file"):
        geometry_from_dicom([text])
    with pytest.raises(VesselfieldError, match="DICOM file not found"):
        geometry_from_dicom([tmp_path / "absent.dcm"])
    impossible = write_xa_dicom(tmp_path / "x.dcm", DistanceSourceToPatient=1200.0)
    with pytest.raises(VesselfieldError, match=r"x\.dcm: source_to_isocenter_mm \(1200\) must be smaller"):
        geometry_from_dicom([impossible])
    with pytest.raises(VesselfieldError, match="at least one"):
        geometry_from_dicom([])
