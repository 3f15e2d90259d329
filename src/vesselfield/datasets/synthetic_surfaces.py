"""Open-surface datasets without downloads, for NUDF: (CT image, open surface mesh) pairs.

Written in the surface layout of :mod:`vesselfield.datasets.surface_ct` (docs/data.md,
"Surface datasets").

- :func:`make_open_surface_dataset`: seeded phantoms in a CT region of interest
  (:func:`open_surface_case`):

  - ``"pouch"``: an appendage-like pouch (NUDF's left atrial appendage): a finger of tapered
    capsules (ostium, thin neck, wide lobe, tip, bent at random) attached to an atrium-like
    sphere. The mesh is the pouch's surface (marching cubes of its distance) with every face
    inside the atrium removed: it is CUT at the ostium, one boundary loop where it meets the
    atrium. The image's blood pool is atrium + pouch.
  - ``"tube"``: a vessel segment, a section of a torus (a tube of radius ``r`` bent on a circle
    of radius ``R``) whose end caps are absent: two boundary loops. The mesh is exact at its
    vertices (rings on the torus); the image's lumen is the same torus section, with flat ends.

  The image is :func:`vesselfield.phantoms.ct.ct_like_image` of the blood-pool occupancy (a
  partial-volume ramp one voxel wide across the surface): tissue :data:`TISSUE_HU` with texture,
  blood ``TISSUE_HU + contrast_hu``, blur and noise. Sizes scale with the region of interest:
  the shapes are defined for an 80 mm cube and shrink with a smaller one, so a 48^3 grid at
  1 mm makes the same shapes at 0.6 of their size (for tests).
- :func:`make_vmtk_open_aorta_dataset`: the real vmtk aorta CT (``aorta.mha``) with its surface
  with open ends (``aorta-surface-open-ends.stl``). The STL is in RAS (data/samples/SOURCES.md:
  mapped RAS -> LPS every vertex of the closed surface lies on the level set's zero); it is read
  with ``frame="RAS"`` and written in LPS like every surface dataset. Image values are kept as
  stored in ``aorta.mha`` (0 to about 2570, not shifted to HU).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vesselfield.datasets.surface_ct import write_surface_dataset
from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid
from vesselfield.io.run_folder import RunSummary

KINDS = ("pouch", "tube")
#: Soft tissue (myocardium, fat-free mediastinum) of a contrast CT, HU.
TISSUE_HU = 40.0
#: Blood pool minus tissue of an arterial-phase CT: the blood pool is about 300-450 HU.
DEFAULT_CONTRAST_HU = 350.0
#: The shapes are defined for a region of interest of this size (mm) and scale with it.
_REFERENCE_ROI_MM = 80.0
#: Surfaces keep this margin (mm) from the image's box.
_MARGIN_MM = 2.0


@dataclass
class OpenSurfaceCase:
    """One phantom: image, grid, open mesh and the blood-pool occupancy that made the image.

    Attributes:
        name: the case name.
        image: (X, Y, Z) float32 HU.
        grid: the image's grid (LPS mm, centred on the origin).
        mesh: ``trimesh.Trimesh`` (LPS mm), open, faces wound with normals out of the blood pool.
        occupancy: (X, Y, Z) float32 blood-pool fraction in [0, 1] (1 inside the lumen / pouch and
            atrium, 0 outside, a one-voxel ramp across the wall).
        kind: ``"pouch"`` or ``"tube"``.
    """

    name: str
    image: np.ndarray
    grid: VolumeGrid
    mesh: object
    occupancy: np.ndarray
    kind: str


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise VesselfieldError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def _orient_outward(vertices: np.ndarray, faces: np.ndarray, outward: np.ndarray) -> np.ndarray:
    """Faces, flipped when most face normals disagree with ``outward`` (F, 3) directions."""
    tri = vertices[faces]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    return faces if np.einsum("ij,ij->i", normal, outward).sum() >= 0 else faces[:, ::-1].copy()


def _largest_component(vertices: np.ndarray, faces: np.ndarray):
    import trimesh

    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
    labels = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(faces))
    keep = labels == np.bincount(labels).argmax()
    used = np.unique(faces[keep])
    remap = np.full(len(vertices), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return trimesh.Trimesh(vertices=vertices[used], faces=remap[faces[keep]], process=False)


# ------------------------------------------------------------------------------------- tube
def _tube(rng, grid: VolumeGrid, scale: float):
    """(mesh, signed distance function) of a bent open tube centred in ``grid``."""
    import trimesh

    bend_mm = 30.0 * scale * rng.uniform(0.9, 1.1)
    angle = rng.uniform(1.2, 1.6)  # radians of arc: 36-48 mm of centreline at scale 1
    radius_mm = 5.0 * scale * rng.uniform(0.8, 1.2)
    rotation = _random_rotation(rng)
    e1, e2, n = rotation[:, 0], rotation[:, 1], rotation[:, 2]
    # Bend centre placed so that the arc's chord midpoint sits at the grid centre.
    mid = bend_mm * np.cos(angle / 2.0)
    centre = grid.center_mm - mid * (np.cos(angle / 2.0) * e1 + np.sin(angle / 2.0) * e2)
    n_rings = int(np.ceil(bend_mm * angle / (1.0 * scale))) + 1
    n_around = 32
    phi = np.linspace(0.0, angle, n_rings)
    psi = 2.0 * np.pi * np.arange(n_around) / n_around
    radial = np.cos(phi)[:, None] * e1 + np.sin(phi)[:, None] * e2  # (K, 3)
    axis_points = centre + bend_mm * radial
    ring = (np.cos(psi)[None, :, None] * radial[:, None, :] + np.sin(psi)[None, :, None] * n[None, None, :])
    vertices = (axis_points[:, None, :] + radius_mm * ring).reshape(-1, 3)
    k, j = np.meshgrid(np.arange(n_rings - 1), np.arange(n_around), indexing="ij")
    a = (k * n_around + j).ravel()
    b = (k * n_around + (j + 1) % n_around).ravel()
    c, d = a + n_around, b + n_around
    faces = np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)])
    outward = vertices[faces].mean(axis=1) - np.repeat(axis_points, n_around, axis=0)[faces[:, 0]]
    faces = _orient_outward(vertices, faces, outward)

    def distance(points: np.ndarray) -> np.ndarray:
        """Signed distance (mm, negative in the lumen) to the torus section with flat ends; exact
        to the wall, a lower bound beyond the ends' edges (max of the three pieces)."""
        rel = points - centre
        x, y, z = rel @ e1, rel @ e2, rel @ n
        wall = np.hypot(np.hypot(x, y) - bend_mm, z) - radius_mm
        end0 = -y  # the plane phi = 0, positive beyond it
        end1 = -np.sin(angle) * x + np.cos(angle) * y  # the plane phi = angle
        return np.maximum(wall, np.maximum(end0, end1))

    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
    return mesh, distance, {"bend_mm": bend_mm, "arc_rad": angle, "radius_mm": radius_mm}


# ------------------------------------------------------------------------------------ pouch
def _capsule_distance(points: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Union of tapered capsules: per segment ``|p - a - t (b - a)| - r(t)`` (t clamped), min over
    segments (as :func:`vesselfield.datasets.synthetic_ct.tube_distance`, on points)."""
    out = np.full(len(points), np.inf)
    for seg in segments:
        a, b, ra, rb = seg[:3], seg[3:6], seg[6], seg[7]
        ab = b - a
        t = np.clip((points - a) @ ab / float(ab @ ab), 0.0, 1.0)
        d = np.linalg.norm(points - a - t[:, None] * ab, axis=1) - (ra + t * (rb - ra))
        np.minimum(out, d, out=out)
    return out


def _pouch(rng, grid: VolumeGrid, scale: float):
    """(mesh cut at the ostium, blood-pool signed distance function) of an appendage-like pouch."""
    from skimage.measure import marching_cubes

    rotation = _random_rotation(rng)
    out_dir = rotation[:, 2]
    atrium_mm = 28.0 * scale
    # Centreline: from inside the atrium through the ostium, a thin neck, then bent to the lobe and tip.
    bend1 = _unit(out_dir + rng.uniform(0.5, 0.9) * rotation[:, 0])
    bend2 = _unit(bend1 + rng.uniform(-0.8, 0.8) * rotation[:, 1] + 0.3 * rotation[:, 0])
    p0 = -4.0 * scale * out_dir
    p1 = 5.0 * scale * out_dir
    p2 = p1 + 12.0 * scale * rng.uniform(0.9, 1.1) * bend1
    p3 = p2 + 10.0 * scale * rng.uniform(0.9, 1.1) * bend2
    r = scale * np.array([6.0, 3.5 * rng.uniform(0.9, 1.1), 8.0 * rng.uniform(0.9, 1.1), 4.5])
    points = np.stack([p0, p1, p2, p3])
    segments = np.array([[*points[i], *points[i + 1], r[i], r[i + 1]] for i in range(3)])
    # Centre the pouch's box (outside the atrium) on the grid centre.
    lo = (points[1:] - r[1:, None]).min(axis=0)
    hi = (points[1:] + r[1:, None]).max(axis=0)
    shift = grid.center_mm - (lo + hi) / 2.0
    segments[:, :3] += shift
    segments[:, 3:6] += shift
    atrium_centre = shift - (atrium_mm - 4.0 * scale) * out_dir  # the ostium plane sits 4 mm out of p0

    def atrium_distance(p):
        return np.linalg.norm(p - atrium_centre, axis=1) - atrium_mm

    def distance(p: np.ndarray) -> np.ndarray:
        """Blood pool (atrium and pouch) signed distance bound, mm, negative inside."""
        return np.minimum(_capsule_distance(p, segments), atrium_distance(p))

    # Marching cubes of the pouch alone on a fine grid around it (0.6 mm at scale 1).
    step = 0.6 * scale
    reach = np.abs(segments[:, 6:]).max() + 2.0 * step
    box_lo = np.minimum(segments[:, :3], segments[:, 3:6]).min(axis=0) - reach
    box_hi = np.maximum(segments[:, :3], segments[:, 3:6]).max(axis=0) + reach
    shape = tuple(int(s) for s in np.ceil((box_hi - box_lo) / step).astype(int) + 1)
    fine = VolumeGrid(shape, (step,) * 3, tuple(box_lo))
    centres = fine.voxel_centers_mm(np.float64).reshape(-1, 3)
    pouch = _capsule_distance(centres, segments).reshape(shape)
    verts, faces, _, _ = marching_cubes(pouch, level=0.0, spacing=(step,) * 3)
    verts = verts + fine.origin
    faces = faces.astype(np.int64)
    tri = verts[faces]
    # Outward: the signed volume of the closed pouch must be positive.
    signed = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum()
    if signed < 0:
        faces = faces[:, ::-1].copy()
    # Cut at the ostium: faces whose centroid lies inside the atrium go.
    keep = atrium_distance(verts[faces].mean(axis=1)) >= 0
    mesh = _largest_component(verts, faces[keep])
    return mesh, distance, {"atrium_radius_mm": atrium_mm, "radii_mm": [float(v) for v in r]}


# ----------------------------------------------------------------------------------- cases
def open_surface_case(kind: str, seed, shape: Sequence[int] = (80, 80, 80), spacing_mm=1.0, *,
                      contrast_hu: float = DEFAULT_CONTRAST_HU, noise_hu: float = 15.0) -> OpenSurfaceCase:
    """One open-surface phantom (module docstring) on a grid of ``shape`` x ``spacing_mm`` centred
    on the origin. ``seed``: an int or a sequence of ints (a SeedSequence entropy)."""
    from vesselfield.phantoms.ct import ct_like_image

    if kind not in KINDS:
        raise VesselfieldError(f"unknown open-surface phantom {kind!r}: use {' or '.join(KINDS)}")
    grid = VolumeGrid.centered(shape, spacing_mm)
    extent = np.asarray(grid.shape) * grid.spacing
    scale = float(extent.min()) / _REFERENCE_ROI_MM
    if min(grid.shape) < 16:
        raise VesselfieldError(f"shape must have at least 16 voxels per axis, got {grid.shape}")
    sequence = np.random.SeedSequence(seed)
    rng = np.random.default_rng(sequence)
    mesh, distance, facts = (_tube if kind == "tube" else _pouch)(rng, grid, scale)
    if not grid.contains(mesh.vertices, margin_mm=-_MARGIN_MM * scale).all():
        raise VesselfieldError(f"the {kind} phantom does not fit its grid {grid.shape} x {grid.spacing_mm} mm")
    h = float(grid.spacing.min())
    d = distance(grid.voxel_centers_mm(np.float64).reshape(-1, 3)).reshape(grid.shape)
    occupancy = np.clip(0.5 - d / h, 0.0, 1.0).astype(np.float32)
    image_seed = int(sequence.generate_state(1)[0])
    image = ct_like_image(occupancy, grid, seed=image_seed, vessel_hu=TISSUE_HU + float(contrast_hu),
                          background_hu=TISSUE_HU, noise_hu=noise_hu)
    return OpenSurfaceCase("", image, grid, mesh, occupancy, kind)


def make_open_surface_dataset(out, n_cases: int = 4, seed: int = 0, kinds: Sequence[str] = KINDS,
                              shape: Sequence[int] = (80, 80, 80), spacing_mm=1.0, *,
                              contrast_hu: float = DEFAULT_CONTRAST_HU, progress: bool = False) -> RunSummary:
    """``n_cases`` open-surface phantoms in the surface layout, kinds taken in turn from ``kinds``.

    Case ``i`` is ``{kind}_{i:03d}`` from the seed sequence ``(seed, i)``: the same seed gives the
    same dataset. Default: an 80 mm cube at 1 mm; ``shape=(48, 48, 48)`` for tests.
    """
    n_cases = _check_int(n_cases, "n_cases", 1)
    seed = _check_int(seed, "seed", 0)
    kinds = tuple(kinds)
    if not kinds or any(k not in KINDS for k in kinds):
        raise VesselfieldError(f"kinds must be among {', '.join(KINDS)}, got {kinds!r}")
    grid = VolumeGrid.centered(shape, spacing_mm)

    def cases():
        for i in range(n_cases):
            kind = kinds[i % len(kinds)]
            case = open_surface_case(kind, (seed, i), grid.shape, grid.spacing_mm, contrast_hu=contrast_hu)
            yield f"{kind}_{i:03d}", case.image, case.grid, case.mesh

    out = Path(out)
    summary = write_surface_dataset(
        out, cases(), name="vesselfield_open_surfaces", progress=progress,
        description=f"open-surface phantoms ({', '.join(kinds)}) with CT-like images, seed {seed}",
        vesselfield={"synthetic": "open-phantoms", "seed": seed, "kinds": list(kinds), "shape": list(grid.shape),
                     "spacing_mm": list(grid.spacing_mm), "contrast_hu": float(contrast_hu)},
        verb="data synth-surfaces open-phantoms")
    summary.lines.append(f"shape {grid.shape}, spacing {grid.spacing_mm} mm, seed {seed}")
    return summary


def make_vmtk_open_aorta_dataset(out, *, progress: bool = False) -> RunSummary:
    """One case ``aorta``: ``data/samples/vmtk_aorta/aorta.mha`` and ``aorta-surface-open-ends.stl``
    (read as RAS, written in LPS: module docstring)."""
    from vesselfield.io import sample_path
    from vesselfield.io.meshes import load_mesh
    from vesselfield.io.volumes import load_volume

    image, grid = load_volume(sample_path("vmtk_aorta", "aorta.mha"), what="vmtk aorta CT")
    mesh = load_mesh(sample_path("vmtk_aorta", "aorta-surface-open-ends.stl"), frame="RAS")
    inside = float(grid.contains(mesh.vertices).mean())
    out = Path(out)
    summary = write_surface_dataset(
        out, [("aorta", np.asarray(image, dtype=np.float32), grid, mesh)], name="vmtk_open_aorta",
        progress=progress, description="vmtk test data aorta CT and its surface with open ends (RAS -> LPS)",
        vesselfield={"synthetic": "vmtk-aorta", "mesh_frame_in_source": "RAS"},
        verb="data synth-surfaces vmtk-aorta")
    summary.lines.append(f"vmtk aorta: {len(mesh.faces)} faces, {100 * inside:.0f} % of vertices inside the image")
    return summary


__all__ = [
    "DEFAULT_CONTRAST_HU",
    "KINDS",
    "OpenSurfaceCase",
    "TISSUE_HU",
    "make_open_surface_dataset",
    "make_vmtk_open_aorta_dataset",
    "open_surface_case",
]
