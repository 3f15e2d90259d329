"""``vesselfield view PATH... [--reference REF] [--out FILE.html] [--open]``: one offline 3D page of anything.

Each PATH is one of:

- a surface mesh (``.stl``, ``.ply``, ``.obj``, or a ``.vtp`` with polygons);
- a centreline tree: ``.swc``, or a ``.vtp`` of polylines with a radius array
  (``radius_area_mm`` of ``vesselfield analyze``, vmtk's ``MaximumInscribedSphereRadius``, ...);
- a volume (``.nii``/``.nii.gz``, ``.mha``/``.mhd``, ``.nrrd``/``.nhdr``): the first is shown as the
  image (slices and 3D render), later ones with values in [0, 1] (masks, probabilities) as red
  overlays;
- a run folder of vesselfield: its ``mesh.stl``, its analysis tree, its C-arm geometry (two-view
  runs) and, when its ``config.yaml`` names a ground truth, that truth as the reference.

``--reference`` (a mesh, or a mask / occupancy volume whose 0.5 level is the surface) adds the
reference surface and colours the first surface by its signed distance to it (mm).

The page is written atomically; above 15 MB its data goes to ``<stem>_files/data.js`` beside it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vesselfield.errors import VesselfieldError

__all__ = ["view_files", "read_view_item"]

TREE_RADIUS_ARRAYS = ("radius_area_mm", "MaximumInscribedSphereRadius", "Radius", "radius")


def _kind(path: Path) -> str:
    from vesselfield.io.meshes import MESH_SUFFIXES
    from vesselfield.io.volumes import VOLUME_SUFFIXES

    name = path.name.lower()
    if path.is_dir():
        return "run"
    if name.endswith(".swc"):
        return "tree"
    if name.endswith(".vtp"):
        from vesselfield.io.vtp import read_vtp

        pd = read_vtp(path)
        has_polys = len(pd.polys) > 0
        return "mesh" if has_polys else "tree"
    if name.endswith(MESH_SUFFIXES):
        return "mesh"
    if name.endswith(VOLUME_SUFFIXES) and not name.endswith(".npy"):
        return "volume"
    raise VesselfieldError(f"{path.name}: not a mesh (.stl .ply .obj .vtp), tree (.swc .vtp), volume "
                           "(.nii .nii.gz .mha .mhd .nrrd .nhdr) or run folder")


def _tree(path: Path):
    if path.name.lower().endswith(".swc"):
        from vesselfield.io.swc import load_swc

        return load_swc(path)
    from vesselfield.io.vtp import load_centerline_vtp

    return load_centerline_vtp(path, radius_array=TREE_RADIUS_ARRAYS)


def _reference(path: Path):
    kind = _kind(path)
    if kind == "mesh":
        from vesselfield.io.meshes import load_mesh

        return load_mesh(path)
    if kind == "volume":
        from vesselfield.io.volumes import load_volume
        from vesselfield.report.viewer.build import mask_surface

        volume, grid = load_volume(path, what="reference volume")
        surface = mask_surface(np.asarray(volume, dtype=np.float32), grid, 0.5)
        if surface is None:
            raise VesselfieldError(f"reference volume {path} has no 0.5 level (empty or full)")
        return surface
    raise VesselfieldError(f"--reference {path.name} must be a mesh or a mask volume")


def _run_folder(path: Path) -> dict:
    """What a run folder offers: meshes, tree, geometry and ground truth (each possibly missing)."""
    import yaml

    out: dict = {"meshes": [], "tree": None, "geometry": None, "gt": None}
    for name in ("mesh.stl", "mesh.ply", "mesh.obj", "mesh.vtp"):
        if (path / name).is_file():
            out["meshes"].append(path / name)
            break
    for tree in (path / "analysis" / "tree.swc", path / "tree.swc"):
        if tree.is_file():
            out["tree"] = tree
            break
    config = {}
    if (path / "config.yaml").is_file():
        try:
            config = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            config = {}
    inputs = config.get("inputs") if isinstance(config, dict) else None
    inputs = inputs if isinstance(inputs, dict) else {}
    for geometry in (path / "geometry_refined.json", inputs.get("geometry")):
        if geometry and Path(geometry).is_file():
            out["geometry"] = Path(geometry)
            break
    gt = inputs.get("gt")
    if gt and Path(gt).is_file():
        out["gt"] = Path(gt)
    if not out["meshes"] and out["tree"] is None:
        raise VesselfieldError(f"run folder {path} holds no mesh.stl and no analysis/tree.swc to show")
    return out


def read_view_item(path) -> str:
    """The kind of one PATH (``mesh``, ``tree``, ``volume`` or ``run``); a missing path is an error."""
    p = Path(path)
    if not p.exists():
        raise VesselfieldError(f"{p} does not exist")
    return _kind(p)


def view_files(paths, out_path=None, *, reference=None, open_browser: bool = False, title: str | None = None,
               limits=None) -> tuple[Path, list[str]]:
    """Write the 3D page of ``paths`` to ``out_path`` (default ``./view.html``).

    Returns ``(page path, lines to print)``. Every input is read and checked before anything is
    written.
    """
    from vesselfield.io.meshes import load_mesh
    from vesselfield.report.html import ReportPage
    from vesselfield.report.viewer.scene import SURFACE_COLOURS, ViewerLimits, ViewerScene

    paths = [Path(p) for p in paths]
    if not paths:
        raise VesselfieldError("give at least one mesh, tree, volume or run folder to view")
    kinds = [read_view_item(p) for p in paths]
    out = Path(out_path) if out_path is not None else Path("view.html")
    if out.exists() and out.is_dir():
        raise VesselfieldError(f"--out {out} is a folder; give the page's file name, e.g. {out / 'view.html'}")
    if not out.name.lower().endswith((".html", ".htm")):
        raise VesselfieldError(f"--out {out.name} must end in .html")

    surfaces, trees, volumes, geometries = [], [], [], []
    ref = _reference(Path(reference)) if reference is not None else None
    for p, kind in zip(paths, kinds):
        if kind == "mesh":
            surfaces.append((p.name, load_mesh(p)))
        elif kind == "tree":
            trees.append((p.name, _tree(p)))
        elif kind == "volume":
            from vesselfield.io.volumes import load_volume

            volume, grid = load_volume(p, what="volume")
            volumes.append((p.name, np.asarray(volume, dtype=np.float32), grid))
        else:
            run = _run_folder(p)
            surfaces += [(f"{p.name}/{m.name}", load_mesh(m)) for m in run["meshes"]]
            if run["tree"] is not None:
                trees.append((f"{p.name}/analysis tree", _tree(run["tree"])))
            if run["geometry"] is not None:
                from vesselfield.geometry import load_geometry

                geometries.append(load_geometry(run["geometry"]))
            if ref is None and run["gt"] is not None and run["geometry"] is not None:
                from vesselfield.io.volumes import load_volume
                from vesselfield.report.viewer.build import mask_surface

                gt, grid = load_volume(run["gt"], geometries[-1].volume, what="ground truth")
                ref = mask_surface(np.asarray(gt, dtype=np.float32), grid, 0.5)

    scene = ViewerScene(limits=limits if limits is not None else ViewerLimits())
    for k, (name, mesh) in enumerate(surfaces):
        scene.add_surface(mesh, name=f"surface{k + 1}", label=name, rgba=SURFACE_COLOURS[k % len(SURFACE_COLOURS)],
                          reference=ref if k == 0 else None, opacity=1.0 if k == 0 else 0.5)
    if ref is not None and not surfaces:
        scene.add_reference(ref)
    for k, (name, tree) in enumerate(trees):
        scene.add_centerlines(tree, name=f"tree{k + 1}", label=f"{name}: centreline tree, coloured by radius")
    for k, (name, volume, grid) in enumerate(volumes):
        in_unit = float(volume.min()) >= 0.0 and float(volume.max()) <= 1.0
        if k > 0 and in_unit:
            scene.add_volume(volume, grid, name=f"overlay{k}", label=name, colormap="red", overlay=True,
                             opacity=0.5, range_=(0.5, 1.0))
        else:
            scene.add_volume(volume, grid, name=f"volume{k + 1}", label=name)
    for geometry in geometries:
        lo = hi = None
        if scene.meshes:
            v = np.vstack([m.vertices for m in scene.meshes])
            lo, hi = v.min(0), v.max(0)
        scene.add_carm(geometry, around_mm=(lo, hi) if lo is not None else None)

    page = ReportPage(title or f"vesselfield view: {', '.join(p.name for p in paths)}",
                      note="An interactive, offline 3D view (NiiVue). Positions in world mm.")
    page.add_viewer(scene, heading="3D view")
    out.parent.mkdir(parents=True, exist_ok=True)
    page.write(out)
    size_mb = out.stat().st_size / 1e6
    lines = [f"wrote {out} ({size_mb:.1f} MB): {len(scene.meshes)} meshes, {len(scene.volumes)} volumes"]
    data = page.data_path
    if data is not None:
        lines.append(f"the data ({data.stat().st_size / 1e6:.1f} MB) is in {data}: keep that folder beside the page")
    lines += [f"note: {n}" for n in scene.notes]
    if open_browser:
        import webbrowser

        webbrowser.open(out.resolve().as_uri())
    return out, lines
