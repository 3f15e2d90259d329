"""The 3D view of each method's run, built from what its report already has.

- two-view X-ray (SDF-CAR / NeCA): the surface, the true surface and the error layer when a
  ground truth is known, the centreline tree, the C-arm views (:func:`xray_scene`);
- implicit vessel models: the fitted surface(s) and the centreline tree (:func:`surface_scene`);
- CT methods (VesselSDF, NUDF): the image as slices and a 3D render, the predicted surface (drawn
  where it cuts each slice; a red overlay of the prediction when there is no surface) and the tree
  (:func:`ct_scene`);
- the vessel analysis: its tree, with the analysed surface when there is one (:func:`tree_scene`).

:func:`add_view` adds a builder's scene to a report page, or a warning when it cannot be built.

Every builder returns a :class:`~vesselfield.report.viewer.scene.ViewerScene` (possibly empty).
"""

from __future__ import annotations

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.report.viewer.scene import SURFACE_COLOURS, ViewerScene

__all__ = ["add_view", "mask_surface", "xray_scene", "surface_scene", "ct_scene", "tree_scene"]


def mask_surface(volume, grid, level: float = 0.5):
    """The level-``level`` surface of a volume (occupancy or mask, inside above) as a mesh, or None
    when the volume does not cross the level (marching cubes, world mm)."""
    from vesselfield.meshing import mesh_from_volume

    v = np.asarray(volume, dtype=np.float32)
    if not (v.min() < level < v.max()):
        return None
    return mesh_from_volume(v, grid, level, inside="above")


def _add_tree(scene: ViewerScene, analysis) -> None:
    """The analysis tree; a surface without an error layer then turns translucent so the tree shows."""
    if analysis is None or len(analysis) < 2:
        return
    scene.add_centerlines(analysis)
    for m in scene.meshes:
        if m.name.startswith("surface") and m.layer is None and m.opacity > 0.5:
            m.opacity = 0.5


def xray_scene(geometry, *, mesh=None, gt_occupancy=None, analysis=None, threshold: float = 0.5,
               scene: ViewerScene | None = None) -> ViewerScene:
    """A two-view reconstruction: ``mesh`` (its surface), the ground truth's level-``threshold``
    surface as reference with the signed error layer, the analysis tree and the C-arm views drawn
    around the surface."""
    scene = scene if scene is not None else ViewerScene()
    reference = None
    if gt_occupancy is not None:
        reference = mask_surface(gt_occupancy, geometry.volume, threshold)
    if mesh is not None and len(mesh.faces):
        scene.add_surface(mesh, reference=reference)
        around = (np.asarray(mesh.vertices).min(0), np.asarray(mesh.vertices).max(0))
    else:
        if reference is not None:
            scene.add_reference(reference)
        around = None
    _add_tree(scene, analysis)
    if not scene.is_empty():
        scene.add_carm(geometry, around_mm=around)
    return scene


def surface_scene(meshes, *, names=None, analysis=None, reference=None,
                  scene: ViewerScene | None = None) -> ViewerScene:
    """One or several surfaces (nested walls: outer ones drawn translucent) with the analysis tree
    and, with ``reference``, the error layer of the first surface."""
    scene = scene if scene is not None else ViewerScene()
    meshes = [m for m in (meshes if isinstance(meshes, (list, tuple)) else [meshes]) if m is not None]
    names = list(names) if names is not None else [f"surface {k + 1}" for k in range(len(meshes))]
    for k, (mesh, name) in enumerate(zip(meshes, names)):
        if not len(mesh.faces):
            continue
        opacity = 1.0 if k == 0 else 0.35
        scene.add_surface(mesh, name=f"surface{k + 1}", label=str(name), rgba=SURFACE_COLOURS[k % len(SURFACE_COLOURS)],
                          opacity=opacity, reference=reference if k == 0 else None)
    _add_tree(scene, analysis)
    return scene


def ct_scene(image, grid, *, overlay=None, overlay_grid=None, overlay_label: str = "prediction",
             mesh=None, analysis=None, reference=None, scene: ViewerScene | None = None) -> ViewerScene:
    """A CT method's result: ``image`` (X, Y, Z) on ``grid`` as slices and a 3D render, the surface
    ``mesh`` (drawn where it cuts the slices; with ``reference``: its error layer) and the analysis
    tree. ``overlay`` (occupancy or probability in [0, 1] on ``overlay_grid``, default ``grid``) is
    shown in red above 0.5 when there is no surface."""
    scene = scene if scene is not None else ViewerScene()
    if image is None:
        raise VesselfieldError("a CT view needs the image volume")
    scene.add_volume(image, grid, name="image", label="CT image")
    # With a surface, the slices show where it cuts them (NiiVue draws meshes on 2D slices): the
    # prediction's outline on the CT, without a second volume (each volume costs about a second
    # to open with software WebGL). Without one, the prediction is a red overlay.
    if overlay is not None and (mesh is None or not len(mesh.faces)):
        scene.add_volume(overlay, overlay_grid if overlay_grid is not None else grid, name="overlay",
                         label=overlay_label, colormap="red", overlay=True, opacity=0.5, range_=(0.5, 1.0))
    if mesh is not None and len(mesh.faces):
        scene.add_surface(mesh, reference=reference)
    _add_tree(scene, analysis)
    return scene


def tree_scene(tree, *, surface=None, scene: ViewerScene | None = None) -> ViewerScene:
    """A centreline tree (coloured by radius), over a translucent ``surface`` when given."""
    scene = scene if scene is not None else ViewerScene()
    if surface is not None and len(surface.faces):
        scene.add_surface(surface, label="analysed surface", opacity=0.35)
    scene.add_centerlines(tree)
    return scene


VIEW_CAPTION = ("Turn the vessel in your hand; tick an object to show or hide it. Colour bars give the "
                "error (mm, blue inside the reference, red outside) and the centreline radius (mm).")


def add_view(page, build, *args, caption: str = VIEW_CAPTION, **kwargs) -> str | None:
    """Add the 3D view ``build(*args, **kwargs)`` to the report ``page``; returns None, or the one-line
    reason it could not be built (also shown on the page as a warning: a report is still written
    when its 3D view fails)."""
    try:
        scene = build(*args, **kwargs)
        page.add_viewer(scene, caption=caption)
    except (VesselfieldError, ValueError, RuntimeError, MemoryError) as exc:
        reason = f"the 3D view was not built: {exc}"
        page.add_warning(reason)
        return reason
    return None
