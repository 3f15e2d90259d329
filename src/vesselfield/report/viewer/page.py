"""The 3D view as HTML: NiiVue inlined as a classic script, the scene's data as base64, no network.

Pages are opened from disk (``file://``), where browsers refuse ``fetch()`` and module scripts:
the vendored NiiVue UMD build (``vendor/niivue.umd.js``, version and sha256 in
``vendor/NIIVUE.json``, licences in ``vendor/LICENSES.txt``) and our starter
(``viewer.js``) are inlined as classic scripts, and the data is a script that fills
``window.__vfViewerData``. Meshes travel as gzip-compressed MZ3 (welded vertices,
:mod:`~vesselfield.report.viewer.mz3`), volumes as gzip-compressed NIfTI; both base64.

A page whose size would pass :attr:`ViewerLimits.max_page_mb` keeps the data in
``<page stem>_files/data.js`` beside it, loaded by a classic ``<script src>`` (folder mode).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import html
import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.report.viewer.mz3 import write_mz3_bytes
from vesselfield.report.viewer.scene import ViewerMesh, ViewerScene, ViewerVolume

__all__ = ["VENDOR_DIR", "niivue_info", "library_scripts", "viewer_payload", "data_script", "panel_html",
           "viewer_css", "ViewerParts", "data_folder", "safe_script_text"]

VENDOR_DIR = Path(__file__).with_name("vendor")

VIEWER_CSS = """
.vf-panel{margin:1em 0}.vf-panel>summary{font-weight:600;cursor:pointer}
.vf-canvas-box{position:relative;width:100%;height:560px;border:1px solid #ccc;background:#fff}
.vf-canvas-box canvas{width:100%;height:100%;display:block}
.vf-controls{margin:.4em 0;font-size:.9em}.vf-controls button{margin-right:.3em}
.vf-controls label{margin-right:1em;white-space:nowrap}
.vf-status{padding:.6em;background:#fff4e5;border:1px solid #e0b070}
.vf-nogl .vf-canvas-box,.vf-nogl .vf-controls{display:none}
.vf-legend{font-size:.85em;color:#444;margin:.3em 0 0 1em;padding:0}
.vf-swatch{display:inline-block;width:.9em;height:.9em;margin-right:.4em;vertical-align:middle;border:1px solid #999}
"""


def safe_script_text(text: str) -> str:
    """Script text that can sit inside ``<script>…</script>`` and names no web address.

    ``</script`` would end the element early; ``<\\/script`` is the same text to JavaScript.
    ``http://`` and ``https://`` appear in the vendored library only in comments and message
    strings; ``:\\/\\/`` is the same text inside JavaScript strings, templates and comments, so
    the page holds no web address (and asks for none).
    """
    return (text.replace("</script", "<\\/script").replace("</SCRIPT", "<\\/SCRIPT")
            .replace("http://", "http:\\/\\/").replace("https://", "https:\\/\\/"))


@lru_cache(maxsize=1)
def niivue_info() -> dict:
    """The vendored NiiVue's ``NIIVUE.json`` (package, version, sha256, licences), checked against the file."""
    meta = json.loads((VENDOR_DIR / "NIIVUE.json").read_text(encoding="utf-8"))
    data = (VENDOR_DIR / meta["file"]).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != meta["sha256"]:
        raise VesselfieldError(f"vendored NiiVue {meta['file']} does not match its sha256 in NIIVUE.json "
                               f"({digest} != {meta['sha256']}): reinstall vesselfield")
    return meta


@lru_cache(maxsize=1)
def library_scripts() -> str:
    """The ``<script>`` elements of NiiVue (with its licence notice) and of the starter, inlined."""
    meta = niivue_info()
    lib = (VENDOR_DIR / meta["file"]).read_text(encoding="utf-8")
    starter = Path(__file__).with_name("viewer.js").read_text(encoding="utf-8")
    notice = (f"/* {meta['package']} {meta['version']} ({meta['license']}), sha256 {meta['sha256']}, "
              "inlined unmodified except for escaping; licence texts: vesselfield/report/viewer/vendor/LICENSES.txt "
              "(BSD-2-Clause: Copyright (c) 2021, Niivue. All rights reserved.) */\n")
    return ("<script>" + notice + safe_script_text(lib) + "\n</script>\n"
            "<script>" + safe_script_text(starter) + "\n</script>\n")


def viewer_css() -> str:
    """The panel's CSS."""
    return VIEWER_CSS


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _ras(points_lps: np.ndarray) -> np.ndarray:
    # LPS -> RAS: x and y negated (a rotation by 180° about z, so triangles keep their orientation).
    return np.asarray(points_lps, dtype=np.float32) * np.array([-1.0, -1.0, 1.0], dtype=np.float32)


def _mesh_entry(m: ViewerMesh) -> dict:
    scalars = None if m.layer is None else m.layer.values
    entry = {"name": m.name, "label": m.label, "rgba": [int(c) for c in m.rgba], "opacity": float(m.opacity),
             "visible": bool(m.visible), "faces": int(len(m.faces)),
             "mz3": _b64(write_mz3_bytes(_ras(m.vertices), m.faces, scalars=scalars, compress=True))}
    if m.layer is not None:
        entry["layer"] = {"name": m.layer.name, "label": m.layer.label, "colormap": m.layer.colormap,
                          "range": [float(m.layer.range[0]), float(m.layer.range[1])]}
    return entry


def nifti_bytes(array: np.ndarray, grid, *, overlay: bool) -> bytes:
    """gzip-compressed NIfTI-1 bytes of ``array`` on ``grid`` (RAS affine), stored as uint8 (overlays)
    or int16 (images) with the header's slope and intercept restoring the values."""
    from vesselfield.io.volumes import nifti_image

    img = nifti_image(np.asarray(array, dtype=np.float32), grid, "a 3D view volume")
    # nibabel picks the header's slope and intercept so that the stored integers cover the range.
    img.set_data_dtype(np.uint8 if overlay else np.int16)
    return gzip.compress(img.to_bytes(), compresslevel=1, mtime=0)  # level 1: 4x faster, a few % larger


def _volume_entry(v: ViewerVolume) -> dict:
    return {"name": v.name, "label": v.label, "colormap": v.colormap, "opacity": float(v.opacity),
            "range": [float(v.range[0]), float(v.range[1])], "overlay": bool(v.overlay),
            "colorbar": False, "shape": [int(s) for s in v.array.shape],
            "nii": _b64(nifti_bytes(v.array, v.grid, overlay=v.overlay))}


def viewer_payload(scene: ViewerScene) -> dict:
    """The JSON-able data of a scene for ``window.__vfViewerData`` (meshes in RAS mm for NiiVue)."""
    if not isinstance(scene, ViewerScene):
        raise VesselfieldError(f"a 3D view needs a ViewerScene, got {type(scene).__name__}")
    if scene.is_empty():
        raise VesselfieldError("the 3D view has nothing to show (no surface, tree or volume)")
    return {"frame": "RAS mm (NiiVue); vesselfield files are LPS mm",
            "volumes": [_volume_entry(v) for v in scene.volumes],
            "meshes": [_mesh_entry(m) for m in scene.meshes]}


def data_script(viewer_id: str, payload: dict) -> str:
    """JavaScript that stores ``payload`` as ``window.__vfViewerData[viewer_id]``."""
    text = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    return ("window.__vfViewerData=window.__vfViewerData||{};"
            f"window.__vfViewerData[{json.dumps(viewer_id)}]=" + safe_script_text(text) + ";\n")


def _swatch(rgba) -> str:
    r, g, b = (int(c) for c in rgba[:3])
    return f'<span class="vf-swatch" style="background:rgb({r},{g},{b})"></span>'


def panel_html(viewer_id: str, scene: ViewerScene, *, caption: str = "") -> str:
    """The panel's HTML: status line, controls, canvas, and a legend of what is shown."""
    items = []
    for m in scene.meshes:
        what = html.escape(m.label) + (f" (colour: {html.escape(m.layer.label)})" if m.layer else "")
        items.append(f"<li>{_swatch(m.rgba) if m.layer is None else ''}{what}</li>")
    for v in scene.volumes:
        items.append(f"<li>{'overlay' if v.overlay else 'volume'}: {html.escape(v.label)} "
                     f"({'x'.join(map(str, v.array.shape))} voxels)</li>")
    for note in scene.notes:
        items.append(f'<li class="note">{html.escape(note)}</li>')
    help_text = ("3D: drag to turn, scroll to zoom. Slices: click or drag to move the cross, right-drag to "
                 "change the contrast. World frame shown as RAS, as in NIfTI viewers; vesselfield's files are LPS mm.")
    return (f'<details class="vf-panel" open><summary>Interactive 3D view</summary>'
            f'<div class="vf-viewer" data-vf-viewer="{html.escape(viewer_id)}">'
            '<p class="vf-status" hidden></p><div class="vf-controls"></div>'
            '<div class="vf-canvas-box"><canvas></canvas></div>'
            f'<ul class="vf-legend">{"".join(items)}</ul>'
            f'<p class="note">{html.escape(caption + " " if caption else "")}{help_text}</p></div></details>')


class ViewerParts:
    """What one page needs for its 3D views: panels by id, their data scripts, and the library."""

    def __init__(self):
        self.data: dict[str, str] = {}

    def add(self, viewer_id: str, scene: ViewerScene, *, caption: str = "") -> str:
        """Encode ``scene`` under ``viewer_id``; returns the panel's HTML."""
        self.data[viewer_id] = data_script(viewer_id, viewer_payload(scene))
        return panel_html(viewer_id, scene, caption=caption)

    def __bool__(self) -> bool:
        return bool(self.data)

    def data_text(self) -> str:
        return "".join(self.data.values())

    def tail(self, data_src: str | None) -> str:
        """The scripts that end the page: the data inline (``data_src`` None) or by
        ``<script src=data_src>``, then NiiVue and the starter."""
        if not self:
            return ""
        if data_src is None:
            data = "<script>" + self.data_text() + "</script>\n"
        else:
            data = f'<script src="{html.escape(data_src)}"></script>\n'
        return data + library_scripts()


def data_folder(page_path) -> Path:
    """Where folder mode puts ``data.js`` for the page ``page_path``: ``<stem>_files/``."""
    p = Path(page_path)
    return p.with_name(p.name.split(".")[0] + "_files")
