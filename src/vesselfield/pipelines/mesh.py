"""``vesselfield mesh``: marching cubes of a volume file into a mesh file."""

from __future__ import annotations

from pathlib import Path

from vesselfield.errors import VesselfieldError
from vesselfield.io.run_folder import RunSummary
from vesselfield.pipelines.common import read_volume

__all__ = ["mesh_to_file"]


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

