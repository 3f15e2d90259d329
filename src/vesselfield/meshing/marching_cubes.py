"""Surfaces from volumes: marching cubes into world millimetres, clean-up and checks.

The mesh of a volume is the ``level`` iso-surface found by marching cubes (Lorensen & Cline,
SIGGRAPH 1987; scikit-image's implementation of Lewiner et al. 2003), placed in LPS mm with the
grid's (possibly anisotropic) spacing and origin. The volume is padded by one voxel of "outside"
so that shapes touching the grid's border still give closed surfaces, and faces are oriented
with outward normals (positive enclosed volume).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid
from vesselfield.validate import require_finite

Inside = Literal["auto", "below", "above"]


def infer_inside(volume: np.ndarray) -> Literal["below", "above"]:
    """Guess which side of the level is the vessel.

    Values all within [0, 1] read as occupancy/probability (vessel above the level); anything
    with negative values reads as a signed distance, negative inside (vessel below the level).
    """
    vmin = float(np.min(volume))
    vmax = float(np.max(volume))
    return "above" if vmin >= 0.0 and vmax <= 1.0 else "below"


def default_level(volume: np.ndarray) -> float:
    """0.5 for occupancy-like volumes, 0 for signed distances."""
    return 0.5 if infer_inside(volume) == "above" else 0.0


def mesh_from_volume(
    volume,
    grid: VolumeGrid,
    level: float | None = None,
    *,
    inside: Inside = "auto",
    largest_component: bool = False,
    step_size: int = 1,
):
    """Iso-surface of a volume as a ``trimesh.Trimesh`` in world mm (LPS).

    Args:
        volume: (X, Y, Z) array (NumPy or torch) on ``grid``: an SDF (mm, negative inside) or an
            occupancy/probability in [0, 1].
        grid: the volume's grid; vertices are ``origin_mm + index * spacing_mm``.
        level: iso-value; default 0 for an SDF and 0.5 for occupancy (see :func:`default_level`).
        inside: which side of ``level`` is the vessel: ``"below"`` (SDF), ``"above"``
            (occupancy) or ``"auto"`` (:func:`infer_inside`).
        largest_component: keep only the connected component with the most faces.
        step_size: marching-cubes step in voxels (>1 is coarser and faster).

    Returns:
        A mesh with outward-facing normals; closed unless the surface is degenerate.

    Raises:
        VesselfieldError: wrong shape, NaN/Inf values, or no surface at ``level``.
    """
    import trimesh
    from skimage.measure import marching_cubes

    if hasattr(volume, "detach"):
        volume = volume.detach().cpu().numpy()
    vol = np.asarray(volume, dtype=np.float32)
    grid.check_array(vol)
    require_finite(vol, "volume")
    side = infer_inside(vol) if inside == "auto" else inside
    if side not in ("below", "above"):
        raise VesselfieldError(f"inside must be auto, below or above, got {inside!r}")
    if level is None:
        level = 0.0 if side == "below" else 0.5
    level = float(level)
    # Work with "value > level is inside" so that padding and orientation have one form.
    field = vol - level if side == "above" else level - vol
    if not (field.max() > 0 and field.min() < 0):
        raise VesselfieldError(
            f"the volume has no surface at level {level:g} (values span {vol.min():g} to {vol.max():g})"
        )
    outside = -max(1.0, float(np.abs(field).max()))
    padded = np.pad(field, 1, mode="constant", constant_values=outside)
    verts, faces, _normals, _values = marching_cubes(
        padded, level=0.0, spacing=tuple(grid.spacing), step_size=step_size, allow_degenerate=False
    )
    verts = verts - grid.spacing  # undo the one-voxel pad
    verts = verts + grid.origin
    mesh = trimesh.Trimesh(vertices=verts, faces=faces, process=True)
    if largest_component:
        mesh = keep_largest_component(mesh)
    if mesh.is_volume and mesh.volume < 0:
        mesh.invert()
    elif not mesh.is_volume:
        trimesh.repair.fix_normals(mesh)
    return mesh


def keep_largest_component(mesh):
    """The connected component of ``mesh`` with the most faces (a copy)."""
    parts = mesh.split(only_watertight=False)
    if len(parts) <= 1:
        return mesh
    return max(parts, key=lambda m: len(m.faces))


def mesh_summary(mesh) -> dict:
    """Numbers a user checks before CFD meshing: counts, closure, components, volume, area."""
    components = mesh.split(only_watertight=False) if len(mesh.faces) else []
    return {
        "vertices": int(len(mesh.vertices)),
        "faces": int(len(mesh.faces)),
        "watertight": bool(mesh.is_watertight),
        "components": int(len(components)),
        "volume_mm3": float(mesh.volume) if mesh.is_watertight else float("nan"),
        "area_mm2": float(mesh.area),
    }


def format_mesh_summary(summary: dict) -> str:
    """One line of :func:`mesh_summary`: ``"V vertices, F faces, watertight=..., components=N"``."""
    return (f"{summary['vertices']} vertices, {summary['faces']} faces, watertight={summary['watertight']}, "
            f"components={summary['components']}")


def inside_at_border_fraction(sdf) -> float:
    """Fraction of a grid's border voxels where an SDF volume is negative (inside).

    A grid that covers a shape's points plus a margin never meets a closed surface through them
    at its border: inside voxels there mean the field did not close around the points (the inside
    "leaks" out of the domain, e.g. between the branches of a sparsely sampled vessel tree fitted
    without normals).
    """
    sdf = np.asarray(sdf)
    faces = [sdf[0], sdf[-1], sdf[:, 0], sdf[:, -1], sdf[:, :, 0], sdf[:, :, -1]]
    inside = sum(int(np.count_nonzero(f < 0)) for f in faces)
    return inside / float(sum(f.size for f in faces))


def cfd_check(mesh, sdf) -> tuple[dict, str | None]:
    """``(summary, warning)`` of the zero-level mesh of an SDF volume, before CFD meshing.

    ``summary``: :func:`mesh_summary` plus ``inside_at_grid_border`` (:func:`inside_at_border_fraction`).
    ``warning``: one line saying why the mesh is not ready for a CFD mesher (not watertight, more
    than one component, an inside that reaches the grid's border), or None when it is.
    """
    summary = mesh_summary(mesh)
    summary["inside_at_grid_border"] = inside_at_border_fraction(sdf)
    problems = []
    if not summary["watertight"]:
        problems.append("it is not watertight")
    if summary["components"] != 1:
        problems.append(f"it has {summary['components']} separate components")
    if summary["inside_at_grid_border"] > 0:
        problems.append(f"its inside reaches the edge of the grid ({100 * summary['inside_at_grid_border']:.1f} % "
                        "of the border voxels): the surface did not close around the points; fit with normals "
                        "or more points, or fit the vessel in pieces and blend them")
    return summary, (None if not problems else "the mesh is not CFD-ready: " + " and ".join(problems))
