"""NUDF's shape-diameter sampling (datasets/udf_samples.py) against closed forms.

Every tolerance is derived in the comment above it: float rounding, the icosphere's faceting
(its sagitta), or a binomial / CLT bound at 4 standard deviations (two-sided false alarm 6e-5
for a fresh seed; the seeds here are fixed, so the tests are deterministic).
"""

import numpy as np
import pytest
import trimesh

from vesselfield.datasets.udf_samples import (
    DEFAULT_CONE_DEG,
    DEFAULT_RAYS,
    DEFAULT_THIN_MM,
    _cone_directions,
    shape_diameter,
    udf_training_samples,
)
from vesselfield.errors import VesselfieldError


def code_cone():
    """The cosines of the rays the code casts (its own Fibonacci cap), full aperture DEFAULT_CONE_DEG."""
    _, cos_t = _cone_directions(DEFAULT_RAYS, np.deg2rad(DEFAULT_CONE_DEG) / 2.0)
    return cos_t


def chord(rho0, cos_a, radius):
    """Length of a ray from a point at distance rho0 < radius from a sphere's centre, at angle a to
    the direction towards the centre, to the sphere of ``radius``: rho0 cos a + sqrt(R^2 - rho0^2 sin^2 a)."""
    return rho0 * cos_a + np.sqrt(radius**2 - rho0**2 * (1.0 - cos_a**2))


def inradius(mesh) -> float:
    """Smallest distance from the centre to a face plane: the mesh lies between it and the sphere."""
    return float(np.min(np.abs(np.einsum("ij,ij->i", mesh.face_normals, mesh.triangles[:, 0]))))


def test_sphere_shape_diameter_matches_the_closed_form():
    r = 10.0
    mesh = trimesh.creation.icosphere(subdivisions=4, radius=r)
    cos_t = code_cone()
    # Closed form on the sphere: a ray at angle a to the inward normal has chord 2 r cos a; the SD
    # is the cos-weighted mean over the code's rays: 2 r sum(cos^2) / sum(cos).
    closed = 2.0 * r * np.sum(cos_t**2) / np.sum(cos_t)
    # Sites: face centroids (depth rho0 = |c| inside the sphere), cone around the exact radial direction.
    centroids = mesh.triangles_center
    radial = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
    sd = shape_diameter(mesh, centroids, radial, faces=np.arange(len(mesh.faces)))
    # Every ray ends on a facet, which lies between the sphere of the mesh's inradius and the
    # sphere itself: each ray's length is bracketed by the chords to those two spheres, hence so
    # is their cos-weighted mean. The only other error is float64 rounding (1e-9 mm).
    rho0 = np.linalg.norm(centroids, axis=1)[:, None]
    weights = cos_t / cos_t.sum()
    lower = chord(rho0, cos_t, inradius(mesh)) @ weights
    upper = chord(rho0, cos_t, r) @ weights
    assert np.all(sd >= lower - 1e-9) and np.all(sd <= upper + 1e-9)
    # Against the sphere's closed form: the origin's depth moves the chord by at most its depth
    # (|d chord / d rho0| = |cos 2a| / cos a <= 1 for a <= 22.5 deg) and the end by at most
    # sagitta / cos a: tolerance sagitta (1 + 1 / cos 22.5 deg).
    sagitta = r - inradius(mesh)
    assert np.max(np.abs(sd - closed)) <= sagitta * (1.0 + 1.0 / np.cos(np.deg2rad(DEFAULT_CONE_DEG / 2))) + 1e-9
    # The module's claim: 16 rays put the SD within 0.1 % of the continuous cone's
    # 2 r E[cos^2] / E[cos] = 2 r (2 / 3) (1 - c0^3) / (1 - c0^2) (uniform in solid angle = uniform in cos).
    c0 = np.cos(np.deg2rad(DEFAULT_CONE_DEG / 2))
    continuous = 2.0 * r * (2.0 / 3.0) * (1 - c0**3) / (1 - c0**2)
    assert abs(closed - continuous) / continuous < 1e-3
    # Outside SD of a convex surface: every ray misses, the SD is max_mm (default: the box diagonal).
    outside = shape_diameter(mesh, centroids[:50], -radial[:50], faces=np.arange(50))
    np.testing.assert_allclose(outside, np.linalg.norm(np.ptp(mesh.vertices, axis=0)))


def slab_and_block():
    """A thin slab (20 x 20 x 2 mm, x < 0) and a thick block (20 mm cube, x > 10), 10 mm apart."""
    slab = trimesh.creation.box(extents=(20.0, 20.0, 2.0))
    slab.apply_translation((-10.0, 0.0, 0.0))
    block = trimesh.creation.box(extents=(20.0, 20.0, 20.0))
    block.apply_translation((20.0, 0.0, 0.0))
    return trimesh.util.concatenate([slab, block]), slab


def test_thin_parts_are_sampled_thin_factor_times_denser():
    mesh, slab = slab_and_block()
    n, factor = 20_000, 10.0
    bounds = (np.array([-25.0, -15.0, -15.0]), np.array([35.0, 15.0, 15.0]))
    s = udf_training_samples(mesh, bounds, n_surface=2 * n, n_uniform=0, thin_factor=factor, seed=3)
    area = mesh.area_faces
    normals = mesh.face_normals
    on_slab = mesh.triangles_center[:, 0] < 0
    big = on_slab & (np.abs(normals[:, 2]) > 0.99)  # the slab's two 20 x 20 faces
    cos_t = code_cone()
    # The slab's big faces: every inward ray crosses the 2 mm slab (lateral travel 2 tan 22.5 deg =
    # 0.83 mm from a centroid 6.7 mm from the edges), chord 2 / cos a: SD = 2 n / sum(cos), exact
    # up to float rounding.
    np.testing.assert_allclose(s.face_sd_inside_mm[big], 2.0 * len(cos_t) / cos_t.sum(), rtol=1e-6)
    thin = s.face_sd_inside_mm < DEFAULT_THIN_MM
    # Only those are thin: block chords are >= 6.7 / sin 22.5 deg = 17 mm.
    np.testing.assert_array_equal(thin, big)
    # Inside samples (side -1) stay on their box's side of x = 5 (pushes are < 5 sigma = 2.6 mm on
    # the slab; the block's go into the block). Expected share on the slab side: each face is drawn
    # with probability proportional to (factor if thin else 1) x area; the count is binomial.
    inside = s.side == -1
    assert inside.sum() == n  # nothing pushed out of the box
    weight = np.where(thin, factor, 1.0) * area
    p = weight[on_slab].sum() / weight.sum()
    count = int(np.sum(inside & (s.points[:, 0] < 5.0)))
    assert abs(count - n * p) <= 4.0 * np.sqrt(n * p * (1 - p)), (count, n * p)
    # The same as a density ratio: thin samples per mm^2 over thick samples per mm^2 estimates
    # thin_factor. The slab side holds the thin faces and the slab's rim (thick, area A_rim); the
    # block side only thick faces (area A_block), so n_thin = count - (n - count) A_rim / A_block
    # = count (1 + k) - n k (k = A_rim / A_block) has mean n q, q = factor A_thin / W, and sd
    # (1 + k) sqrt(n p (1 - p)). ratio = (n_thin / A_thin) / ((n - n_thin) / A_rest) moves by
    # ratio n / (n_thin (n - n_thin)) per sample (delta method): 4 sd of that.
    a_thin, a_rest = area[thin].sum(), area[~thin].sum()
    k = area[on_slab & ~thin].sum() / area[~on_slab].sum()
    q = factor * a_thin / (factor * a_thin + a_rest)
    n_thin = count * (1 + k) - n * k
    ratio = (n_thin / a_thin) / ((n - n_thin) / a_rest)
    sd_ratio = factor * n / (n * q * (n - n * q)) * (1 + k) * np.sqrt(n * p * (1 - p))
    assert abs(ratio - factor) <= 4.0 * sd_ratio, (ratio, sd_ratio)


def test_offsets_are_half_normal_with_sigma_a_quarter_of_the_sd():
    r = 10.0
    mesh = trimesh.creation.icosphere(subdivisions=4, radius=r)
    sagitta = r - inradius(mesh)
    # max_sd_mm = 6 is the longest ray: outward rays of a sphere miss, and so do the inward ones
    # (chords >= 2 r cos 22.5 deg = 18.5 mm), so both SDs are max_sd_mm and sigma = SD / 4 = 1.5 mm
    # (inside the [0.1, 4.375] clip). No inward push crosses the centre (|N| > r / sigma = 6.7:
    # P = 3e-11) and the box (+-35 mm) is wider than r + 16 sigma: no point is dropped.
    box = (np.full(3, -35.0), np.full(3, 35.0))
    s = udf_training_samples(mesh, box, n_surface=8000, n_uniform=0, max_sd_mm=6.0, seed=1)
    assert np.sum(s.side == -1) == 4000 and np.sum(s.side == 1) == 4000
    np.testing.assert_allclose(s.shape_diameter_mm, 6.0)
    sigma = np.full(len(s), 1.5)
    radius = np.linalg.norm(s.points.astype(np.float64), axis=1)
    for side in (-1, 1):
        sel = s.side == side
        m = int(sel.sum())
        # Points start on facets (radius within [r - sagitta, r]) and move along barycentric
        # normals, radial on an icosphere up to the facets' tilt: the offset is | |p| - r | within
        # the sagitta (the tilt's cos error is far below it).
        z = np.abs(radius[sel] - r) / sigma[sel]
        bias = sagitta / sigma[sel].min()
        # |N(0, 1)|: mean sqrt(2 / pi), sd sqrt(1 - 2 / pi); CLT at 4 sd plus the sagitta bias.
        assert abs(z.mean() - np.sqrt(2 / np.pi)) <= 4 * np.sqrt((1 - 2 / np.pi) / m) + bias, z.mean()
        # Its shape: P(|N| < 1) = 0.6827 (binomial at 4 sd; the bias moves at most the points within
        # bias of 1, density 2 phi(1) = 0.484 per unit).
        frac = np.mean(z < 1.0)
        assert abs(frac - 0.6827) <= 4 * np.sqrt(0.6827 * 0.3173 / m) + 0.484 * bias, frac
        # Each side stays on its side.
        assert np.all(np.sign(radius[sel] - r + side * sagitta) == side)


def test_targets_are_exact_distances_and_uniform_points_fill_the_box():
    r = 5.0
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=r)
    lo, hi = np.array([-9.0, -8.0, -7.0]), np.array([9.0, 8.0, 7.0])
    s = udf_training_samples(mesh, (lo, hi), n_surface=3000, n_uniform=2000, seed=2)
    p = s.points.astype(np.float64)
    # The mesh lies within the sagitta of the sphere (Hausdorff distance r - inradius), so its
    # distance differs from | |p| - r | by at most that; float32 points and distances add < 1e-5 mm.
    sagitta = r - inradius(mesh)
    assert np.max(np.abs(s.distances_mm - np.abs(np.linalg.norm(p, axis=1) - r))) <= sagitta + 1e-5
    # Uniform points: all kept (inside the box by construction), flagged, no SD.
    uniform = s.side == 0
    assert uniform.sum() == 2000 and not s.is_surface[uniform].any() and np.all(np.isnan(s.shape_diameter_mm[uniform]))
    assert np.all((p >= lo) & (p <= hi))
    # Uniform in the box: each coordinate's mean is the box centre within 4 sd of (hi - lo) / sqrt(12 n).
    mean = p[uniform].mean(axis=0)
    assert np.all(np.abs(mean - (lo + hi) / 2) <= 4 * (hi - lo) / np.sqrt(12 * 2000))
    # Same seed, same samples.
    again = udf_training_samples(mesh, (lo, hi), n_surface=3000, n_uniform=2000, seed=2)
    np.testing.assert_array_equal(again.points, s.points)


def test_open_surface_rims_are_not_thin_and_bad_input_is_one_line():
    # An open hemisphere: rays leaving through the hole hit nothing; rim sites must not read as thin.
    full = trimesh.creation.icosphere(subdivisions=3, radius=5.0)
    keep = full.triangles_center[:, 2] < 0
    half = trimesh.Trimesh(full.vertices, full.faces[keep], process=False)
    s = udf_training_samples(half, (np.full(3, -8.0), np.full(3, 8.0)), n_surface=200, n_uniform=10, seed=0)
    assert np.all(s.face_sd_inside_mm > DEFAULT_THIN_MM) and np.all(s.face_sd_outside_mm > DEFAULT_THIN_MM)
    cloud = trimesh.PointCloud(full.vertices)
    for call, message in (
        (lambda: udf_training_samples(cloud, (np.zeros(3), np.ones(3))), "must be a triangle mesh"),
        (lambda: udf_training_samples(full, (np.ones(3), np.zeros(3))), "hi > lo"),
        (lambda: udf_training_samples(full, (np.zeros(3), np.ones(3)), thin_factor=0.5), "thin_factor"),
        (lambda: shape_diameter(full, np.zeros((2, 3)), np.zeros((2, 3))), "zero vectors"),
        (lambda: shape_diameter(full, np.zeros((2, 3)), np.ones((2, 3)), cone_deg=180), "below 180"),
    ):
        with pytest.raises(VesselfieldError, match=message) as info:
            call()
        assert "\n" not in str(info.value)
