"""Reading and writing real data in the one world frame (LPS, mm); see docs/data.md.

- volumes: :func:`load_volume` / :func:`save_volume` (NIfTI, MetaImage, NRRD, NPY + grid)
- meshes: :func:`load_mesh` / :func:`save_mesh` (STL, PLY, OBJ, VTP) with an explicit frame
- VTK XML PolyData: :func:`read_vtp` / :func:`write_vtp`, centrelines :func:`load_centerline_vtp`
- trees: :func:`load_swc` / :func:`save_swc`
- point clouds: :func:`load_points` / :func:`save_points`
- torch files (checkpoints, ``model.pt``): :func:`save_tensors` / :func:`load_tensors`, tensors and
  plain values only, read with ``weights_only=True``
- the bundled sample data: :func:`sample_path`

Importing this package is light: nibabel, SimpleITK and trimesh load inside the functions
that need them.
"""

from __future__ import annotations

from pathlib import Path

from vesselfield.errors import VesselfieldError
from vesselfield.io.meshes import load_mesh, save_mesh
from vesselfield.io.points import load_points, save_points, to_lps_mm
from vesselfield.io.swc import load_swc, save_swc
from vesselfield.io.torch_files import load_tensors, save_tensors
from vesselfield.io.volumes import load_volume, save_volume
from vesselfield.io.vtp import PolyData, load_centerline_vtp, read_vtp, write_vtp


def sample_path(*parts: str) -> Path:
    """Path of the bundled sample data: ``sample_path("vmtk_aorta", "aorta.mha")``.

    The samples live in ``data/samples`` of the source checkout (they are not installed with a
    wheel); the folder is found by walking up from this file. Raises VesselfieldError when the
    folder, or the file asked for, is absent.
    """
    for parent in Path(__file__).resolve().parents:
        root = parent / "data" / "samples"
        if root.is_dir():
            path = root.joinpath(*parts)
            if not path.exists():
                raise VesselfieldError(f"sample data {'/'.join(parts)} is not in {root}")
            return path
    raise VesselfieldError(
        "the sample data folder data/samples was not found above the vesselfield package: "
        "sample data ship with the source repository, not with an installed wheel"
    )


__all__ = [
    "PolyData",
    "load_centerline_vtp",
    "load_mesh",
    "load_points",
    "load_swc",
    "load_tensors",
    "load_volume",
    "read_vtp",
    "sample_path",
    "save_mesh",
    "save_points",
    "save_swc",
    "save_tensors",
    "save_volume",
    "to_lps_mm",
    "write_vtp",
]
