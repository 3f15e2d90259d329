"""What the interactive 3D view shows: surfaces, error layers, centrelines, C-arm glyphs and volumes.

A :class:`ViewerScene` collects display-ready objects in the one world frame (LPS mm). The page
writer (:mod:`vesselfield.report.viewer.page`) hands them to NiiVue, whose world is the NIfTI
"scanner" frame, RAS mm: positions are converted on the way out (x and y negated, a rotation, so
faces keep their orientation) and volumes carry their :meth:`VolumeGrid.affine_ras`.

Display budgets (defaults in :class:`ViewerLimits`) keep a page small and quick to open:
surfaces above ``max_faces`` are simplified for display only (vertex clustering,
:func:`~vesselfield.report.figures.simplify_for_display`); the full-resolution mesh stays the run's
download. Volumes above ``max_voxels`` are block-averaged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vesselfield.errors import VesselfieldError

__all__ = ["ViewerLimits", "MeshLayer", "ViewerMesh", "ViewerVolume", "ViewerScene",
           "surface_distance_mm", "tube_mesh", "carm_glyphs"]

# Colours (RGBA 0–255) of the objects, chosen to stay apart on a white background.
SURFACE_RGBA = (214, 72, 60, 255)
SURFACE_COLOURS = ((214, 72, 60, 255), (60, 120, 200, 255), (90, 170, 90, 255), (200, 160, 40, 255))
REFERENCE_RGBA = (90, 90, 90, 255)
VIEW_RGBA = ((230, 140, 20, 255), (120, 70, 200, 255), (30, 150, 160, 255), (200, 60, 140, 255))


@dataclass(frozen=True)
class ViewerLimits:
    """Display budgets of the 3D view (defaults in one place).

    Attributes:
        max_faces: faces of one displayed surface; larger surfaces are simplified for display.
            200k faces keep a 500k-triangle case's page under 15 MB with its reference and a
            128³ volume (docs/benchmarks.md, "3D viewer").
        max_reference_faces: faces of a displayed reference surface (drawn semi-transparent).
        max_voxels: voxels of one displayed volume; larger volumes are block-averaged
            (160³ ≈ 4.1 M).
        max_page_mb: above this many MB of page, the data moves to a ``data.js`` file beside the
            page (the issue's 15 MB).
        tube_sides: polygon sides of a centreline tube.
    """

    max_faces: int = 150_000
    max_reference_faces: int = 60_000
    max_voxels: int = 160 ** 3
    max_page_mb: float = 15.0
    tube_sides: int = 8


@dataclass
class MeshLayer:
    """A per-vertex scalar shown with a colour map and a colour bar.

    Attributes:
        name: short key (``error_mm``, ``radius_mm``).
        label: what the colour bar means, with its unit.
        values: (V,) float32, one per vertex of its mesh.
        colormap: a NiiVue colour map name (``warm``, ``winter``, ``viridis``, ...).
        range: ``(min, max)`` of the colour map, in the values' unit.
    """

    name: str
    label: str
    values: np.ndarray
    colormap: str
    range: tuple[float, float]


@dataclass
class ViewerMesh:
    """A triangle mesh to display (LPS mm) with its colour, opacity and optional scalar layer."""

    name: str
    label: str
    vertices: np.ndarray
    faces: np.ndarray
    rgba: tuple[int, int, int, int]
    opacity: float = 1.0
    visible: bool = True
    layer: MeshLayer | None = None
    note: str = ""


@dataclass
class ViewerVolume:
    """A volume to display as slices and a 3D render: ``array`` (X, Y, Z) on ``grid``.

    ``overlay`` volumes (masks, probabilities) are drawn over the first (image) volume, values
    below ``range[0]`` transparent.
    """

    name: str
    label: str
    array: np.ndarray
    grid: object
    colormap: str = "gray"
    opacity: float = 1.0
    range: tuple[float, float] | None = None
    overlay: bool = False
    note: str = ""


def _faces_vertices(mesh) -> tuple[np.ndarray, np.ndarray]:
    if not (hasattr(mesh, "vertices") and hasattr(mesh, "faces")):
        raise VesselfieldError(f"a 3D view mesh must have vertices and faces, got {type(mesh).__name__}")
    v = np.asarray(mesh.vertices, dtype=np.float64).reshape(-1, 3)
    f = np.asarray(mesh.faces, dtype=np.int64).reshape(-1, 3)
    if len(v) < 3 or len(f) < 1:
        raise VesselfieldError("a 3D view mesh needs at least one triangle")
    return v, f


def welded(vertices, faces) -> tuple[np.ndarray, np.ndarray]:
    """Vertices merged where they coincide (trimesh), unused ones dropped: STL files repeat every
    corner, and NiiVue's smooth shading and the file size both need shared vertices."""
    import trimesh

    m = trimesh.Trimesh(vertices, faces, process=False)
    m.merge_vertices()
    m.remove_unreferenced_vertices()
    return np.asarray(m.vertices, dtype=np.float64), np.asarray(m.faces, dtype=np.int64)


def surface_distance_mm(points_mm, reference) -> np.ndarray:
    """(N,) signed distance (mm) from ``points_mm`` to the ``reference`` surface: positive outside it.

    Exact point-to-triangle distances (pymeshlab's per-vertex "distance from another mesh"); the
    sign is outside (+) / inside (−) of the reference's outward normals, so a closed reference gives
    "too wide" (+) and "too narrow" (−).
    """
    import pymeshlab

    p = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
    rv, rf = _faces_vertices(reference)
    # A measured mesh needs faces for pymeshlab; one degenerate triangle per point set is enough.
    ms = pymeshlab.MeshSet()
    ms.add_mesh(pymeshlab.Mesh(vertex_matrix=p, face_matrix=np.zeros((1, 3), dtype=np.int32)))
    ms.add_mesh(pymeshlab.Mesh(vertex_matrix=rv, face_matrix=rf.astype(np.int32)))
    diag = float(np.linalg.norm(np.ptp(np.vstack([p, rv]), axis=0)))
    try:
        ms.compute_scalar_by_distance_from_another_mesh_per_vertex(
            measuremesh=0, refmesh=1, signeddist=True, maxdist=pymeshlab.PureValue(2.0 * diag + 1.0))
    except pymeshlab.PyMeshLabException as exc:
        raise VesselfieldError(f"distance to the reference surface failed: {exc}") from exc
    d = np.asarray(ms.mesh(0).vertex_scalar_array(), dtype=np.float64)
    if len(d) != len(p):
        raise VesselfieldError("distance to the reference surface failed (point count changed)")
    return d


def _ring_frames(axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors (M, 3) perpendicular to each unit ``axis`` (M, 3) and to each other."""
    helper = np.where(np.abs(axis[:, :1]) < 0.9, np.array([[1.0, 0, 0]]), np.array([[0, 1.0, 0]]))
    e1 = np.cross(axis, helper)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    return e1, np.cross(axis, e1)


def tube_mesh(a_mm, b_mm, radius_mm, *, sides: int = 8, values_a=None, values_b=None):
    """Open cylinders from ``a_mm[i]`` to ``b_mm[i]`` (M, 3) of radius ``radius_mm`` (scalar or (M,)).

    Returns ``(vertices (2·sides·M, 3), faces (2·sides·M, 3), values (2·sides·M,) or None)``; the
    per-vertex values interpolate nothing: ring a gets ``values_a[i]``, ring b ``values_b[i]``.
    Zero-length pieces are dropped.
    """
    a = np.asarray(a_mm, dtype=np.float64).reshape(-1, 3)
    b = np.asarray(b_mm, dtype=np.float64).reshape(-1, 3)
    r = np.broadcast_to(np.asarray(radius_mm, dtype=np.float64), (len(a),))
    length = np.linalg.norm(b - a, axis=1)
    keep = length > 1e-9
    a, b, r, length = a[keep], b[keep], r[keep], length[keep]
    if len(a) == 0:
        raise VesselfieldError("no tube piece has a length")
    axis = (b - a) / length[:, None]
    e1, e2 = _ring_frames(axis)
    t = 2.0 * np.pi * np.arange(sides) / sides
    ring = (np.cos(t)[None, :, None] * e1[:, None, :] + np.sin(t)[None, :, None] * e2[:, None, :]) * r[:, None, None]
    verts = np.concatenate([a[:, None, :] + ring, b[:, None, :] + ring], axis=1)  # (M, 2·sides, 3)
    j = np.arange(sides)
    k = (j + 1) % sides
    quad = np.stack([np.stack([j, k, sides + k], 1), np.stack([j, sides + k, sides + j], 1)], 1).reshape(-1, 3)
    base = (np.arange(len(a)) * 2 * sides)[:, None, None]
    faces = (quad[None] + base).reshape(-1, 3)
    values = None
    if values_a is not None:
        va = np.asarray(values_a, dtype=np.float64).reshape(-1)[keep]
        vb = np.asarray(values_b if values_b is not None else values_a, dtype=np.float64).reshape(-1)[keep]
        values = np.concatenate([np.repeat(va[:, None], sides, 1), np.repeat(vb[:, None], sides, 1)], 1).reshape(-1)
    return verts.reshape(-1, 3), faces, values


def carm_glyphs(view, center_mm, scale: float, *, sides: int = 8):
    """A C-arm view drawn about ``center_mm`` shrunk by ``scale`` (angles exact): the source as a
    small octahedron, the detector's outline and its four corner rays as thin tubes, and the
    detector plane itself (both faces). Returns ``(vertices (V, 3), faces (F, 3))`` in LPS mm."""
    c = np.asarray(center_mm, dtype=np.float64)
    src = c + scale * (view.source_mm - c)
    det = c + scale * (view.detector_center_mm - c)
    h, w = view.detector_shape
    du, dv = view.pixel_spacing_mm
    half_u = 0.5 * scale * w * du * view.u
    half_v = 0.5 * scale * h * dv * view.v
    corners = np.array([det - half_u - half_v, det + half_u - half_v, det + half_u + half_v, det - half_u + half_v])
    size = float(np.linalg.norm(corners[0] - corners[2]))
    thin = 0.004 * size
    a = np.vstack([np.repeat(src[None], 4, 0), corners])
    b = np.vstack([corners, np.roll(corners, -1, axis=0)])
    tv, tf, _ = tube_mesh(a, b, thin, sides=sides)
    s = 0.03 * size
    octa = src + s * np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float)
    of = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
    plane_f = np.array([[0, 1, 2], [0, 2, 3], [0, 2, 1], [0, 3, 2]])
    verts = np.vstack([tv, octa, corners])
    faces = np.vstack([tf, of + len(tv), plane_f + len(tv) + len(octa)])
    return verts, faces


def _tree_of(tree):
    from vesselfield.tree import VesselTree

    if not isinstance(tree, VesselTree):
        raise VesselfieldError(f"centrelines must be a VesselTree (or an AnalyzedTree), got {type(tree).__name__}")
    return tree


def _robust_range(values: np.ndarray, lo_q: float, hi_q: float) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0, 1.0
    lo, hi = float(np.quantile(v, lo_q)), float(np.quantile(v, hi_q))
    if not hi > lo:
        hi = lo + max(abs(lo) * 1e-3, 1e-6)
    return lo, hi


@dataclass
class ViewerScene:
    """The objects of one 3D view, in LPS mm. Build it with the ``add_*`` methods.

    Attributes:
        meshes: :class:`ViewerMesh` list (drawn in order).
        volumes: :class:`ViewerVolume` list; the first is the image, the rest overlays.
        limits: display budgets (:class:`ViewerLimits`).
        notes: one-line facts shown under the view (simplifications, scales).
    """

    meshes: list = field(default_factory=list)
    volumes: list = field(default_factory=list)
    limits: ViewerLimits = field(default_factory=ViewerLimits)
    notes: list = field(default_factory=list)

    def is_empty(self) -> bool:
        """True when there is nothing to show."""
        return not self.meshes and not self.volumes

    def _unique(self, name: str) -> str:
        taken = {m.name for m in self.meshes} | {v.name for v in self.volumes}
        base, k = str(name), 2
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        return name

    def _display(self, mesh, max_faces: int, label: str) -> tuple[np.ndarray, np.ndarray]:
        from vesselfield.report.figures import simplify_for_display

        v, f = welded(*_faces_vertices(mesh))
        if len(f) > max_faces:
            n = len(f)
            v, f = simplify_for_display(v, f, max_faces)
            self.notes.append(f"{label}: {n} faces shown as {len(f)} (simplified for display; the mesh file keeps all)")
        return v, f

    def add_surface(self, mesh, *, name: str = "surface", label: str = "reconstructed surface",
                    rgba=SURFACE_RGBA, opacity: float = 1.0, reference=None) -> ViewerMesh:
        """A surface (``trimesh.Trimesh``-like, LPS mm); with ``reference`` (a surface), its vertices
        carry the signed distance to it in mm (:func:`surface_distance_mm`) as an error layer and the
        reference is added semi-transparent."""
        v, f = self._display(mesh, self.limits.max_faces, label)
        layer = None
        if reference is not None:
            d = surface_distance_mm(v, reference).astype(np.float32)
            # Symmetric, at the 90th percentile of |error|: the few far-off pieces saturate instead of
            # washing out the colours of the rest.
            bound = max(float(np.quantile(np.abs(d), 0.90)), 1e-3)
            layer = MeshLayer("error_mm", "signed distance to the reference surface (mm; + outside, − inside)",
                              d, "vf_error", (-bound, bound))
        item = ViewerMesh(self._unique(name), label, v.astype(np.float32), f, tuple(rgba), float(opacity),
                          True, layer)
        self.meshes.append(item)
        if reference is not None:
            # After the opaque surface: a translucent mesh drawn first would hide what lies behind it.
            self.add_reference(reference)
        return item

    def add_reference(self, mesh, *, name: str = "reference", label: str = "reference surface") -> ViewerMesh:
        """The reference (true) surface, drawn grey and semi-transparent."""
        if any(m.name == name for m in self.meshes):
            return next(m for m in self.meshes if m.name == name)
        v, f = self._display(mesh, self.limits.max_reference_faces, label)
        item = ViewerMesh(self._unique(name), label, v.astype(np.float32), f, REFERENCE_RGBA, 0.3, True)
        self.meshes.append(item)
        return item

    def add_centerlines(self, tree, *, name: str = "centerlines",
                        label: str = "centreline tree, coloured by radius") -> ViewerMesh:
        """The centreline tree (a :class:`~vesselfield.tree.VesselTree`, e.g. the analysis result) as
        thin tubes coloured by the vessel radius (mm). Tube thickness: a quarter of the median radius."""
        from vesselfield.tree import VesselTree

        tree = _tree_of(tree)
        # VesselTree's tubes (an AnalyzedTree's ``segments`` attribute is its branch list).
        a, b, ra, rb = VesselTree.segments(tree)
        thick = 0.25 * float(np.median(tree.radius_mm))
        v, f, values = tube_mesh(a, b, thick, sides=self.limits.tube_sides, values_a=ra, values_b=rb)
        lo, hi = _robust_range(tree.radius_mm, 0.0, 1.0)
        layer = MeshLayer("radius_mm", "vessel radius (mm)", values.astype(np.float32), "viridis", (lo, hi))
        item = ViewerMesh(self._unique(name), label, v.astype(np.float32), f, (255, 255, 255, 255), 1.0, True,
                          layer)
        self.meshes.append(item)
        return item

    def add_carm(self, geometry, around_mm=None) -> list[ViewerMesh]:
        """The views of a two-view :class:`~vesselfield.geometry.Geometry`: sources, detectors and corner
        rays, shrunk about the isocentre so that the source sits at 1.6 × the half-size of
        ``around_mm`` (the tree's (lo, hi) box; default the reconstruction volume). Angles and
        the cone are exact; the scale is named in the view's notes."""
        if around_mm is None:
            lo, hi = geometry.volume.bounds_mm
        else:
            lo, hi = (np.asarray(x, dtype=np.float64) for x in around_mm)
        half = 0.5 * float(np.linalg.norm(np.asarray(hi) - np.asarray(lo)))
        out = []
        for i, view in enumerate(geometry.views, start=1):
            center = np.asarray(view.isocenter_mm, dtype=np.float64)
            scale = 1.6 * half / float(view.source_to_isocenter_mm)
            v, f = carm_glyphs(view, center, scale)
            rgba = VIEW_RGBA[(i - 1) % len(VIEW_RGBA)]
            item = ViewerMesh(self._unique(f"view{i}"), f"view {i}: source, detector and rays "
                              f"(primary {view.primary_angle_deg:.1f}°, secondary {view.secondary_angle_deg:.1f}°)",
                              v.astype(np.float32), f, rgba, 0.9, True)
            self.meshes.append(item)
            out.append(item)
        if out:
            self.notes.append(f"C-arm views drawn {1.0 / scale:.3g}× smaller about the isocentre "
                              "(directions and cone angles exact)")
        return out

    def add_volume(self, array, grid, *, name: str = "image", label: str = "image", colormap: str = "gray",
                   range_=None, overlay: bool = False, opacity: float = 1.0) -> ViewerVolume:
        """A volume (X, Y, Z) on ``grid`` (a :class:`~vesselfield.grid.VolumeGrid`); the first added is
        the image, later ones overlays (``overlay=True``, e.g. a predicted mask: ``colormap="red"``)."""
        from vesselfield.grid import VolumeGrid

        if not isinstance(grid, VolumeGrid):
            raise VesselfieldError(f"a 3D view volume needs a VolumeGrid, got {type(grid).__name__}")
        arr = np.asarray(array)
        grid.check_array(arr, label)
        arr, grid, factor = downsampled(arr, grid, self.limits.max_voxels)
        if factor > 1:
            self.notes.append(f"{label}: shown at {factor}× coarser voxels ({'x'.join(map(str, arr.shape))})")
        if range_ is None:
            range_ = (0.5, 1.0) if overlay else _robust_range(arr[::2, ::2, ::2], 0.005, 0.995)
        item = ViewerVolume(self._unique(name), label, arr, grid, colormap, float(opacity),
                            (float(range_[0]), float(range_[1])), bool(overlay))
        self.volumes.append(item)
        return item


def downsampled(array: np.ndarray, grid, max_voxels: int):
    """``(array, grid, factor)``: ``array`` block-averaged by the smallest integer ``factor`` that
    brings it within ``max_voxels`` (1: unchanged); the grid keeps its world box (voxel centres
    move to the blocks' centres)."""
    from vesselfield.grid import VolumeGrid

    arr = np.asarray(array)
    factor = 1
    while int(np.prod([-(-s // factor) for s in arr.shape])) > max_voxels:
        factor += 1
    if factor == 1:
        return arr, grid, 1
    pad = [(0, (-s) % factor) for s in arr.shape]
    a = np.pad(arr.astype(np.float32), pad, mode="edge")
    sx, sy, sz = (s // factor for s in a.shape)
    a = a.reshape(sx, factor, sy, factor, sz, factor).mean(axis=(1, 3, 5))
    spacing = tuple(float(s) * factor for s in grid.spacing_mm)
    origin = tuple(float(o) + 0.5 * (factor - 1) * float(s) for o, s in zip(grid.origin_mm, grid.spacing_mm))
    return a, VolumeGrid(shape=a.shape, spacing_mm=spacing, origin_mm=origin), factor
