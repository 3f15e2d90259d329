"""Surface meshes in and out (STL, PLY, OBJ via trimesh; VTP via :mod:`vesselfield.io.vtp`).

Mesh files carry no frame: VTK-based tools and 3D Slicer commonly write RAS, ITK-based tools
LPS. Readers therefore take the file's ``frame`` explicitly and return vertices in LPS mm
(``"RAS"`` negates x and y); ``scale_to_mm`` converts other units (10 for cm).
Vertex order is kept as stored (``process=False``). STL stores every triangle's corners
separately, so identical corners are merged into one vertex, in order of first appearance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.io.atomic import atomic_path
from vesselfield.io.points import check_frame, from_lps_mm, to_lps_mm

MESH_SUFFIXES = (".stl", ".ply", ".obj", ".vtp")


def _mesh_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise VesselfieldError(f"unknown mesh file type {path.name!r}: use one of {', '.join(MESH_SUFFIXES)}")
    return suffix


def _merge_identical(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge bit-identical vertices, keeping the order in which they first appear."""
    _, first, inverse = np.unique(vertices, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    keep = np.sort(first)
    new_id = np.empty(len(first), dtype=np.int64)
    new_id[np.argsort(first)] = np.arange(len(first))
    # inverse maps to sorted-unique ids; first[u] gives that id's first occurrence.
    return vertices[keep], new_id[inverse][faces]


def load_mesh(path, *, frame: str = "LPS", scale_to_mm: float = 1.0):
    """Read a triangle surface as a ``trimesh.Trimesh`` with vertices in LPS mm.

    Args:
        path: ``.stl``, ``.ply``, ``.obj`` or ``.vtp`` (polygons are fan-triangulated).
        frame: the file's frame, ``"LPS"`` or ``"RAS"``.
        scale_to_mm: millimetres per file unit.

    Files without faces (point clouds, centrelines) raise :class:`VesselfieldError`.
    """
    import trimesh

    path = Path(path)
    suffix = _mesh_suffix(path)
    check_frame(frame)
    if not path.is_file():
        raise VesselfieldError(f"mesh file {path} does not exist")
    if suffix == ".vtp":
        from vesselfield.io.vtp import read_vtp

        pd = read_vtp(path)
        vertices, faces = pd.points, pd.triangles()
    else:
        try:
            loaded = trimesh.load(str(path), file_type=suffix[1:], process=False, force="mesh")
        except Exception as exc:  # trimesh raises many types for a bad file
            raise VesselfieldError(f"cannot read mesh {path}: {exc}") from None
        vertices = np.asarray(getattr(loaded, "vertices", np.zeros((0, 3))), dtype=np.float64)
        faces = np.asarray(getattr(loaded, "faces", np.zeros((0, 3))), dtype=np.int64)
        if suffix == ".stl" and len(faces):
            vertices, faces = _merge_identical(vertices, faces)
    if len(faces) == 0:
        raise VesselfieldError(f"mesh file {path} has no faces: it is not a surface")
    return trimesh.Trimesh(vertices=to_lps_mm(vertices, frame, scale_to_mm), faces=faces, process=False)


def save_mesh(path, mesh, *, frame: str = "LPS") -> None:
    """Write a triangle mesh (vertices in LPS mm) atomically as STL, PLY, OBJ or VTP.

    ``frame="RAS"`` negates x and y on the way out, for tools that expect RAS.
    STL stores float32 corners; PLY (binary) and VTP store float64; OBJ 17 significant digits.
    """
    import trimesh

    path = Path(path)
    suffix = _mesh_suffix(path)
    vertices = from_lps_mm(np.asarray(mesh.vertices, dtype=np.float64), frame)
    faces = np.asarray(mesh.faces, dtype=np.int64).reshape(-1, 3)
    if len(faces) == 0:
        raise VesselfieldError(f"mesh to write to {path} has no faces")
    if suffix == ".vtp":
        from vesselfield.io.vtp import PolyData, write_vtp

        write_vtp(path, PolyData(points=vertices, polys=faces))
        return
    out = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
    if suffix == ".obj":
        data = trimesh.exchange.obj.export_obj(out, include_normals=False, include_texture=False, digits=17)
    else:
        data = out.export(file_type=suffix[1:])
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data.encode() if isinstance(data, str) else data)
