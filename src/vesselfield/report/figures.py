"""Figure helpers every method's report draws with: figures without pyplot, world-mm planes, MIPs, mesh, losses.

- :func:`new_figure` / :func:`save_png`: a matplotlib ``Figure`` rendered by Agg (no pyplot, so
  nothing needs a display or changes the user's backend) and its PNG, written atomically without
  matplotlib's "Software" text chunk (which holds a URL: the pages embed the PNGs and link nowhere);
  the returned :class:`PngFile` carries the bytes, so a page embeds them without reading the file;
- :func:`label_axes`, :func:`label_world_axes_3d`: the one font size of titles, labels and ticks;
- :func:`draw_world_plane`: an image sampled on an axis-aligned plane, in world mm, with the
  display conventions below; :func:`mip_panels` and :func:`figure_mips` use it for maximum-intensity
  projections (MIPs) of a volume;
- :func:`figure_mesh` (and :func:`simplify_for_display`): a shaded 3D view of a surface mesh;
- :func:`figure_losses`: the loss curves of a training log.

Display conventions (LPS world, mm), shared by every report: a plane normal to z is an axial view
seen from the feet, x (+L) to the right and y (+P) downwards (anterior on top); normal to y a
coronal view, x (+L) to the right and z (+S) upwards; normal to x a sagittal view, y (+P) to the
right and z (+S) upwards. Panels span their box in mm with equal scales, so anisotropic voxels
keep their true proportions.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid
from vesselfield.io.atomic import write_bytes_atomic
from vesselfield.validate import require_finite

__all__ = [
    "DPI",
    "MAX_MESH_FACES",
    "MESH_AZIMUTH_DEG",
    "MESH_ELEVATION_DEG",
    "PLANE_NAMES",
    "PngFile",
    "WORLD_AXIS_LABELS",
    "WorldPlane",
    "draw_world_plane",
    "figure_losses",
    "figure_mesh",
    "figure_mips",
    "in_plane_axes",
    "label_axes",
    "label_world_axes_3d",
    "mip_panels",
    "new_figure",
    "save_png",
    "simplify_for_display",
    "volume_on_grid",
]

DPI = 100
"""Pixels per inch of every figure: a 12-inch-wide figure is 1200 pixels wide."""

WORLD_AXIS_LABELS = ("x (mm, +L)", "y (mm, +P)", "z (mm, +S)")
"""Axis labels of the LPS world axes: the sign says which way the coordinate grows."""

PLANE_NAMES = {0: "sagittal", 1: "coronal", 2: "axial"}
"""Name of the anatomical plane normal to each world axis."""

MAX_MESH_FACES = 60_000
"""Meshes with more faces are simplified (vertex clustering) before :func:`figure_mesh` draws them."""

MESH_ELEVATION_DEG, MESH_AZIMUTH_DEG = 15.0, -75.0
"""The default 3D camera (matplotlib's angles): from the anterior-left, slightly from above, x
(+L) to the right and z (+S) up."""

_MESH_COLOR = np.array([0.80, 0.27, 0.22])


# ------------------------------------------------------------------------------------ figures
def new_figure(width_in: float, height_in: float):
    """A ``matplotlib.figure.Figure`` of the given size in inches (:data:`DPI`), constrained layout."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")


class PngFile(type(Path())):
    """The path of a PNG that was just written, carrying the bytes written (``data``).

    A page that embeds the figure takes ``data`` instead of reading the file back
    (:func:`vesselfield.report.html.embedded_figure`). It is a ``Path`` in every other respect
    (equal to ``Path(path)``); paths derived from it (``.parent``, ``/ name``) carry no bytes
    (``data`` None), nor does a copy that went through pickle.
    """

    data: bytes | None = None
    """The PNG file's bytes, or None when they are not known."""


def save_png(fig, path) -> PngFile:
    """Write ``fig`` as a PNG to ``path`` atomically, without the "Software" text chunk.

    The figure is rendered once, to bytes (:data:`DPI`); returns ``path`` as a :class:`PngFile`
    whose ``data`` holds those bytes, so that a report embeds them without reading the file.
    """
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    saved = PngFile(path)
    saved.data = buffer.getvalue()
    write_bytes_atomic(saved, saved.data)
    return saved


def label_axes(ax, title: str | None = None, xlabel: str | None = None, ylabel: str | None = None) -> None:
    """Title (10 pt), axis labels (8 pt) and tick labels (7 pt) of a 2D panel; None leaves one out."""
    if title is not None:
        ax.set_title(title, fontsize=10)
    if xlabel is not None:
        ax.set_xlabel(xlabel, fontsize=8)
    if ylabel is not None:
        ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)


def label_world_axes_3d(ax) -> None:
    """Label the x, y, z axes of a 3D panel with :data:`WORLD_AXIS_LABELS` (8 pt, ticks 7 pt)."""
    for set_label, text in zip((ax.set_xlabel, ax.set_ylabel, ax.set_zlabel), WORLD_AXIS_LABELS):
        set_label(text, fontsize=8)
    ax.tick_params(labelsize=7)


# ------------------------------------------------------------------------------------ planes
def in_plane_axes(axis: int) -> tuple[int, int]:
    """The two world axes spanning the plane normal to ``axis``, lower-numbered first (u, v)."""
    if axis not in (0, 1, 2):
        raise VesselfieldError(f"a world axis is 0, 1 or 2, got {axis!r}")
    a, b = [d for d in range(3) if d != axis]
    return a, b


def draw_world_plane(ax, image, axis: int, u_range_mm, v_range_mm, **imshow_kwargs):
    """Show an image sampled on the plane normal to world ``axis``, in world mm, LPS conventions.

    Args:
        ax: a 2D matplotlib axes.
        image: (V, U) or (V, U, C) samples; row i lies at the i-th v, column j at the j-th u
            (u, v: :func:`in_plane_axes`), both increasing.
        axis: the world axis normal to the plane (0 sagittal, 1 coronal, 2 axial).
        u_range_mm, v_range_mm: ``(low, high)`` outer edges in mm of the samples along u and v.
        imshow_kwargs: passed on (``cmap``, ``vmin``, ``norm``, ``interpolation``, ...).

    Equal scales; the axial plane is seen from the feet (+P downwards), the other two with +S up.
    World-mm coordinates can be drawn on top (contours, points). Axes are labelled with
    :data:`WORLD_AXIS_LABELS`.

    Returns:
        The ``AxesImage`` (for a colour bar).
    """
    a, b = in_plane_axes(axis)
    (u0, u1), (v0, v1) = u_range_mm, v_range_mm
    shown = ax.imshow(image, origin="lower", extent=(u0, u1, v0, v1), aspect="equal", **imshow_kwargs)
    if axis == 2:  # axial, seen from the feet: anterior (small y) on top
        ax.invert_yaxis()
    label_axes(ax, xlabel=WORLD_AXIS_LABELS[a], ylabel=WORLD_AXIS_LABELS[b])
    return shown


class WorldPlane(NamedTuple):
    """One projection of a volume: what :func:`draw_world_plane` takes."""

    axis: int
    """World axis projected along (normal to the panel)."""
    image: np.ndarray
    """(V, U) or (V, U, C) projected values, rows along v, columns along u."""
    u_range_mm: tuple[float, float]
    """Outer edges of the grid's box along u, mm."""
    v_range_mm: tuple[float, float]
    """Outer edges of the grid's box along v, mm."""

    @property
    def mip_name(self) -> str:
        return f"{PLANE_NAMES[self.axis]} MIP (along {'xyz'[self.axis]})"


def mip_panels(volume: np.ndarray, grid: VolumeGrid) -> list[WorldPlane]:
    """Maximum-intensity projections of ``volume`` along x, y and z over ``grid``'s box.

    ``volume`` is (X, Y, Z) or (X, Y, Z, C) (MIPs per channel; booleans give "any along the line").
    """
    lo, hi = grid.bounds_mm
    panels = []
    for axis in range(3):
        a, b = in_plane_axes(axis)
        image = np.swapaxes(volume.max(axis=axis), 0, 1)  # rows along b, columns along a
        panels.append(WorldPlane(axis, image, (float(lo[a]), float(hi[a])), (float(lo[b]), float(hi[b]))))
    return panels


def volume_on_grid(array, grid: VolumeGrid, what: str) -> np.ndarray:
    """``array`` (numpy or torch) as a numeric, finite numpy array of ``grid``'s shape, else VesselfieldError."""
    if not isinstance(grid, VolumeGrid):
        raise VesselfieldError(f"grid must be a VolumeGrid, got {type(grid).__name__}")
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    a = np.asarray(array)
    if a.dtype.kind not in "biuf":
        raise VesselfieldError(f"{what} must hold numbers, got dtype {a.dtype}")
    grid.check_array(a, what)
    require_finite(a, what)
    return a


def figure_mips(path, occupancy, grid: VolumeGrid, gt=None) -> Path:
    """Maximum-intensity projections of the reconstruction (top row) and the ground truth (bottom).

    Args:
        path: PNG file to write (atomically).
        occupancy: (X, Y, Z) occupancy in [0, 1] on ``grid`` (values outside are clipped for display).
        grid: the volume's :class:`VolumeGrid`; axes are world mm over its box (voxel edges),
            equal scales (see the module docstring for the orientation of each panel).
        gt: optional (X, Y, Z) ground-truth occupancy or mask on ``grid``.

    Colour map ``magma`` from 0 (black) to 1 (pale yellow).

    Returns:
        ``Path(path)``.
    """
    rows = [("reconstruction", volume_on_grid(occupancy, grid, "occupancy"))]
    if gt is not None:
        rows.append(("ground truth", volume_on_grid(gt, grid, "ground truth")))
    fig = new_figure(12.0, 3.9 * len(rows) + 0.2)
    axes = fig.subplots(len(rows), 3, squeeze=False)
    im = None
    for r, (name, volume) in enumerate(rows):
        for c, panel in enumerate(mip_panels(volume, grid)):
            im = draw_world_plane(axes[r, c], np.clip(panel.image.astype(np.float32), 0.0, 1.0), panel.axis,
                                  panel.u_range_mm, panel.v_range_mm, cmap="magma", vmin=0.0, vmax=1.0)
            label_axes(axes[r, c], f"{name}: {panel.mip_name}")
    bar = fig.colorbar(im, ax=axes, shrink=0.6)
    bar.set_label("occupancy", fontsize=8)
    return save_png(fig, path)


# ------------------------------------------------------------------------------------ mesh
def simplify_for_display(vertices, faces, max_faces: int = MAX_MESH_FACES) -> tuple[np.ndarray, np.ndarray]:
    """A coarser copy of a triangle mesh with at most ``max_faces`` faces, for drawing only.

    Vertex clustering (Rossignac & Borrel 1993): vertices are merged per cell of a cubic lattice
    (the cell grows by 25 % until the face budget holds) at their mean position; faces that
    collapse or repeat are dropped. Orientation of the surviving faces is kept. Meshes already
    within the budget are returned unchanged.

    Args:
        vertices: (V, 3) positions, mm.
        faces: (F, 3) vertex indices.
        max_faces: face budget (>= 1).

    Returns:
        ``(vertices (V', 3) float64, faces (F', 3) int64)`` with ``F' <= max_faces``.
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
        raise VesselfieldError(f"a mesh needs (V, 3) vertices and (F, 3) faces, got {v.shape} and {f.shape}")
    if int(max_faces) < 1:
        raise VesselfieldError(f"max_faces must be at least 1, got {max_faces}")
    if len(f) <= max_faces:
        return v, f
    lo = v.min(axis=0)
    tri = v[f]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum()
    # A surface of area A cut by cells of size h keeps roughly 2 A / h² triangles.
    cell = max(math.sqrt(2.0 * area / max_faces), 1e-9 * float(np.ptp(v, axis=0).max() or 1.0))
    while True:
        keys = np.floor((v - lo) / cell).astype(np.int64)
        # One integer per cell (row-major over the cells' box): a 1-D unique is far faster than rows.
        dims = keys.max(axis=0) + 1
        _, cluster = np.unique((keys[:, 0] * dims[1] + keys[:, 1]) * dims[2] + keys[:, 2], return_inverse=True)
        cluster = cluster.ravel()
        n = int(cluster.max()) + 1
        counts = np.bincount(cluster, minlength=n)
        merged = np.stack([np.bincount(cluster, weights=v[:, d], minlength=n) for d in range(3)], axis=1)
        merged /= counts[:, None]
        g = cluster[f]
        g = g[(g[:, 0] != g[:, 1]) & (g[:, 1] != g[:, 2]) & (g[:, 0] != g[:, 2])]
        # Two faces on the same three clusters (either orientation) draw the same triangle; one
        # integer per sorted triple (n³ < 2^63 for n < 2M clusters, else rows).
        s = np.sort(g, axis=1)
        if n < 2_000_000:
            _, first = np.unique((s[:, 0] * n + s[:, 1]) * n + s[:, 2], return_index=True)
        else:
            _, first = np.unique(s, axis=0, return_index=True)
        g = g[np.sort(first)]
        if len(g) <= max_faces:
            used, g = np.unique(g, return_inverse=True)
            return merged[used], g.reshape(-1, 3).astype(np.int64)
        cell *= 1.25


def figure_mesh(path, mesh, *, elevation_deg: float = MESH_ELEVATION_DEG, azimuth_deg: float = MESH_AZIMUTH_DEG,
                max_faces: int = MAX_MESH_FACES) -> Path:
    """A shaded 3D view of a surface mesh (world mm, equal axis scales, orthographic camera).

    Faces are drawn with matplotlib's ``Poly3DCollection`` (painter's algorithm) and Lambert
    shading from their normals, ``0.3 + 0.7 |n · l|`` with the light at the camera (two-sided, so
    meshes with inconsistent orientation still read). Meshes above ``max_faces`` are simplified
    with :func:`simplify_for_display` first.

    Args:
        path: PNG file to write (atomically).
        mesh: a ``trimesh.Trimesh`` (or anything with ``vertices`` (V, 3) mm and ``faces`` (F, 3)).
        elevation_deg, azimuth_deg: camera angles of matplotlib's 3D axes (default
            :data:`MESH_ELEVATION_DEG`, :data:`MESH_AZIMUTH_DEG`).
        max_faces: face budget for drawing.

    Returns:
        ``Path(path)``.
    """
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    if not (hasattr(mesh, "vertices") and hasattr(mesh, "faces")):
        raise VesselfieldError(f"mesh must have vertices and faces (e.g. a trimesh.Trimesh), got {type(mesh).__name__}")
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces)
    if len(faces) == 0:
        raise VesselfieldError("the mesh has no faces")
    require_finite(vertices, "mesh vertices")
    n_faces = len(faces)
    vertices, faces = simplify_for_display(vertices, faces, max_faces)
    tri = vertices[faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(normals, axis=1)
    keep = length > 0
    tri, normals = tri[keep], normals[keep] / length[keep, None]
    el, az = math.radians(elevation_deg), math.radians(azimuth_deg)
    eye = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    shade = 0.3 + 0.7 * np.abs(normals @ eye)
    rgba = np.concatenate([shade[:, None] * _MESH_COLOR, np.ones((len(shade), 1))], axis=1)

    fig = new_figure(6.4, 6.4)
    ax = fig.add_subplot(projection="3d", proj_type="ortho")
    # Edges in the face colour close the hairline seams that antialiasing leaves between faces.
    ax.add_collection3d(Poly3DCollection(tri, facecolors=rgba, edgecolors=rgba, linewidths=0.3))
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    centre, half = 0.5 * (lo + hi), 0.5 * float(max((hi - lo).max(), 1e-6))
    ax.set_xlim(centre[0] - half, centre[0] + half)
    ax.set_ylim(centre[1] - half, centre[1] + half)
    ax.set_zlim(centre[2] - half, centre[2] + half)
    ax.set_box_aspect((1.0, 1.0, 1.0), zoom=1.1)
    ax.view_init(elev=elevation_deg, azim=azimuth_deg)
    label_world_axes_3d(ax)
    shown = "" if len(tri) == n_faces else f" (drawn simplified: {len(tri)})"
    ax.set_title(f"surface mesh: {n_faces} faces{shown}", fontsize=10)
    return save_png(fig, path)


# ------------------------------------------------------------------------------------ losses
def _float(value: Any, what: str) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise VesselfieldError(f"{what} is not a number: {value!r}") from None


def figure_losses(path, log_rows: Sequence[Mapping[str, Any]]) -> Path:
    """Loss curves: every column whose name starts with ``loss`` against the iteration, log-scale y.

    Args:
        path: PNG file to write (atomically).
        log_rows: rows of ``log.csv`` as dicts (``iteration``, ``time_s``, ``loss``, ``loss_occ``,
            ``loss_geo``, ...); values float or numeric strings, empty = missing. Rows without
            ``iteration`` are numbered from 0. Values that are missing, non-finite or <= 0 cannot
            be drawn on a log scale and are left out.

    Returns:
        ``Path(path)``.
    """
    rows = list(log_rows or [])
    if not rows:
        raise VesselfieldError("the log is empty: no loss curves to draw")
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise VesselfieldError(f"log row {i} must be a dict of column -> value, got {type(row).__name__}")
    columns = []
    for row in rows:
        columns += [k for k in row if str(k).startswith("loss") and k not in columns]
    if not columns:
        raise VesselfieldError("the log has no loss* column")
    iteration = np.array([_float(row.get("iteration", i), f"log row {i} iteration") for i, row in enumerate(rows)])

    fig = new_figure(8.0, 4.2)
    ax = fig.add_subplot()
    drawn = 0
    for column in columns:
        y = np.array([_float(row.get(column), f"log row {i} {column}") for i, row in enumerate(rows)])
        ok = np.isfinite(y) & (y > 0) & np.isfinite(iteration)
        if ok.any():
            ax.plot(iteration[ok], y[ok], linewidth=2.0, label=column)
            drawn += 1
    if drawn:
        ax.set_yscale("log")
        ax.legend(fontsize=9)
    else:
        ax.text(0.5, 0.5, "no positive loss values to draw", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.grid(True, which="both", alpha=0.3)
    return save_png(fig, path)
