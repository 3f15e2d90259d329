"""The interactive 3D view (issue 17): page size, build time and time to ready in headless Chromium.

Cases:

- ``demo``: the demo's reconstruction report (``vesselfield demo``; run here into ``--out`` unless
  ``--demo-dir`` names an existing demo folder);
- ``500k``: a left coronary phantom meshed to about 500,000 triangles at 0.1 mm, its exact surface as
  the reference (an error layer), a 128^3 CT-like volume and the phantom's occupancy as overlay,
  through the CT report's builder (``report.viewer.build.ct_scene``).

For each page: the Python build time of the view (scene + encoding), the page size, and the
time from navigation to ``window.__vfReady`` in headless Chromium with software WebGL2
(swiftshader): the first open in each of ``--fresh`` newly launched browsers (no code or shader
cache), and the median of ``--repeats`` warm opens after that. ``--screenshot PATH`` saves the
demo report's 3D panel for the README.

    python benchmarks/viewer_speed.py --out /tmp/viewer_bench --screenshot docs/figures/viewer_demo.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def coronary_case(out: Path) -> tuple[Path, dict]:
    """The 500k-triangle page; returns its path and the build facts."""
    from vesselfield.grid import VolumeGrid, grid_over_box
    from vesselfield.meshing import mesh_from_volume
    from vesselfield.phantoms.coronary import TreePhantom, coronary_tree
    from vesselfield.report.html import ReportPage
    from vesselfield.report.viewer.build import ct_scene

    phantom = TreePhantom(coronary_tree("left", seed=0))
    lo, hi = phantom.bounds_mm()
    # Marching cubes at 0.25 mm, then one 1-to-4 subdivision: about 500k triangles on the true
    # surface's 0.25 mm approximation (a finer grid would need ~10^8 voxels).
    grid = grid_over_box((lo, hi), 0.25, margin_mm=0.5)
    coarse = mesh_from_volume(phantom.sdf_volume(grid), grid, 0.0, inside="below")
    mesh = coarse.subdivide()
    ref_grid = grid_over_box((lo, hi), 0.2, margin_mm=0.4)
    reference = mesh_from_volume(phantom.sdf_volume(ref_grid), ref_grid, 0.0, inside="below")
    # A 128^3 CT-like volume over the tree: vessels bright, noise.
    ct_grid = VolumeGrid.centered((128, 128, 128), float(np.max(hi - lo) + 4.0) / 128,
                                  center_mm=tuple(0.5 * (lo + hi)))
    occupancy = phantom.occupancy(ct_grid)
    image = (350.0 * occupancy + np.random.default_rng(0).normal(40.0, 25.0, ct_grid.shape)).astype(np.float32)
    t0 = time.perf_counter()
    page = ReportPage("500k-triangle case")
    page.add_viewer(ct_scene(image, ct_grid, overlay=occupancy, mesh=mesh, reference=reference))
    path = page.write(out / "case500k" / "report.html")
    build_s = time.perf_counter() - t0
    return path, {"faces": int(len(mesh.faces)), "reference_faces": int(len(reference.faces)),
                  "volume": "128^3", "build_s": build_s}


def demo_report(out: Path, demo_dir: Path | None) -> tuple[Path, dict]:
    if demo_dir is None:
        demo_dir = out / "demo"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "vesselfield", "demo", "--out", str(demo_dir)], check=True,
                       stdout=subprocess.DEVNULL)
        facts = {"demo_s": time.perf_counter() - t0}
    else:
        facts = {}
    return demo_dir / "reconstruction" / "report.html", facts


def demo_view_build_seconds(demo_dir: Path) -> float:
    """Rebuild the demo report's 3D view alone from its files (mesh, truth, geometry, tree)."""
    from vesselfield.geometry import load_geometry
    from vesselfield.io.meshes import load_mesh
    from vesselfield.io.swc import load_swc
    from vesselfield.io.volumes import load_volume
    from vesselfield.report.viewer.build import xray_scene
    from vesselfield.report.viewer.page import viewer_payload

    geometry = load_geometry(demo_dir / "geometry.json")
    mesh = load_mesh(demo_dir / "reconstruction" / "mesh.stl")
    gt, _ = load_volume(demo_dir / "phantom_occupancy.nii.gz", geometry.volume)
    tree = load_swc(demo_dir / "reconstruction" / "analysis" / "tree.swc")
    t0 = time.perf_counter()
    viewer_payload(xray_scene(geometry, mesh=mesh, gt_occupancy=gt, analysis=tree))
    return time.perf_counter() - t0


def time_to_ready(path: Path, repeats: int, fresh: int = 3, screenshot: Path | None = None) -> dict:
    """First opens in ``fresh`` newly launched browsers (a fresh profile: no code or shader cache),
    then ``repeats`` more opens in the last one (warm)."""
    from vesselfield.report.viewer.browser import browser, open_page

    def one(ctx, shot=None):
        page, check = open_page(ctx, path)
        if check.problems():
            raise SystemExit(f"{path}: {check.problems()}")
        if shot is not None:
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.locator(".vf-panel").screenshot(path=str(shot))
        page.close()
        return check.seconds_to_ready, check.viewers["vf-view-1"]["timings_ms"]

    first, warm, stages = [], [], None
    for k in range(fresh):
        with browser() as ctx:
            seconds, stages = one(ctx, screenshot if k == 0 else None)
            first.append(seconds)
            if k == fresh - 1:
                warm = [one(ctx)[0] for _ in range(repeats)]
    return {"first_s": first, "first_median_s": statistics.median(first),
            "median_s": statistics.median(warm) if warm else float("nan"), "stages_ms": stages}


def measure(path: Path, repeats: int, fresh: int, screenshot: Path | None = None) -> dict:
    """:func:`time_to_ready` in a new Python process: the browser then competes with nothing left
    running in this one (the builders' thread pools, their memory)."""
    cmd = [sys.executable, __file__, "--measure", str(path), "--repeats", str(repeats), "--fresh", str(fresh),
           "--out", str(path.parent)]
    if screenshot is not None:
        cmd += ["--screenshot", str(screenshot)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--demo-dir", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=5, help="warm opens after the first ones")
    parser.add_argument("--fresh", type=int, default=3, help="first opens, each in a newly launched browser")
    parser.add_argument("--screenshot", type=Path, default=None)
    parser.add_argument("--cases", nargs="+", default=["demo", "500k"])
    parser.add_argument("--measure", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure is not None:
        print(json.dumps(time_to_ready(args.measure, args.repeats, args.fresh, args.screenshot)))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    if "demo" in args.cases:
        path, facts = demo_report(args.out, args.demo_dir)
        facts["build_s"] = demo_view_build_seconds(path.parent.parent)
        rows.append(("demo", path, facts, measure(path, args.repeats, args.fresh, args.screenshot)))
    if "500k" in args.cases:
        path, facts = coronary_case(args.out)
        rows.append(("500k", path, facts, measure(path, args.repeats, args.fresh)))
    print("| case | page (MB) | data.js (MB) | view build (s) | first open to ready, fresh browsers (s) | "
          f"median of {args.repeats} warm opens (s) | facts |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, path, facts, t in rows:
        data = path.parent / "report_files" / "data.js"
        data_mb = f"{data.stat().st_size / 1e6:.2f}" if data.is_file() else "-"
        firsts = ", ".join(f"{s:.2f}" for s in t["first_s"])
        print(f"| {name} | {path.stat().st_size / 1e6:.2f} | {data_mb} | {facts['build_s']:.2f} | "
              f"{t['first_median_s']:.2f} ({firsts}) | {t['median_s']:.2f} | "
              f"{json.dumps({**facts, 'stages_ms': t['stages_ms']})} |")


if __name__ == "__main__":
    main()
