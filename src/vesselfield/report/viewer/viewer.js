/* vesselfield 3D view: starts every panel <div data-vf-viewer="ID"> of the page with NiiVue.
 * A classic script (no modules, no fetch): it works from file://. Data comes from
 * window.__vfViewerData[ID], set by an inline script or by a data.js file beside the page.
 * When every panel has finished (drawn, or shown its one-line message) window.__vfReady = true.
 */
(function () {
  "use strict";
  var viewers = (window.__vfViewers = window.__vfViewers || {});
  window.__vfReady = false;

  function bytes(b64) {
    if (Uint8Array.fromBase64) return Uint8Array.fromBase64(b64).buffer;
    var s = atob(b64), n = s.length, u = new Uint8Array(n);
    for (var i = 0; i < n; i++) u[i] = s.charCodeAt(i);
    return u.buffer;
  }

  function hasWebGL2() {
    try {
      var c = document.createElement("canvas");
      return !!(window.WebGL2RenderingContext && c.getContext("webgl2"));
    } catch (e) {
      return false;
    }
  }

  function say(panel, text) {
    var s = panel.querySelector(".vf-status");
    s.textContent = text;
    s.hidden = false;
  }

  // Blue (inside the reference, too narrow) - white (on it) - red (outside, too wide).
  var ERROR_MAP = { R: [33, 103, 247, 239, 178], G: [102, 169, 247, 138, 24], B: [172, 207, 247, 98, 43],
                    A: [255, 255, 255, 255, 255], I: [0, 64, 128, 192, 255] };

  function legendRow(text, cls) {
    var li = document.createElement("li");
    li.textContent = text;
    if (cls) li.className = cls;
    return li;
  }

  async function start(panel) {
    var id = panel.getAttribute("data-vf-viewer");
    var data = (window.__vfViewerData || {})[id];
    var state = { id: id, ok: false, colorbars: [], meshes: [], volumes: [], timings_ms: {} };
    var mark = function (what) { state.timings_ms[what] = Math.round(performance.now()); };
    mark("start");
    viewers[id] = state;
    if (!data) {
      say(panel, "3D view: its data file is missing (keep the folder written beside this page).");
      state.reason = "no-data";
      return state;
    }
    if (!hasWebGL2()) {
      say(panel, "3D view unavailable: this browser has no WebGL2. The pictures below show the same results.");
      panel.classList.add("vf-nogl");
      state.reason = "no-webgl2";
      return state;
    }
    var canvas = panel.querySelector("canvas");
    var nv = new niivue.Niivue({
      backColor: [1, 1, 1, 1], show3Dcrosshair: false, isColorbar: true, loadingText: "",
      logLevel: "error", isResizeCanvas: true, dragAndDropEnabled: false,
      meshThicknessOn2D: 1.5, multiplanarShowRender: 1
    });
    state.nv = nv;
    await nv.attachToCanvas(canvas);
    mark("attached");
    nv.addColormap("vf_error", ERROR_MAP);
    // Meshes first: every later addition redraws, and a redraw with volumes loaded costs most.
    var legend = panel.querySelector(".vf-legend");
    for (var j = 0; j < data.meshes.length; j++) {
      var m = data.meshes[j];
      var mesh = await niivue.NVMesh.readMesh(bytes(m.mz3), m.name + ".mz3", nv.gl, m.opacity,
                                             new Uint8Array(m.rgba), m.visible);
      if (m.layer && mesh.layers.length > 0) {
        var L = mesh.layers[0];
        L.colormap = m.layer.colormap;
        L.cal_min = m.layer.range[0];
        L.cal_max = m.layer.range[1];
        L.opacity = 1.0;
        L.colormapType = 0; // min to max, also for negative values
        L.isTransparentBelowCalMin = false;
        L.colorbarVisible = true;
        mesh.updateMesh(nv.gl);
        state.colorbars.push(m.layer.name);
        legend.appendChild(legendRow("colour bar " + state.colorbars.length + ": " + m.layer.label + ", " +
          m.layer.range[0].toPrecision(3) + " to " + m.layer.range[1].toPrecision(3), "vf-bar"));
      }
      nv.addMesh(mesh);
      state.meshes.push({ name: m.name, label: m.label, mesh: mesh, opacity: m.opacity });
    }
    mark("meshes");
    for (var i = 0; i < data.volumes.length; i++) {
      var v = data.volumes[i];
      var img = await niivue.NVImage.new(bytes(v.nii), v.name + ".nii.gz", v.colormap, v.opacity, null,
                                         v.range[0], v.range[1]);
      img.colorbarVisible = !!v.colorbar;
      nv.addVolume(img);
      state.volumes.push({ name: v.name, label: v.label, image: img, opacity: v.opacity });
    }
    mark("volumes");
    var hasVolume = data.volumes.length > 0;
    nv.setSliceType(hasVolume ? nv.sliceTypeMultiplanar : nv.sliceTypeRender);
    if (!hasVolume) nv.setRenderAzimuthElevation(110, 15);
    buildControls(panel, state, hasVolume);
    // A panel hidden at start or later (a closed <details>, a hidden tab) has no size: resize the
    // canvas whenever it is shown again.
    var details = panel.closest("details");
    if (details) {
      details.addEventListener("toggle", function () {
        // Directly, not in an animation frame: reading the size forces the new layout, and a
        // background or headless tab may run no frame until something draws.
        if (details.open) nv.resizeListener();
      });
    }
    nv.drawScene();
    // Ready once the first picture is presented (two animation frames); a background tab runs no
    // frames, so at most 250 ms later.
    await new Promise(function (r) {
      requestAnimationFrame(function () { requestAnimationFrame(r); });
      setTimeout(r, 250);
    });
    mark("drawn");
    state.ok = true;
    panel.setAttribute("data-vf-state", "ready");
    return state;
  }

  function buildControls(panel, state, hasVolume) {
    var nv = state.nv, box = panel.querySelector(".vf-controls");
    function button(text, fn) {
      var b = document.createElement("button");
      b.type = "button";
      b.textContent = text;
      b.addEventListener("click", fn);
      box.appendChild(b);
      return b;
    }
    button("3D", function () { nv.setSliceType(nv.sliceTypeRender); });
    if (hasVolume) {
      button("slices + 3D", function () { nv.setSliceType(nv.sliceTypeMultiplanar); });
      button("axial", function () { nv.setSliceType(nv.sliceTypeAxial); });
      button("coronal", function () { nv.setSliceType(nv.sliceTypeCoronal); });
      button("sagittal", function () { nv.setSliceType(nv.sliceTypeSagittal); });
    }
    button("reset", function () {
      nv.setRenderAzimuthElevation(110, 15);
      nv.scene.pan2Dxyzmm = [0, 0, 0, 1];
      nv.drawScene();
    });
    state.meshes.forEach(function (item) {
      var label = document.createElement("label");
      var cb = document.createElement("input");
      cb.type = "checkbox";
      cb.checked = item.mesh.visible !== false;
      cb.addEventListener("change", function () { nv.setMeshProperty(item.mesh.id, "visible", cb.checked); });
      label.appendChild(cb);
      label.appendChild(document.createTextNode(" " + item.label));
      box.appendChild(label);
    });
    state.volumes.forEach(function (item, k) {
      var label = document.createElement("label");
      var cb = document.createElement("input");
      cb.type = "checkbox";
      cb.checked = true;
      cb.addEventListener("change", function () { nv.setOpacity(k, cb.checked ? item.opacity : 0); });
      label.appendChild(cb);
      label.appendChild(document.createTextNode(" " + item.label));
      box.appendChild(label);
    });
  }

  async function startAll() {
    var panels = Array.prototype.slice.call(document.querySelectorAll("[data-vf-viewer]"));
    for (var i = 0; i < panels.length; i++) {
      try {
        await start(panels[i]);
      } catch (e) {
        say(panels[i], "3D view failed: " + (e && e.message ? e.message : e));
        (viewers[panels[i].getAttribute("data-vf-viewer")] || {}).reason = "error";
        window.__vfError = String(e && e.stack ? e.stack : e);
      }
    }
    window.__vfReady = true;
    document.documentElement.setAttribute("data-vf-ready", "1");
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", startAll);
  else startAll();
})();
