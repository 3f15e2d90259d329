"""UDF meshing quality and speed on a real open surface: the VMTK aorta with open ends.

The exact unsigned distance volume of ``data/samples/vmtk_aorta/aorta-surface-open-ends.stl`` is
built on isotropic grids (voxel centres of the surface's box plus a margin; point-to-triangle
distance within ``--exact-band-mm`` of the surface, a distance transform farther out, see
:func:`exact_udf_volume`); only the meshing,
``mesh_udf(volume_udf_function(...))``, is timed. Reported per row: symmetric Chamfer, one-sided
pred -> target Chamfer, accuracy (90th percentile), completion (2 mm), all to the exact meshes
(``surface_metrics_from_meshes``); boundary edges of the output and of the input (open ends must
stay open); a no-caps check (output vertices farther than 1 mm from the input surface: a cap over
an open end lies up to a vessel radius away); meshing seconds and peak memory. A noisy row adds
Gaussian noise to the volume (clipped at 0).

    OMP_NUM_THREADS=1 python benchmarks/udf_meshing.py --spacings 0.5 0.3 --noise-mm 0.05
"""

from __future__ import annotations

import argparse
import datetime
import platform
import resource
import shlex
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SURFACE = ROOT / "data/samples/vmtk_aorta/aorta-surface-open-ends.stl"


def exact_udf_volume(mesh, spacing_mm: float, margin_mm: float, band_mm: float | None):
    """(volume (X, Y, Z) float32 mm, grid): the distance from each voxel centre to the mesh.

    Within ``band_mm`` of the surface (default: 4 sqrt(3) h, farther than the mesher's polish step
    ever reads: 3 kink + the cell diagonal) every voxel gets the exact point-to-triangle distance
    (MeshDistance; its fast mode was up to 0.13 mm high on this mesh's long triangles). Farther out, where the mesher only takes its first steps, the value is the
    Euclidean distance transform to the voxels that hold the surface (error below h sqrt(3)/2):
    a nearest-point search from deep inside the aorta is very slow (every wall point nearly as near).
    """
    from scipy import ndimage as ndi

    from vesselfield.grid import grid_over_box
    from vesselfield.metrics.surface import MeshDistance, sample_surface_points

    h = float(spacing_mm)
    band = 4 * np.sqrt(3) * h if band_mm is None else float(band_mm)
    grid = grid_over_box(np.asarray(mesh.bounds), h, margin_mm)
    samples = sample_surface_points(mesh.vertices, mesh.faces, int(20 * mesh.area / h ** 2) + 1000, seed=0)
    ijk = np.clip(np.rint(grid.world_to_index(samples)).astype(int), 0, np.asarray(grid.shape) - 1)
    holds = np.zeros(grid.shape, dtype=bool)
    holds[tuple(ijk.T)] = True
    d = ndi.distance_transform_edt(~holds, sampling=grid.spacing)
    near = d < band + h
    centres = grid.voxel_centers_mm(dtype=np.float64)[near]
    d[near] = MeshDistance(mesh)(centres)
    return d.astype(np.float32), grid


def boundary_edges(mesh) -> tuple[int, int, float]:
    """(edges used by one face, loops they form, their total length in mm)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from trimesh.grouping import group_rows

    edges = mesh.edges_sorted[group_rows(mesh.edges_sorted, require_count=1)]
    if len(edges) == 0:
        return 0, 0, 0.0
    nodes, inverse = np.unique(edges, return_inverse=True)
    inverse = inverse.reshape(-1, 2)
    graph = coo_matrix((np.ones(len(edges)), (inverse[:, 0], inverse[:, 1])), shape=(len(nodes), len(nodes)))
    loops = connected_components(graph, directed=False)[0]
    v = np.asarray(mesh.vertices)
    return len(edges), int(loops), float(np.linalg.norm(v[edges[:, 0]] - v[edges[:, 1]], axis=1).sum())


def run_row(name, volume, grid, target, config, n_points):
    from vesselfield.meshing.udf import mesh_udf, volume_udf_function
    from vesselfield.metrics.surface import MeshDistance, sample_surface_points, surface_metrics_from_meshes

    udf = volume_udf_function(volume, grid)
    tracemalloc.start()
    t0 = time.perf_counter()
    result = mesh_udf(udf, udf.bounds_mm, config)
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    metrics = surface_metrics_from_meshes(result.mesh, target, n_points=n_points, seed=0)
    to_target = MeshDistance(target)
    far = to_target(np.asarray(result.mesh.vertices)) > 1.0
    # A cap over an open end (radius 5-10 mm here) would put hundreds of mm² more than 1 mm off.
    samples = sample_surface_points(result.mesh.vertices, result.mesh.faces, n_points, seed=2)
    far_area = float(result.mesh.area) * float(np.mean(to_target(samples) > 1.0))
    return {"row": name, **metrics, "boundary_out": boundary_edges(result.mesh),
            "boundary_in": boundary_edges(target), "far_vertices": int(far.sum()), "far_area_mm2": far_area,
            "area_out": float(result.mesh.area), "area_in": float(target.area), "seconds": seconds,
            "peak_python_mib": peak / 2**20, "faces": len(result.mesh.faces), "details": result.details}


def main(argv=None):
    from vesselfield.io.meshes import load_mesh
    from vesselfield.meshing.udf import UdfMeshConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spacings", type=float, nargs="+", default=[0.5, 0.3])
    parser.add_argument("--noise-mm", type=float, default=0.05, help="Noise row on the first spacing (0: none).")
    parser.add_argument("--margin-mm", type=float, default=3.0)
    parser.add_argument("--exact-band-mm", type=float, default=None, help="Default 4 sqrt(3) x the spacing.")
    parser.add_argument("--metric-points", type=int, default=100_000)
    parser.add_argument("--set", nargs="*", default=[], help="UdfMeshConfig FIELD=VALUE items.")
    parser.add_argument("--cache", type=Path, default=None, help="Folder to keep the exact UDF volumes in (.npy).")
    args = parser.parse_args(argv)

    from vesselfield.config import build_config

    config = build_config(UdfMeshConfig, None, args.set)
    target = load_mesh(SURFACE)
    rows = []
    for spacing in args.spacings:
        from vesselfield.grid import grid_over_box

        cached = args.cache / f"aorta_udf_{spacing:g}_{args.margin_mm:g}_{args.exact_band_mm}.npy" if args.cache else None
        if cached is not None and cached.exists():
            grid = grid_over_box(np.asarray(target.bounds), spacing, args.margin_mm)
            volume = np.load(cached)
            grid.check_array(volume)
        else:
            volume, grid = exact_udf_volume(target, spacing, args.margin_mm, args.exact_band_mm)
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                np.save(cached, volume)
        rows.append(run_row(f"exact {spacing:g} mm {grid.shape}", volume, grid, target, config, args.metric_points))
        print(rows[-1], flush=True)
        if args.noise_mm > 0 and spacing == args.spacings[0]:
            rng = np.random.default_rng(0)
            noisy = np.clip(volume + rng.normal(0, args.noise_mm, volume.shape).astype(np.float32), 0, None)
            rows.append(run_row(f"noise {args.noise_mm:g} mm, {spacing:g} mm", noisy, grid, target, config,
                                args.metric_points))
            print(rows[-1], flush=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print()
    print(f"{datetime.date.today()}, {platform.processor() or platform.machine()}, "
          f"python {sys.version.split()[0]}; peak RSS of the whole script {rss:.0f} MiB")
    print("command: OMP_NUM_THREADS=1 python benchmarks/udf_meshing.py " + shlex.join(sys.argv[1:]))
    print()
    print("| volume | Chamfer (mm) | pred->target (mm) | accuracy 90 % (mm) | completion 2 mm | boundary loops "
          "out / in | boundary length out / in (mm) | area out / in (mm²) | area > 1 mm off (mm²) | vertices > 1 mm off | faces | meshing (s) | "
          "peak Python (MiB) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['row']} | {r['chamfer_mm']:.3f} | {r['chamfer_pred_to_target_mm']:.3f} | {r['accuracy_mm']:.3f} "
              f"| {r['completion']:.4f} | {r['boundary_out'][1]} / {r['boundary_in'][1]} | "
              f"{r['boundary_out'][2]:.0f} / {r['boundary_in'][2]:.0f} | {r['area_out']:.0f} / "
              f"{r['area_in']:.0f} | {r['far_area_mm2']:.1f} | {r['far_vertices']} | {r['faces']} | "
              f"{r['seconds']:.1f} | {r['peak_python_mib']:.0f} |")
    return rows


if __name__ == "__main__":
    main()
