"""The visual report of an X-ray reconstruction: PNG figures and one self-contained ``report.html``.

The figures follow what the SDF-CAR and NeCA papers show for a two-view coronary reconstruction:

- :func:`figure_views`: per view, the input (mask or line integrals, mm), the reconstruction's
  rendered projection (soft silhouette ``1 - exp(-k I)`` for masks) and their difference;
- :func:`figure_mips`: maximum-intensity projections (MIPs) of the occupancy along x, y and z,
  in world mm, and of the ground truth;
- :func:`figure_mesh`: a shaded 3D view of the surface mesh;
- :func:`figure_error_overlay`: the papers' error overlay (SDF-CAR Figures 2-3; NeCA Figure 4):
  green where prediction and truth overlap, red where only the prediction is, blue where the truth
  was missed;
- :func:`figure_losses`: the loss curves of ``log.csv``.

:func:`write_xray_report` writes them all next to ``report.html``, which embeds them as base64 data
URIs with inline CSS: one file, no external links, viewable offline. Every file is written
atomically.

Display conventions (LPS world, mm): a MIP along z is an axial view seen from the feet, x (+L) to
the right and y (+P) downwards (anterior on top); along y a coronal view, x (+L) to the right and
z (+S) upwards; along x a sagittal view, y (+P) to the right and z (+S) upwards. Panels span the
grid's box in mm with equal scales, so anisotropic voxels keep their true proportions. Detector
images are shown as stored, row 0 at the top, with axes in detector mm (u along columns, v along
rows, ``docs/geometry.md``).

Matplotlib is used without pyplot (``matplotlib.figure.Figure`` rendered by Agg), so nothing here
needs a display or changes the user's backend. Measured on the 2-core CPU (shared, load ~4): the
full report of the default geometry (two 512 x 512 views, a 128³ volume, ground truth, a 2000-row
log and a 100k-face mesh drawn simplified) takes 2.6-3.7 s, of which views ~0.9 s, MIPs ~0.5 s,
overlay ~0.25 s, mesh ~0.8 s (up to ~2 s at the 60k-face budget), losses ~0.15 s.
"""

from __future__ import annotations

import base64
import html
import math
import numbers
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid
from vesselfield.io.atomic import atomic_path, write_text_atomic
from vesselfield.validate import require_finite

__all__ = [
    "FIGURE_FILES",
    "MAX_MESH_FACES",
    "OVERLAY_COLORS",
    "figure_error_overlay",
    "figure_losses",
    "figure_mesh",
    "figure_mips",
    "figure_views",
    "simplify_for_display",
    "write_xray_report",
]

KINDS = ("line_integral", "mask")

MAX_MESH_FACES = 60_000
"""Meshes with more faces are simplified (vertex clustering) before :func:`figure_mesh` draws them."""

OVERLAY_COLORS: dict[str, tuple[float, float, float]] = {
    "overlap": (0.0, 1.0, 0.0),
    "predicted_only": (1.0, 0.0, 0.0),
    "missed": (0.0, 0.0, 1.0),
}
"""RGB of each class of :func:`figure_error_overlay`: green overlap (TP), red predicted only (FP),
blue missed (FN), as in the SDF-CAR and NeCA figures."""

_OVERLAY_LABELS = {
    "overlap": "overlap (true positive)",
    "predicted_only": "predicted only (false positive)",
    "missed": "missed (false negative)",
}

# (label, unit) of the LPS world axes: the sign says which way the coordinate grows.
_WORLD_AXIS_LABELS = ("x (mm, +L)", "y (mm, +P)", "z (mm, +S)")
_MIP_NAMES = {0: "sagittal MIP (along x)", 1: "coronal MIP (along y)", 2: "axial MIP (along z)"}

_DPI = 100
_MESH_COLOR = np.array([0.80, 0.27, 0.22])
# Extra rows a reconstruction adds to the metrics of METRIC_INFO: (description, unit).
_EXTRA_METRICS = {
    "seconds": ("wall time of the optimisation", "s"),
    "iterations": ("iterations completed", ""),
}

FIGURE_FILES = {
    "views": "figure_views.png",
    "mips": "figure_mips.png",
    "mesh": "figure_mesh.png",
    "error_overlay": "figure_error_overlay.png",
    "losses": "figure_losses.png",
}
"""File names of the figures :func:`write_xray_report` writes next to ``report.html`` (prefixed so
that they never overwrite input images such as ``view1.png``)."""


# ------------------------------------------------------------------------------------ helpers
def _figure(width_in: float, height_in: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), dpi=_DPI, layout="constrained")


def _save_png(fig, path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        # No "Software" text chunk: keeps the embedded images free of URLs.
        fig.savefig(tmp, format="png", dpi=_DPI, metadata={"Software": None})
    return path


def _image_list(images, what: str) -> list[np.ndarray]:
    if isinstance(images, np.ndarray) and images.ndim == 2:
        raise VesselfieldError(f"{what} must be a list of (H, W) images, one per view, got one array")
    try:
        out = [np.asarray(im.detach().cpu() if hasattr(im, "detach") else im) for im in images]
    except TypeError:
        raise VesselfieldError(f"{what} must be a list of (H, W) images, one per view") from None
    for i, im in enumerate(out, start=1):
        if im.ndim != 2:
            raise VesselfieldError(f"{what} {i} must be a 2D (H, W) image, got shape {im.shape}")
        if im.dtype.kind not in "biuf":
            raise VesselfieldError(f"{what} {i} must hold numbers, got dtype {im.dtype}")
        require_finite(im, f"{what} {i}")
    return out


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise VesselfieldError(f"unknown input kind {kind!r}: use line_integral or mask")


def _volume(array, grid: VolumeGrid, what: str) -> np.ndarray:
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    a = np.asarray(array)
    if a.dtype.kind not in "biuf":
        raise VesselfieldError(f"{what} must hold numbers, got dtype {a.dtype}")
    grid.check_array(a, what)
    require_finite(a, what)
    return a


def _check_grid(grid) -> VolumeGrid:
    if not isinstance(grid, VolumeGrid):
        raise VesselfieldError(f"grid must be a VolumeGrid, got {type(grid).__name__}")
    return grid


def _check_threshold(threshold) -> float:
    try:
        thr = float(threshold)
    except (TypeError, ValueError):
        raise VesselfieldError(f"threshold must be a number in (0, 1], got {threshold!r}") from None
    if not 0.0 < thr <= 1.0:
        raise VesselfieldError(f"threshold must be in (0, 1], got {threshold!r}")
    return thr


def _angle_text(view) -> str:
    a, b = view.primary_angle_deg, view.secondary_angle_deg
    return f"{'LAO' if a >= 0 else 'RAO'} {abs(a):g}°, {'CRA' if b >= 0 else 'CAU'} {abs(b):g}°"


def _mip_panels(volume: np.ndarray, grid: VolumeGrid):
    """Per projection axis (x, y, z): (axis, image (rows, cols), extent, origin, xlabel, ylabel).

    ``volume`` may carry a trailing channel axis (X, Y, Z, C); MIPs are taken per channel.
    """
    lo, hi = grid.bounds_mm
    panels = []
    for axis in range(3):
        a, b = [d for d in range(3) if d != axis]
        mip = volume.max(axis=axis)
        image = np.swapaxes(mip, 0, 1)  # rows along b, columns along a
        if axis == 2:  # axial, seen from the feet: anterior (small y) on top
            extent, origin = (lo[a], hi[a], hi[b], lo[b]), "upper"
        else:  # superior (large z) on top
            extent, origin = (lo[a], hi[a], lo[b], hi[b]), "lower"
        panels.append((axis, image, extent, origin, _WORLD_AXIS_LABELS[a], _WORLD_AXIS_LABELS[b]))
    return panels


# ------------------------------------------------------------------------------------ figures
def figure_views(path, targets, rendered, kind: str, *, views=None, k_per_mm: float | None = None) -> Path:
    """Inputs, rendered projections and their differences, one row per view.

    Args:
        path: PNG file to write (atomically).
        targets: per view an (H, W) image: a binary mask (``kind="mask"``, non-zero = vessel) or
            line integrals in mm (``kind="line_integral"``).
        rendered: per view the (H, W) line integrals (mm) of the reconstruction (what
            :func:`vesselfield.render.project_volume` gives), same shapes as ``targets``.
        kind: ``"mask"`` or ``"line_integral"``.
        views: optional :class:`~vesselfield.geometry.ConeBeamView` per view: axes in detector mm
            and the gantry angles in the row titles; shapes must match their ``detector_shape``.
        k_per_mm: attenuation of the soft silhouette for masks (default
            :data:`vesselfield.render.soft_distance.DEFAULT_K_PER_MM`, the reconstruction's default).

    For masks the rendered column is the soft silhouette ``1 - exp(-k I)`` (Beer-Lambert,
    :func:`~vesselfield.render.soft_distance.soft_silhouette`) and the difference is
    ``silhouette - mask`` with limits ±1; for line integrals target and rendered share one colour
    scale (mm) and the difference ``rendered - target`` (mm) has limits ±max|difference|. Red means
    the reconstruction projects more than the input, blue less.

    Returns:
        ``Path(path)``.
    """
    _check_kind(kind)
    targets = _image_list(targets, "target")
    rendered = _image_list(rendered, "rendered view")
    if len(targets) != len(rendered):
        raise VesselfieldError(f"{len(targets)} target views but {len(rendered)} rendered views")
    if not targets:
        raise VesselfieldError("no views to show")
    for i, (t, r) in enumerate(zip(targets, rendered), start=1):
        if t.shape != r.shape:
            raise VesselfieldError(f"view {i}: target has shape {t.shape} but the rendered view has {r.shape}")
    if views is not None:
        views = list(views)
        if len(views) != len(targets):
            raise VesselfieldError(f"{len(targets)} images but {len(views)} views in the geometry")
        for i, (t, view) in enumerate(zip(targets, views), start=1):
            if t.shape != tuple(view.detector_shape):
                raise VesselfieldError(f"view {i}: image has shape {t.shape} but the detector is "
                                       f"{tuple(view.detector_shape)}")

    if kind == "mask":
        import torch

        from vesselfield.render.soft_distance import DEFAULT_K_PER_MM, soft_silhouette

        k = DEFAULT_K_PER_MM if k_per_mm is None else k_per_mm
        shown = [soft_silhouette(torch.from_numpy(r.astype(np.float64)), k).numpy() for r in rendered]
        truth = [(t != 0).astype(np.float64) for t in targets]
    else:
        shown = [r.astype(np.float64) for r in rendered]
        truth = [t.astype(np.float64) for t in targets]

    from matplotlib.colors import PowerNorm

    n = len(targets)
    fig = _figure(12.0, 3.8 * n + 0.2)
    axes = fig.subplots(n, 3, squeeze=False)
    for i in range(n):
        h, w = truth[i].shape
        if views is not None:
            dr, dc = views[i].pixel_spacing_mm
            extent = (-0.5 * w * dc, 0.5 * w * dc, 0.5 * h * dr, -0.5 * h * dr)
            labels = ("detector u (mm)", "detector v (mm)")
            name = f"view {i + 1} ({_angle_text(views[i])})"
        else:
            extent, labels, name = None, ("column (pixel)", "row (pixel)"), f"view {i + 1}"
        name += "\n"
        diff = shown[i] - truth[i]
        if kind == "mask":
            scale = dict(cmap="gray", vmin=0.0, vmax=1.0)
            lim = 1.0
            titles = (f"{name}input mask", f"{name}rendered silhouette 1−exp(−kI)", f"{name}silhouette − mask")
            units = ("mask (0/1)", "silhouette", "difference")
        else:
            vmax = float(max(truth[i].max(), shown[i].max()))
            # A square-root scale keeps thin vessels (~1 mm chords) visible next to the ~10-20 mm
            # of a vessel seen end-on.
            scale = dict(cmap="magma", norm=PowerNorm(0.5, vmin=0.0, vmax=vmax if vmax > 0 else 1.0))
            lim = float(np.abs(diff).max())
            titles = (f"{name}input line integrals", f"{name}rendered line integrals", f"{name}rendered − input")
            units = ("mm", "mm", "mm")
        lim = lim if lim > 0 else 1e-6
        images = (truth[i], shown[i], diff)
        styles = (scale, scale, dict(cmap="RdBu_r", vmin=-lim, vmax=lim))
        for j in range(3):
            ax = axes[i, j]
            im = ax.imshow(images[j], extent=extent, origin="upper", **styles[j])
            ax.set_title(titles[j], fontsize=10)
            ax.set_xlabel(labels[0], fontsize=8)
            ax.set_ylabel(labels[1], fontsize=8)
            ax.tick_params(labelsize=7)
            bar = fig.colorbar(im, ax=ax, shrink=0.85)
            bar.set_label(units[j], fontsize=8)
            bar.ax.tick_params(labelsize=7)
    return _save_png(fig, path)


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
    grid = _check_grid(grid)
    rows = [("reconstruction", _volume(occupancy, grid, "occupancy"))]
    if gt is not None:
        rows.append(("ground truth", _volume(gt, grid, "ground truth")))
    fig = _figure(12.0, 3.9 * len(rows) + 0.2)
    axes = fig.subplots(len(rows), 3, squeeze=False)
    im = None
    for r, (name, volume) in enumerate(rows):
        for c, (axis, image, extent, origin, xlabel, ylabel) in enumerate(_mip_panels(volume, grid)):
            ax = axes[r, c]
            im = ax.imshow(np.clip(image.astype(np.float32), 0.0, 1.0), cmap="magma", vmin=0.0, vmax=1.0,
                           extent=extent, origin=origin, aspect="equal")
            ax.set_title(f"{name}: {_MIP_NAMES[axis]}", fontsize=10)
            ax.set_xlabel(xlabel, fontsize=8)
            ax.set_ylabel(ylabel, fontsize=8)
            ax.tick_params(labelsize=7)
    bar = fig.colorbar(im, ax=axes, shrink=0.6)
    bar.set_label("occupancy", fontsize=8)
    return _save_png(fig, path)


def _class_volume(pred: np.ndarray, gt: np.ndarray, threshold: float):
    p = pred >= threshold
    t = gt >= threshold
    classes = {"overlap": p & t, "predicted_only": p & ~t, "missed": ~p & t}
    counts = {name: int(np.count_nonzero(mask)) for name, mask in classes.items()}
    return classes, counts


def figure_error_overlay(path, pred, gt, grid: VolumeGrid, threshold: float = 0.5) -> tuple[Path, dict[str, int]]:
    """The error overlay of SDF-CAR (Figures 2-3) and NeCA: MIPs coloured by agreement with the truth.

    Both volumes are thresholded (``>= threshold``) into three voxel classes: overlap (green,
    true positive), predicted only (red, false positive) and missed (blue, false negative). Each
    MIP pixel takes the colour of the first class met along its projection line in the order
    green, red, blue (so a red rim around green is a too-thick prediction; an error hidden behind
    correctly reconstructed vessel along the line shows in the other two panels); white where
    neither volume has foreground. Panels as in :func:`figure_mips`.

    Args:
        path: PNG file to write (atomically).
        pred: (X, Y, Z) predicted occupancy on ``grid``.
        gt: (X, Y, Z) ground-truth occupancy or mask on ``grid``.
        grid: the volumes' :class:`VolumeGrid`.
        threshold: foreground is ``value >= threshold``, in (0, 1] (as in
            :func:`~vesselfield.metrics.evaluate_volumes`).

    Returns:
        ``(Path(path), counts)`` with voxel counts ``{"overlap", "predicted_only", "missed"}``.
    """
    grid = _check_grid(grid)
    thr = _check_threshold(threshold)
    classes, counts = _class_volume(_volume(pred, grid, "pred"), _volume(gt, grid, "ground truth"), thr)
    stacked = np.stack([classes[name] for name in ("overlap", "predicted_only", "missed")], axis=-1)

    from matplotlib.patches import Patch

    fig = _figure(12.0, 4.4)
    axes = fig.subplots(1, 3, squeeze=False)[0]
    colors = np.array([OVERLAY_COLORS[n] for n in ("overlap", "predicted_only", "missed")])
    for ax, (axis, image, extent, origin, xlabel, ylabel) in zip(axes, _mip_panels(stacked, grid)):
        rgb = np.ones(image.shape[:2] + (3,))
        # Paint in reverse priority so that green ends on top, then red, then blue.
        for c in (2, 1, 0):
            rgb[image[..., c]] = colors[c]
        ax.imshow(rgb, extent=extent, origin=origin, aspect="equal", interpolation="nearest")
        ax.set_title(_MIP_NAMES[axis], fontsize=10)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
    handles = [Patch(facecolor=OVERLAY_COLORS[n], edgecolor="black", linewidth=0.5,
                     label=f"{_OVERLAY_LABELS[n]}: {counts[n]} voxels") for n in OVERLAY_COLORS]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=9, frameon=False)
    return _save_png(fig, path), counts


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
        _, cluster = np.unique(keys, axis=0, return_inverse=True)
        cluster = cluster.ravel()
        n = int(cluster.max()) + 1
        counts = np.bincount(cluster, minlength=n)
        merged = np.stack([np.bincount(cluster, weights=v[:, d], minlength=n) for d in range(3)], axis=1)
        merged /= counts[:, None]
        g = cluster[f]
        g = g[(g[:, 0] != g[:, 1]) & (g[:, 1] != g[:, 2]) & (g[:, 0] != g[:, 2])]
        # Two faces on the same three clusters (either orientation) draw the same triangle.
        _, first = np.unique(np.sort(g, axis=1), axis=0, return_index=True)
        g = g[np.sort(first)]
        if len(g) <= max_faces:
            used, g = np.unique(g, return_inverse=True)
            return merged[used], g.reshape(-1, 3).astype(np.int64)
        cell *= 1.25


def figure_mesh(path, mesh, *, elevation_deg: float = 15.0, azimuth_deg: float = -75.0,
                max_faces: int = MAX_MESH_FACES) -> Path:
    """A shaded 3D view of a surface mesh (world mm, equal axis scales, orthographic camera).

    Faces are drawn with matplotlib's ``Poly3DCollection`` (painter's algorithm) and Lambert
    shading from their normals, ``0.3 + 0.7 |n · l|`` with the light at the camera (two-sided, so
    meshes with inconsistent orientation still read). Meshes above ``max_faces`` are simplified
    with :func:`simplify_for_display` first.

    Args:
        path: PNG file to write (atomically).
        mesh: a ``trimesh.Trimesh`` (or anything with ``vertices`` (V, 3) mm and ``faces`` (F, 3)).
        elevation_deg, azimuth_deg: camera angles of matplotlib's 3D axes; the default looks from
            the anterior-left, slightly from above (x, +L, to the right; z, +S, up).
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

    fig = _figure(6.4, 6.4)
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
    for set_label, label in zip((ax.set_xlabel, ax.set_ylabel, ax.set_zlabel), _WORLD_AXIS_LABELS):
        set_label(label, fontsize=8)
    ax.tick_params(labelsize=7)
    shown = "" if len(tri) == n_faces else f" (drawn simplified: {len(tri)})"
    ax.set_title(f"surface mesh: {n_faces} faces{shown}", fontsize=10)
    return _save_png(fig, path)


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

    fig = _figure(8.0, 4.2)
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
    return _save_png(fig, path)


# ------------------------------------------------------------------------------------ HTML
_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1250px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.7em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #444; margin-top: 0.3em; }
.note { color: #666; font-size: 0.9em; }
.warning { background: #fff4e5; border-left: 4px solid #e08a00; padding: 0.4em 0.8em; }
"""


def _format_value(value: Any) -> str:
    """Numbers as the metrics table prints them (4 decimals, scientific below 1e-3); None/NaN -> n/a."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        v = float(value)
        if math.isnan(v):
            return "n/a"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if v != 0 and abs(v) < 1e-3:
            return f"{v:.3e}"
        return f"{v:.4f}"
    return str(value)


def _format_info(value: Any) -> str:
    """Free-form summary values: numbers as short as they were given (6 significant digits)."""
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral)):
        v = float(value)
        return "n/a" if math.isnan(v) else f"{v:.6g}"
    return "n/a" if value is None else str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for row in rows:
        cells = []
        for j, cell in enumerate(row):
            cls = ' class="num"' if j in numeric else ""
            cells.append(f"<td{cls}>{html.escape(str(cell))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _figure_html(png: Path, alt: str, caption: str) -> str:
    data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _summary_rows(geometry, kind: str, occupancy: np.ndarray, threshold: float, metrics, info) -> list:
    grid = geometry.volume
    lo, hi = grid.bounds_mm
    rows = [
        ("grid", " × ".join(str(s) for s in grid.shape) + " voxels"),
        ("voxel spacing", " × ".join(f"{s:g}" for s in grid.spacing_mm) + " mm"),
        ("field of view", " × ".join(f"{e:g}" for e in np.round(hi - lo, 3)) + " mm, centred at ("
         + ", ".join(f"{c:g}" for c in np.round(grid.center_mm, 3)) + ") mm LPS"),
        ("views", str(len(geometry.views))),
    ]
    for i, view in enumerate(geometry.views, start=1):
        h, w = view.detector_shape
        dr, dc = view.pixel_spacing_mm
        rows.append((f"view {i}", f"{_angle_text(view)}; DSD {view.source_to_detector_mm:g} mm, "
                                  f"DSO {view.source_to_isocenter_mm:g} mm; {h} × {w} pixels at "
                                  f"{dr:g} × {dc:g} mm"))
    rows.append(("input", "binary masks" if kind == "mask" else "line integrals (mm)"))
    n_fg = int(np.count_nonzero(occupancy >= threshold))
    rows.append((f"reconstructed voxels (occupancy ≥ {threshold:g})",
                 f"{n_fg} ({n_fg * grid.voxel_volume_mm3:.1f} mm³)"))
    info = dict(info or {})
    for key in ("method", "iterations"):
        if key not in info and metrics and key in metrics:
            info[key] = metrics[key]
    rows += [(str(k), _format_info(v)) for k, v in info.items()]
    return rows


def _metric_rows(metrics: Mapping[str, Any]) -> list:
    from vesselfield.metrics.evaluate import METRIC_INFO

    rows = []
    for name, value in metrics.items():
        if name in METRIC_INFO:
            description, unit, higher = METRIC_INFO[name]
            better = "higher" if higher else "lower"
        else:
            (description, unit), better = _EXTRA_METRICS.get(name, ("", "")), ""
        rows.append((name, _format_value(value), "" if unit == "1" else unit, better, description))
    return rows


def _html_head(title: str) -> list:
    """The first lines of a self-contained report page: doctype, title, style, heading."""
    return [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]


def write_xray_report(
    out_dir,
    *,
    geometry,
    targets,
    kind: str,
    rendered,
    occupancy,
    mesh=None,
    gt_occupancy=None,
    metrics: Mapping[str, Any] | None = None,
    log_rows: Sequence[Mapping[str, Any]] | None = None,
    title: str = "vesselfield reconstruction",
    threshold: float = 0.5,
    info: Mapping[str, Any] | None = None,
    k_per_mm: float | None = None,
) -> Path:
    """Write the figures (``figure_*.png``, see :data:`FIGURE_FILES`) and ``report.html`` into ``out_dir``.

    Every input is checked before anything is written.

    Args:
        out_dir: output folder (created if needed).
        geometry: the :class:`~vesselfield.geometry.Geometry` of the reconstruction.
        targets: per view the (H, W) input image (mask or line integrals, mm), ``detector_shape``.
        kind: ``"mask"`` or ``"line_integral"``.
        rendered: per view the (H, W) line integrals (mm) of the reconstruction.
        occupancy: (X, Y, Z) reconstructed occupancy in [0, 1] on ``geometry.volume``.
        mesh: optional surface mesh (``trimesh.Trimesh``, world mm) for the 3D view.
        gt_occupancy: optional (X, Y, Z) ground truth on ``geometry.volume``; adds its MIPs and the
            error overlay.
        metrics: optional ``{name: value}`` (e.g. from :func:`~vesselfield.metrics.evaluate_volumes`
            plus ``seconds`` / ``iterations``); None or NaN values show as "n/a".
        log_rows: optional rows of ``log.csv``; adds the loss curves when non-empty.
        title: the report's title.
        threshold: foreground level of the occupancies (overlay, voxel count), in (0, 1].
        info: optional ``{label: value}`` shown in the summary table (method, preset, times, ...).
        k_per_mm: soft-silhouette attenuation for masks (see :func:`figure_views`).

    Returns:
        The path of ``out_dir/report.html``.
    """
    from vesselfield.geometry import Geometry

    if not isinstance(geometry, Geometry):
        raise VesselfieldError(f"geometry must be a vesselfield.geometry.Geometry, got {type(geometry).__name__}")
    _check_kind(kind)
    thr = _check_threshold(threshold)
    grid = geometry.volume
    targets = _image_list(targets, "target")
    rendered = _image_list(rendered, "rendered view")
    n_views = len(geometry.views)
    for what, images in (("target", targets), ("rendered", rendered)):
        if len(images) != n_views:
            raise VesselfieldError(f"{len(images)} {what} views given but the geometry has {n_views} views")
    for i, (t, r, view) in enumerate(zip(targets, rendered, geometry.views), start=1):
        for what, image in (("image", t), ("rendered view", r)):
            if image.shape != tuple(view.detector_shape):
                raise VesselfieldError(f"view {i}: {what} has shape {image.shape} but the detector is "
                                       f"{tuple(view.detector_shape)}")
    occupancy = _volume(occupancy, grid, "occupancy")
    if gt_occupancy is not None:
        gt_occupancy = _volume(gt_occupancy, grid, "ground truth")
    if metrics is not None and not isinstance(metrics, Mapping):
        raise VesselfieldError(f"metrics must be a dict of name -> value, got {type(metrics).__name__}")
    if info is not None and not isinstance(info, Mapping):
        raise VesselfieldError(f"info must be a dict of label -> value, got {type(info).__name__}")

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise VesselfieldError(f"report folder {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    figures = []  # (path, alt, caption)
    k_text = ""
    if kind == "mask":
        from vesselfield.render.soft_distance import DEFAULT_K_PER_MM

        k_text = f" (k = {DEFAULT_K_PER_MM if k_per_mm is None else k_per_mm:.3g} /mm)"
    figures.append((
        figure_views(out / FIGURE_FILES["views"], targets, rendered, kind, views=geometry.views, k_per_mm=k_per_mm),
        "input and rendered views",
        "Per view: the input, the reconstruction's rendered projection and their difference. "
        + ("Masks are compared with the soft silhouette 1 − exp(−k·I) of the rendered line integrals I"
           + k_text + "; the difference is silhouette − mask." if kind == "mask" else
           "Input and rendered line integrals share one colour scale in mm; the difference is rendered − input (mm).")
        + " Red: the reconstruction projects more than the input; blue: less. Axes in detector mm, row 0 at the top.",
    ))
    figures.append((
        figure_mips(out / FIGURE_FILES["mips"], occupancy, grid, gt_occupancy),
        "maximum-intensity projections",
        "Maximum-intensity projections of the reconstructed occupancy"
        + (" (top) and of the ground truth (bottom)" if gt_occupancy is not None else "")
        + " along x (sagittal), y (coronal) and z (axial, seen from the feet), in LPS world mm with equal scales.",
    ))
    overlay_counts = None
    if gt_occupancy is not None:
        path, overlay_counts = figure_error_overlay(out / FIGURE_FILES["error_overlay"], occupancy, gt_occupancy,
                                                    grid, thr)
        figures.append((
            path, "error overlay",
            f"Error overlay (as SDF-CAR Figures 2–3) at occupancy ≥ {thr:g}: green where reconstruction and truth "
            f"overlap ({overlay_counts['overlap']} voxels), red where only the reconstruction has vessel "
            f"({overlay_counts['predicted_only']}), blue where the truth was missed ({overlay_counts['missed']}). "
            "A pixel shows the first class along its projection line in the order green, red, blue.",
        ))
    if mesh is not None:
        figures.append((figure_mesh(out / FIGURE_FILES["mesh"], mesh), "surface mesh",
                        "The reconstructed surface (world mm, equal scales, Lambert shading, light at the camera)."))
    if log_rows:
        figures.append((figure_losses(out / FIGURE_FILES["losses"], log_rows), "loss curves",
                        "Loss terms of log.csv against the iteration (log scale; non-positive values left out)."))

    parts = [
        *_html_head(title),
        "<h2>Summary</h2>",
        _table(("item", "value"), _summary_rows(geometry, kind, occupancy, thr, metrics, info)),
        "<h2>Metrics</h2>",
    ]
    if metrics:
        parts.append(_table(("metric", "value", "unit", "better", "description"), _metric_rows(metrics), numeric=(1,)))
    else:
        parts.append('<p class="note">No metrics (no ground truth was given).</p>')
    for path, alt, caption in figures:
        parts.append(f"<h2>{html.escape(alt[0].upper() + alt[1:])}</h2>")
        parts.append(_figure_html(path, alt, caption))
    parts.append('<p class="note">Written by vesselfield.</p></body></html>')
    report = out / "report.html"
    write_text_atomic(report, "\n".join(parts) + "\n")
    return report
