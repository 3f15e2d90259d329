"""``vesselfield phantom coronary|swc|aaa``: synthetic vessels with exact ground truth, as files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid
from vesselfield.io.run_folder import RunSummary

__all__ = ["AAA_VOXEL_MM", "SWC_VOXEL_MM", "write_phantom"]

#: Default voxel size (mm) of an SWC tree's grid.
SWC_VOXEL_MM = 0.5
#: Default voxel size (mm) of the AAA phantom's grid.
AAA_VOXEL_MM = 1.0


def write_phantom(
    kind: str,
    out_dir,
    *,
    side: str = "left",
    seed: int = 0,
    swc_path=None,
    spacing_mm: float | None = None,
    geometry_path=None,
    ct: bool = False,
    sparse_every: int = 0,
) -> RunSummary:
    """Make a phantom and write its volume, exact SDF, mesh and a geometry file into ``out_dir``.

    Kinds: ``coronary`` (``side`` left/right, ``seed``) on the geometry's volume grid (the default
    geometry unless ``geometry_path``); ``swc`` (a tree from ``swc_path``) on a grid covering it
    at ``spacing_mm`` (default :data:`SWC_VOXEL_MM`); ``aaa`` (nested lumen/thrombus/wall, ``seed``) on its own grid.

    Files: ``volume.nii.gz`` (occupancy fraction, float32; labels 0-3 for ``aaa``),
    ``sdf.nii.gz`` (exact signed distance, mm; one ``sdf_<surface>.nii.gz`` per surface for
    ``aaa``), ``mesh.stl`` (``mesh_<surface>.stl``), ``geometry.json``; with ``ct``:
    ``ct.nii.gz`` (CT-like HU image) and with ``sparse_every=k``: ``ct_sparse.nii.gz``.
    Returns a :class:`~vesselfield.io.run_folder.RunSummary` whose ``files`` are what was written.
    """
    from vesselfield.geometry import Geometry, default_geometry, load_geometry, save_geometry
    from vesselfield.io import save_mesh, save_volume
    from vesselfield.meshing import mesh_from_volume
    from vesselfield import phantoms

    out = Path(out_dir)
    geometry = load_geometry(geometry_path) if geometry_path is not None else default_geometry()
    if sparse_every and sparse_every < 1:
        raise VesselfieldError("--sparse must be >= 1")
    spacing = float(spacing_mm) if spacing_mm is not None else None
    if spacing is not None and spacing <= 0:
        raise VesselfieldError(f"--spacing must be positive, got {spacing}")

    volumes: dict[str, tuple[np.ndarray, VolumeGrid]] = {}
    meshes: dict[str, object] = {}
    if kind in ("coronary", "swc"):
        if kind == "coronary":
            if side not in ("left", "right"):
                raise VesselfieldError(f"--side must be left or right, got {side!r}")
            phantom = phantoms.TreePhantom(phantoms.coronary_tree(side, seed=seed))
            grid = geometry.volume if spacing is None else VolumeGrid.centered(
                np.ceil(np.asarray(geometry.volume.shape) * geometry.volume.spacing / spacing).astype(int),
                spacing, geometry.volume.center_mm)
        else:
            if swc_path is None:
                raise VesselfieldError("phantom swc needs --swc FILE")
            phantom = phantoms.swc_phantom(swc_path)
            lo, hi = phantom.bounds_mm()
            s = spacing or SWC_VOXEL_MM
            margin = 3 * s
            shape = np.ceil((hi - lo + 2 * margin) / s).astype(int) + 1
            grid = VolumeGrid.centered(shape, s, (lo + hi) / 2)
        sdf = phantom.sdf_volume(grid)
        volumes["volume"] = (phantom.occupancy(grid), grid)
        volumes["sdf"] = (sdf, grid)
        meshes["mesh"] = mesh_from_volume(sdf, grid, 0.0, inside="below")
    elif kind == "aaa":
        phantom = phantoms.AAAPhantom(seed=seed)
        grid = phantom.default_grid(spacing_mm=spacing or AAA_VOXEL_MM)
        volumes["volume"] = (phantom.label_volume(grid), grid)
        for name in phantom.surface_names:
            sdf = phantom.sdf_volume(grid, surface=name)
            volumes[f"sdf_{name}"] = (sdf, grid)
            meshes[f"mesh_{name}"] = mesh_from_volume(sdf, grid, 0.0, inside="below")
    else:
        raise VesselfieldError(f"unknown phantom kind {kind!r}: use coronary, swc or aaa")

    if ct or sparse_every:
        occ = volumes["volume"][0]
        if kind == "aaa":  # contrast fills the lumen only
            occ = (occ == 1).astype(np.float32)
        image = phantoms.ct_like_image(occ, grid, seed=seed)
        if ct:
            volumes["ct"] = (image, grid)
        if sparse_every:
            volumes["ct_sparse"] = phantoms.sparse_slices(image, grid, keep_every=sparse_every)

    written = {}
    for name, (array, g) in volumes.items():
        written[name] = out / f"{name}.nii.gz"
        save_volume(written[name], array, g)
    for name, mesh in meshes.items():
        written[name] = out / f"{name}.stl"
        save_mesh(written[name], mesh)
    written["geometry"] = out / "geometry.json"
    save_geometry(written["geometry"], Geometry(volume=grid, views=list(geometry.views)))
    return RunSummary(verb=f"phantom {kind}", out_dir=out, files=written)
