"""``vesselfield mesh``: marching cubes of a volume file into a mesh file; ``vesselfield mesh udf``: the UDF
mesher (:mod:`vesselfield.meshing.udf`) on an unsigned distance volume."""

from __future__ import annotations

from pathlib import Path

from vesselfield.errors import VesselfieldError
from vesselfield.io.run_folder import RunSummary
from vesselfield.pipelines.common import read_volume

__all__ = ["mesh_to_file", "mesh_udf_to_file"]


def mesh_to_file(volume_path, out_path, *, level=None, inside="auto", largest_component=False,
                 geometry_path=None, spacing_mm=None, origin_mm=None) -> RunSummary:
    """Marching cubes of a volume file into a mesh file (STL/PLY/OBJ/VTP, world mm).

    The summary's ``details`` are :func:`~vesselfield.meshing.mesh_summary`'s (vertices, faces,
    watertight, components, volume, area).
    """
    from vesselfield.io import save_mesh
    from vesselfield.io.meshes import MESH_SUFFIXES
    from vesselfield.meshing import format_mesh_summary, mesh_from_volume, mesh_summary

    out_path = Path(out_path)
    if out_path.suffix.lower() not in MESH_SUFFIXES:
        raise VesselfieldError(f"mesh output must end in {', '.join(MESH_SUFFIXES)}, got {out_path.name}")
    if inside not in ("auto", "below", "above"):
        raise VesselfieldError(f"--inside must be auto, below or above, got {inside!r}")
    volume, grid = read_volume(volume_path, geometry_path=geometry_path, spacing_mm=spacing_mm,
                               origin_mm=origin_mm)
    mesh = mesh_from_volume(volume, grid, level, inside=inside, largest_component=largest_component)
    save_mesh(out_path, mesh)
    info = mesh_summary(mesh)
    return RunSummary(verb="mesh", out_dir=out_path.parent, files={"mesh": out_path}, details={"mesh": info},
                      lines=[format_mesh_summary(info)])



def mesh_udf_to_file(volume_path, out_path, *, config=None, level_mm=0.0, points_path=None, geometry_path=None,
                     spacing_mm=None, origin_mm=None) -> RunSummary:
    """Mesh the level ``level_mm`` of an unsigned distance volume (mm) into a mesh file (world mm).

    :func:`~vesselfield.meshing.udf.mesh_udf` on :func:`~vesselfield.meshing.udf.volume_udf_function`
    of the volume: open surfaces stay open. ``points_path`` also writes the dense surface cloud
    (``.ply``, ``.npy``, ``.xyz``, ``.csv``). Both suffixes are checked before anything is computed;
    the files are written atomically, and nothing is written when an error is raised.

    The summary's ``details`` hold the mesh's :func:`~vesselfield.meshing.mesh_summary` and the
    mesher's counts and timings (``udf``).
    """
    from vesselfield.io import save_mesh
    from vesselfield.io.meshes import MESH_SUFFIXES
    from vesselfield.io.points import POINT_SUFFIXES, save_points
    from vesselfield.meshing import format_mesh_summary, mesh_summary
    from vesselfield.meshing.udf import UdfMeshConfig, mesh_udf, volume_udf_function

    out_path = Path(out_path)
    if out_path.suffix.lower() not in MESH_SUFFIXES:
        raise VesselfieldError(f"mesh output must end in {', '.join(MESH_SUFFIXES)}, got {out_path.name}")
    if points_path is not None and Path(points_path).suffix.lower() not in POINT_SUFFIXES:
        raise VesselfieldError(f"--points must end in {', '.join(POINT_SUFFIXES)}, got {Path(points_path).name}")
    config = UdfMeshConfig() if config is None else config
    volume, grid = read_volume(volume_path, geometry_path=geometry_path, spacing_mm=spacing_mm,
                               origin_mm=origin_mm, what="UDF volume")
    udf = volume_udf_function(volume, grid)
    result = mesh_udf(udf, udf.bounds_mm, config, level_mm=level_mm)
    save_mesh(out_path, result.mesh)
    files = {"mesh": out_path}
    if points_path is not None:
        save_points(points_path, result.points)
        files["points"] = Path(points_path)
    info = mesh_summary(result.mesh)
    d = result.details
    return RunSummary(verb="mesh udf", out_dir=out_path.parent, files=files, details={"mesh": info, "udf": d},
                      lines=[f"UDF mesher: {d['dense_points']} surface points, {d['boundary_edges']} boundary edges, "
                             f"{d['total_s']:.1f} s", format_mesh_summary(info)])
