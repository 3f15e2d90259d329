"""The jobs behind the command line, callable from Python too.

Each function validates all of its inputs before it writes anything, and writes every file
atomically, so a failed run leaves no half-written output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid
from vesselfield.io.atomic import write_text_atomic
from vesselfield.validate import require_binary, require_finite


def metrics_json(metrics: dict) -> str:
    """Metrics as strict JSON: an infinite distance (one mask empty) is written as ``null``."""
    clean = {k: (v if not isinstance(v, float) or np.isfinite(v) else None) for k, v in metrics.items()}
    return json.dumps(clean, indent=2, allow_nan=False) + "\n"


# ----------------------------------------------------------------------------------- grids
def grid_from_options(
    geometry_path=None,
    spacing_mm: Sequence[float] | None = None,
    origin_mm: Sequence[float] | None = None,
    shape: Sequence[int] | None = None,
) -> VolumeGrid | None:
    """The grid a ``.npy`` volume lives on: from ``--spacing/--origin`` or a geometry file.

    ``shape`` (the array's) wins over the geometry's; a geometry whose grid shape disagrees with
    the array is an error rather than a silent reinterpretation.
    """
    if spacing_mm is not None:
        if shape is None:
            raise VesselfieldError("--spacing needs a volume to take its shape from")
        origin = origin_mm if origin_mm is not None else VolumeGrid.centered(shape, spacing_mm).origin_mm
        return VolumeGrid(shape, spacing_mm, origin)
    if geometry_path is not None:
        from vesselfield.geometry import load_geometry

        grid = load_geometry(geometry_path).volume
        if origin_mm is not None:
            grid = VolumeGrid(grid.shape, grid.spacing_mm, origin_mm)
        return grid
    return None


def read_volume(path, *, geometry_path=None, spacing_mm=None, origin_mm=None, what="volume"):
    """Load a volume and its grid; ``.npy`` takes its grid from ``--spacing/--origin`` or a geometry."""
    from vesselfield.io import load_volume

    path = Path(path)
    grid = None
    if path.suffix.lower() == ".npy":
        if not path.is_file():
            raise VesselfieldError(f"{what} file not found: {path}")
        try:
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
        except Exception as exc:
            raise VesselfieldError(f"cannot read {what} {path}: {exc}") from None
        if len(shape) != 3:
            raise VesselfieldError(f"{what} {path} must be a 3D array, got shape {tuple(shape)}")
        grid = grid_from_options(geometry_path, spacing_mm, origin_mm, shape)
        if grid is None:
            raise VesselfieldError(
                f"{what} {path} is a .npy array without a grid: pass --geometry G.json or --spacing X Y Z"
            )
        grid.check_array(np.empty(shape, dtype=np.uint8), what=f"{what} {path.name}")
    array, grid = load_volume(path, grid, what=what) if grid is not None else load_volume(path, what=what)
    require_finite(array, f"{what} {path.name}")
    return np.asarray(array), grid


# -------------------------------------------------------------------------------- phantoms
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
) -> dict:
    """Make a phantom and write its volume, exact SDF, mesh and a geometry file into ``out_dir``.

    Kinds: ``coronary`` (``side`` left/right, ``seed``) on the geometry's volume grid (the default
    geometry unless ``geometry_path``); ``swc`` (a tree from ``swc_path``) on a grid covering it
    at ``spacing_mm`` (default 0.5 mm); ``aaa`` (nested lumen/thrombus/wall, ``seed``) on its own grid.

    Files: ``volume.nii.gz`` (occupancy fraction, float32; labels 0-3 for ``aaa``),
    ``sdf.nii.gz`` (exact signed distance, mm; one ``sdf_<surface>.nii.gz`` per surface for
    ``aaa``), ``mesh.stl`` (``mesh_<surface>.stl``), ``geometry.json``; with ``ct``:
    ``ct.nii.gz`` (CT-like HU image) and with ``sparse_every=k``: ``ct_sparse.nii.gz``.
    Returns ``{name: path}`` of what was written.
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
            s = spacing or 0.5
            margin = 3 * s
            shape = np.ceil((hi - lo + 2 * margin) / s).astype(int) + 1
            grid = VolumeGrid.centered(shape, s, (lo + hi) / 2)
        sdf = phantom.sdf_volume(grid)
        volumes["volume"] = (phantom.occupancy(grid), grid)
        volumes["sdf"] = (sdf, grid)
        meshes["mesh"] = mesh_from_volume(sdf, grid, 0.0, inside="below")
    elif kind == "aaa":
        phantom = phantoms.AAAPhantom(seed=seed)
        grid = phantom.default_grid(spacing_mm=spacing or 1.0)
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
    return written


# ------------------------------------------------------------------------------ projection
def project_to_files(
    volume_path,
    geometry_path,
    out_dir,
    *,
    spacing_mm=None,
    origin_mm=None,
    step_mm: float | None = None,
    threshold_mm: float | None = None,
    device: str = "auto",
    progress: bool = True,
) -> list[Path]:
    """Simulate every view of a geometry: ``view<i>.npy`` (float32 line integrals in mm, [H, W])
    and ``view<i>.png`` (binary masks) in ``out_dir``. Returns the written paths."""
    import torch

    from vesselfield.device import resolve_device
    from vesselfield.geometry import Geometry, check_views_see_volume, load_geometry
    from vesselfield.io.images import save_image_npy, save_mask_png
    from vesselfield.render import project_volume, projection_mask

    geometry = load_geometry(geometry_path)
    volume, grid = read_volume(volume_path, geometry_path=geometry_path if spacing_mm is None else None,
                               spacing_mm=spacing_mm, origin_mm=origin_mm)
    check_views_see_volume(Geometry(volume=grid, views=geometry.views))
    dev = resolve_device(device)
    vol = torch.as_tensor(volume.astype(np.float32), device=dev)
    images = []
    with torch.no_grad():
        for i, view in enumerate(geometry.views, start=1):
            if progress:
                print(f"projecting view {i}/{len(geometry.views)} ...", flush=True)
            kwargs = {} if step_mm is None else {"step_mm": step_mm}
            images.append(project_volume(vol, grid, view, **kwargs).cpu().numpy())
    written = []
    out = Path(out_dir)
    for i, image in enumerate(images, start=1):
        save_image_npy(out / f"view{i}.npy", image)
        mask = projection_mask(torch.as_tensor(image)) if threshold_mm is None else projection_mask(
            torch.as_tensor(image), threshold_mm=threshold_mm)
        save_mask_png(out / f"view{i}.png", np.asarray(mask))
        written += [out / f"view{i}.npy", out / f"view{i}.png"]
    return written


# ------------------------------------------------------------------------------ evaluation
def evaluate_files(
    pred_path,
    gt_path,
    *,
    threshold: float = 0.5,
    json_path=None,
    geometry_path=None,
    spacing_mm=None,
    origin_mm=None,
) -> dict:
    """Every metric of a predicted volume against a binary ground truth on the same grid.

    ``pred``: occupancy/probability in [0, 1] (binarised at ``threshold``) or a binary mask.
    ``gt``: a binary mask (0/1). Returns the metrics dict (also written to ``json_path``).
    """
    from vesselfield.metrics import evaluate_volumes

    if not 0.0 < threshold < 1.0 and threshold != 1.0:
        raise VesselfieldError(f"--threshold must be in (0, 1], got {threshold}")
    pred, pgrid = read_volume(pred_path, geometry_path=geometry_path, spacing_mm=spacing_mm,
                              origin_mm=origin_mm, what="prediction")
    gt, ggrid = read_volume(gt_path, geometry_path=geometry_path, spacing_mm=spacing_mm,
                            origin_mm=origin_mm, what="ground truth")
    pgrid.require_same(ggrid, what="prediction and ground truth")
    gt = require_binary(gt, f"ground truth {Path(gt_path).name}")
    if pred.min() < 0 or pred.max() > 1:
        raise VesselfieldError(
            f"prediction {Path(pred_path).name} has values outside [0, 1] ({pred.min():g} to {pred.max():g}): "
            "pass an occupancy/probability map or a binary mask, not an SDF or an image"
        )
    metrics = evaluate_volumes(pred.astype(np.float32), gt, pgrid, threshold=threshold)
    if json_path is not None:
        write_text_atomic(json_path, metrics_json(metrics))
    return metrics


# ---------------------------------------------------------------------------------- meshing
def mesh_to_file(volume_path, out_path, *, level=None, inside="auto", largest_component=False,
                 geometry_path=None, spacing_mm=None, origin_mm=None) -> dict:
    """Marching cubes of a volume file into a mesh file (STL/PLY/OBJ/VTP, world mm). Returns a summary."""
    from vesselfield.io import save_mesh
    from vesselfield.meshing import mesh_from_volume, mesh_summary

    suffix = Path(out_path).suffix.lower()
    if suffix not in (".stl", ".ply", ".obj", ".vtp"):
        raise VesselfieldError(f"mesh output must end in .stl, .ply, .obj or .vtp, got {Path(out_path).name}")
    volume, grid = read_volume(volume_path, geometry_path=geometry_path, spacing_mm=spacing_mm,
                               origin_mm=origin_mm)
    mesh = mesh_from_volume(volume, grid, level, inside=inside, largest_component=largest_component)
    save_mesh(out_path, mesh)
    return mesh_summary(mesh)


# -------------------------------------------------------------------------------------- demo
def run_demo(out_dir, *, seed: int = 0, device: str = "auto", method: str = "sdf-car", preset: str = "cpu",
             iterations: int | None = None, masks_only: bool = False, progress: bool = True) -> dict:
    """The main job on a built-in case: a left coronary phantom on the papers' default geometry,
    its two simulated views (line integrals and masks), a two-view reconstruction (SDF-CAR, CPU
    preset by default), every metric against the truth, a mesh, figures and ``report.html``.

    Returns the metrics dict (also in ``out_dir/metrics.json``).
    """
    import torch

    from vesselfield.device import resolve_device
    from vesselfield.geometry import default_geometry, save_geometry
    from vesselfield.io import save_mesh, save_volume
    from vesselfield.io.images import save_image_npy, save_mask_png
    from vesselfield.meshing import mesh_from_volume
    from vesselfield.methods.sdf_car import reconstruct_xray, xray_config
    from vesselfield.methods.xray_files import CONFIG_NAME, save_xray_outputs, write_config_yaml
    from vesselfield.phantoms import TreePhantom, coronary_tree
    from vesselfield.render import project_volume, projection_mask

    config = xray_config(method, preset, iterations=iterations)
    out = Path(out_dir)
    geometry = default_geometry()
    grid = geometry.volume
    print(f"[1/4] left coronary phantom (seed {seed}) on a {grid.shape} grid at {grid.spacing_mm[0]} mm", flush=True)
    phantom = TreePhantom(coronary_tree("left", seed=seed))
    truth = phantom.occupancy(grid)
    sdf = phantom.sdf_volume(grid)
    save_volume(out / "phantom_occupancy.nii.gz", truth, grid)
    save_volume(out / "phantom_sdf.nii.gz", sdf, grid)
    save_mesh(out / "phantom_mesh.stl", mesh_from_volume(sdf, grid, 0.0, inside="below"))
    save_geometry(out / "geometry.json", geometry)

    print("[2/4] simulating the two X-ray views with the cone-beam projector", flush=True)
    dev = resolve_device(device)
    views, masks = [], []
    with torch.no_grad():
        vol = torch.as_tensor(truth, device=dev)
        for i, view in enumerate(geometry.views, start=1):
            image = project_volume(vol, grid, view).cpu().numpy()
            mask = np.asarray(projection_mask(torch.as_tensor(image)))
            save_image_npy(out / f"view{i}.npy", image)
            save_mask_png(out / f"view{i}.png", mask)
            views.append(image)
            masks.append(mask)

    kind = "mask" if masks_only else "line_integral"
    targets = masks if masks_only else views
    print(f"[3/4] {config.method} reconstruction ({config.preset} preset, {config.iterations} iterations) "
          f"from the two {'masks' if masks_only else 'line-integral views'}", flush=True)
    rec = out / "reconstruction"
    names = [f"view{i}.{'png' if masks_only else 'npy'}" for i in range(1, len(views) + 1)]
    command = (f"vesselfield reconstruct xray --geometry {out / 'geometry.json'} "
               f"{'--masks' if masks_only else '--projections'} {' '.join(str(out / n) for n in names)} "
               f"--out {rec} --method {config.method} --preset {config.preset} --iterations {config.iterations} "
               f"--gt {out / 'phantom_occupancy.nii.gz'}")
    rec.mkdir(parents=True, exist_ok=True)
    write_config_yaml(rec / CONFIG_NAME, config,
                      {"geometry": str((out / "geometry.json").resolve()), "kind": kind,
                       "views": [str((out / n).resolve()) for n in names],
                       "gt": str((out / "phantom_occupancy.nii.gz").resolve()), "device": device}, command)
    result = reconstruct_xray(geometry, targets, kind=kind, config=config, device=device, out_dir=rec,
                              progress=progress)
    print(f"      {result.iterations} iterations in {result.seconds:.1f} s "
          f"(+ {result.setup_seconds:.1f} s set-up: visual hull of {result.hull_voxels} voxels)", flush=True)

    print("[4/4] metrics, mesh, figures and report", flush=True)
    save_xray_outputs(result, rec, geometry=geometry, targets=targets, kind=kind, gt=truth)
    metrics = json.loads((rec / "metrics.json").read_text())
    write_text_atomic(out / "metrics.json", metrics_json(metrics))
    return metrics
