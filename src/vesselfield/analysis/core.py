"""The analysis: topology from a thinned isotropic mask, geometry on the continuous wall field.

1. The field is sampled on an isotropic topology grid (or the input's own isotropic volume);
   ``field < 0`` is thinned (:mod:`vesselfield.analysis.skeleton`) into a branch graph with spurs
   pruned and small loops broken.
2. Every graph edge becomes a centreline: its voxel path is resampled every ``step_mm``,
   smoothed, and each sample is moved to the centroid of its cross-section in the normal plane
   (:func:`~vesselfield.analysis.cross_section.measure_sections`), ``centering_iterations``
   times; the centred path is resampled again and measured (area-equivalent radius, chords,
   inscribed radius, curvature). Samples in bifurcation zones are neither moved nor counted.
3. Each connected component is rooted (the endpoint with the largest radius, or the one
   nearest ``root_mm``) and oriented; loops are kept in the graph and cut in the SWC.
4. Bifurcation angles and Murray exponents; D(s) along every root-to-leaf path; lesions
   (:mod:`vesselfield.analysis.stenosis`).
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np

from vesselfield.analysis.config import AnalysisConfig
from vesselfield.analysis.cross_section import (arc_length, curvature_of, measure_sections, resample_polyline,
                                                smooth_polyline, tangents_of)
from vesselfield.analysis.result import (AnalyzedTree, Bifurcation, DiameterProfile, GraphNode, Lesion, Segment,
                                         cad_rads_grade)
from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid

BYTES_PER_TOPOLOGY_VOXEL = 26  # float32 field + bool mask + float64 depth + skeleton + thinning's own copies


def check_memory(grid: VolumeGrid, spacing_mm: float | None, max_memory_gb: float, bytes_per_voxel: float,
                 what: str) -> None:
    """A one-line error, before any work, when the analysis of ``grid`` (resampled to an isotropic
    ``spacing_mm``, default its finest spacing) would need more than ``max_memory_gb``."""
    h = float(spacing_mm) if spacing_mm is not None else float(min(grid.spacing_mm))
    extent = np.asarray(grid.shape, float) * np.asarray(grid.spacing_mm, float)
    iso_voxels = float(np.prod(np.maximum(1.0, np.floor(extent / h))))
    need_gb = (iso_voxels * BYTES_PER_TOPOLOGY_VOXEL + float(np.prod(grid.shape)) * bytes_per_voxel) / 1e9
    if need_gb > max_memory_gb:
        fits = h * (need_gb / max_memory_gb) ** (1 / 3) * 1.01
        raise VesselfieldError(f"analysing this {what} (its vessels' box: {tuple(grid.shape)} voxels) would need about "
                               f"{need_gb:.1f} GB (max_memory_gb {max_memory_gb:g}): pass --spacing {fits:.2g} or more, "
                               "or --set max_memory_gb=...")


def topology_grid(field, config: AnalysisConfig) -> VolumeGrid:
    """The isotropic grid the topology is computed on (see ``AnalysisConfig.spacing_mm``)."""
    lo, hi = np.asarray(field.lo_mm, float), np.asarray(field.hi_mm, float)
    if config.spacing_mm is not None:
        h = float(config.spacing_mm)
    elif field.spacing_mm is not None:
        h = float(field.spacing_mm)
    else:
        h = float((hi - lo).max()) / 192.0
    shape = np.maximum(1, np.floor((hi - lo) / h + 1e-9).astype(int))
    need_gb = float(np.prod(shape.astype(float))) * BYTES_PER_TOPOLOGY_VOXEL / 1e9
    if need_gb > config.max_memory_gb:
        fits = h * (need_gb / config.max_memory_gb) ** (1 / 3) * 1.01
        raise VesselfieldError(f"the analysis grid at {h:.3g} mm would have {tuple(int(s) for s in shape)} voxels and "
                               f"need about {need_gb:.1f} GB (max_memory_gb {config.max_memory_gb:g}): pass --spacing "
                               f"{fits:.2g} or more, or --set max_memory_gb=...")
    origin = lo + 0.5 * h + 0.5 * ((hi - lo) - shape * h)
    return VolumeGrid(tuple(int(s) for s in shape), (h, h, h), tuple(float(v) for v in origin))


def sample_on_grid(field, grid: VolumeGrid) -> np.ndarray:
    """(X, Y, Z) float32 field values at the voxel centres of ``grid``, slab by slab (the field's
    cheaper ``topology_evaluate`` when it has one)."""
    evaluate = field.topology_evaluate or field
    out = np.empty(grid.shape, dtype=np.float32)
    xs, ys, zs = grid.axes_mm()
    yy, zz = np.meshgrid(ys, zs, indexing="ij")
    plane = np.stack([np.zeros(yy.size), yy.ravel(), zz.ravel()], axis=1)
    for i, x in enumerate(xs):
        plane[:, 0] = x
        out[i] = np.asarray(evaluate(plane)).reshape(yy.shape)
    return out


def _components(nodes: list, edges: dict) -> dict:
    parent = {n: n for n in nodes}

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in edges.values():
        parent[find(a)] = find(b)
    roots = {}
    return {n: roots.setdefault(find(n), len(roots)) for n in nodes}


def _murray_exponent(parent_r: float, child_r: list) -> float:
    """x with parent_r^x = sum child_r^x, by bisection on [0.05, 50]; NaN without a solution."""
    ratios = np.asarray(child_r, float) / parent_r
    if len(ratios) < 2 or not np.all(np.isfinite(ratios)) or np.any(ratios >= 1) or np.any(ratios <= 0):
        return float("nan")
    lo, hi = 0.05, 50.0
    g = lambda x: float(np.sum(ratios ** x) - 1.0)  # noqa: E731  decreasing in x
    if g(lo) < 0 or g(hi) > 0:
        return float("nan")
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if g(mid) > 0 else (lo, mid)
    return 0.5 * (lo + hi)


def _point_at(seg, from_start: bool, distance_mm: float) -> np.ndarray:
    """The centreline point ``distance_mm`` along ``seg`` from its start (or its end)."""
    p = seg.points_mm if from_start else seg.points_mm[::-1]
    s = arc_length(p)
    d = min(distance_mm, 0.5 * s[-1])
    return np.array([np.interp(d, s, p[:, k]) for k in range(3)])


def _nearest_to_lines(lines, fallback: np.ndarray, max_shift_mm: float) -> np.ndarray:
    """The point minimising the summed squared distances to lines ``(point, direction)``; the
    fallback when the lines are nearly parallel or the point lies farther than ``max_shift_mm``."""
    a = np.zeros((3, 3))
    b = np.zeros(3)
    for p, u in lines:
        u = np.asarray(u, float)
        n = np.linalg.norm(u)
        if not n > 0:
            continue
        u = u / n
        m = np.eye(3) - np.outer(u, u)
        a += m
        b += m @ np.asarray(p, float)
    w = np.linalg.eigvalsh(a)
    if w[0] < 0.05 * len(lines):  # nearly parallel: no well-defined crossing
        return np.asarray(fallback, float)
    x = np.linalg.solve(a, b)
    return x if np.linalg.norm(x - fallback) <= max_shift_mm else np.asarray(fallback, float)


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return float("nan")
    return float(np.degrees(np.arccos(np.clip(np.dot(a, b) / (na * nb), -1.0, 1.0))))


class _Edge:
    """A measured, unoriented centreline between graph nodes a and b."""

    def __init__(self, a, b, arrays):
        self.a, self.b, self.arrays = a, b, arrays

    def reversed(self):
        return _Edge(self.b, self.a, {k: v[::-1].copy() for k, v in self.arrays.items()})

    def split(self, i: int):
        first = {k: v[: i + 1].copy() for k, v in self.arrays.items()}
        second = {k: v[i:].copy() for k, v in self.arrays.items()}
        return first, second


def _measure_edge(field, pts_mm, depth_mm, zones, fixed_ends, cfg: AnalysisConfig, h: float) -> dict:
    """Centre and measure one skeleton path (see the module docstring, step 2)."""
    step = cfg.step_mm
    raw, dep = resample_polyline(pts_mm, step, values=depth_mm)
    sigma = cfg.smoothing_mm / step
    p = smooth_polyline(raw, sigma)

    def zone_mask(points):
        z = np.zeros(len(points), dtype=bool)
        for centre, radius in zones:
            z |= np.linalg.norm(points - centre, axis=1) < radius
        return z

    movable = ~zone_mask(p)
    movable[0] &= not fixed_ends[0]
    movable[-1] &= not fixed_ends[1]
    reach = cfg.ray_reach * (np.maximum(dep, 0.0) + h)
    for _ in range(cfg.centering_iterations):
        if not movable.any():
            break
        t = tangents_of(smooth_polyline(p, sigma))
        sec = measure_sections(field, p[movable], t[movable], reach[movable], rays=cfg.rays, samples=cfg.ray_samples)
        p[movable] += sec.offset_mm
    p2, dep2 = resample_polyline(p, step, values=dep)
    # Sampled data (a mask's staircase, a coarse volume) leaves a wiggle of about a voxel's period in
    # the centroids; half the coarsest spacing of smoothing removes it and shortens a curve of radius
    # rho by only ~ (coarsest / 2)^2 / (2 rho^2) (0.3 % for a 1 mm voxel and rho 6 mm).
    if field.coarsest_mm:
        keep = zone_mask(p2)
        smoothed = smooth_polyline(p2, 0.5 * field.coarsest_mm / step)
        p2 = np.where(keep[:, None], p2, smoothed)
    t2 = tangents_of(smooth_polyline(p2, sigma))
    reach2 = cfg.ray_reach * (np.maximum(dep2, 0.0) + h)
    sec = measure_sections(field, p2, t2, reach2, rays=cfg.rays, samples=cfg.ray_samples)
    # Inscribed radius: |f| at the sample for a field known at every point (a network, an exact SDF);
    # on sampled data the largest circle about the sample in its section (min over the rays), because
    # interpolation rounds the SDF's kink on the axis (measured: |f| 0.3 voxel short on a sampled tube).
    in_plane = np.where(sec.closed, sec.r_mm.min(1), np.nan)
    inscribed = np.minimum(-sec.inside_value, in_plane) if field.is_distance and field.spacing_mm is None else in_plane
    inscribed = np.where(sec.inside_value < 0, inscribed, np.nan)
    curv = curvature_of(smooth_polyline(p2, max(sigma, 2.0)))
    return {
        "points_mm": p2, "radius_area_mm": sec.radius_area_mm, "radius_inscribed_mm": inscribed,
        "diameter_min_mm": sec.diameter_min_mm, "diameter_max_mm": sec.diameter_max_mm, "curvature_per_mm": curv,
        "in_bifurcation": zone_mask(p2), "valid": sec.closed, "depth_mm": dep2,
    }


def _fill_radius(arrays: dict, h: float) -> np.ndarray:
    """Area radii with the gaps (open sections) filled from the nearest measured sample, then the
    inscribed radius, then half a voxel: SWC radii must be positive."""
    r = np.asarray(arrays["radius_area_mm"], float).copy()
    ok = np.isfinite(r) & (r > 0)
    if ok.any() and not ok.all():
        idx = np.arange(len(r))
        r[~ok] = np.interp(idx[~ok], idx[ok], r[ok])
    elif not ok.any():
        ins = np.asarray(arrays["radius_inscribed_mm"], float)
        r = np.where(np.isfinite(ins) & (ins > 0), ins, 0.5 * h)
    return np.where(np.isfinite(r) & (r > 0), r, 0.5 * h)


def _refine_mld(field, span, s_mm, pts, diam, excluded, cfg: AnalysisConfig, count: int = 33) -> None:
    """Measure the sections densely (``count`` planes) within one sample step on both sides of the
    sampled minimum and keep the smallest diameter, in place: a tight lesion's throat is sharper
    than the sample step (a parabola through three samples misses it by up to 0.2 mm on a 90 %,
    3 mm stenosis)."""
    k = span.at
    a, b = max(k - 1, 0), min(k + 1, len(s_mm) - 1)
    if b - a < 1 or excluded[a:b + 1].any():
        return
    q = np.linspace(s_mm[a], s_mm[b], count)
    p = np.stack([np.interp(q, s_mm, pts[:, i]) for i in range(3)], axis=1)
    tangent = pts[b] - pts[a]
    t = np.tile(tangent / max(np.linalg.norm(tangent), 1e-12), (count, 1))
    reach = np.full(count, cfg.ray_reach * max(float(np.nanmax(diam[a:b + 1])), 1e-3))
    sec = measure_sections(field, p, t, reach, rays=cfg.rays, samples=cfg.ray_samples)
    d = 2 * sec.radius_area_mm
    if np.isfinite(d).any():
        j = int(np.nanargmin(d))
        if d[j] < span.mld_mm:
            span.mld_mm, span.s_mld_mm = float(d[j]), float(q[j])


def analyze_field(field, config: AnalysisConfig | None = None, *, root_mm=None,
                  topology: tuple[np.ndarray, VolumeGrid] | None = None) -> AnalyzedTree:
    """Centrelines, radii, branch graph, bifurcations and lesions of the vessels of ``field``.

    Args:
        field: a :class:`~vesselfield.analysis.fields.WallField` (negative inside, LPS mm).
        config: :class:`AnalysisConfig` (defaults when None).
        root_mm: (3,) a point inside a vessel (LPS mm): its component is rooted there.
        topology: (values, grid) the field already sampled on an isotropic grid (an SDF volume's
            own voxels), used instead of sampling it again.

    Returns:
        :class:`~vesselfield.analysis.result.AnalyzedTree`.
    """
    from scipy import ndimage

    from vesselfield.analysis.skeleton import simplify_graph, skeleton_graph

    cfg = config if config is not None else AnalysisConfig()
    timings = {}
    t0 = time.perf_counter()
    if topology is not None:
        values, grid = topology
        h = float(grid.spacing_mm[0])
        if cfg.spacing_mm is not None and abs(cfg.spacing_mm - h) > 1e-6 * h:
            topology = None
        elif not np.allclose(grid.spacing_mm, h, rtol=1e-6):
            topology = None
    if topology is not None:
        check_memory(grid, None, cfg.max_memory_gb, 0.0, "volume")
    if topology is None:
        grid = topology_grid(field, cfg)
        h = float(grid.spacing_mm[0])
        values = sample_on_grid(field, grid)
    timings["sample_s"] = time.perf_counter() - t0
    mask = np.asarray(values) < 0
    if not mask.any():
        raise VesselfieldError(f"no vessel to analyse: the {field.kind} is nowhere inside a vessel "
                               "(no negative value, so no wall / zero level)")
    if mask.all():
        raise VesselfieldError(f"no vessel wall to analyse: the {field.kind} is inside everywhere (no zero level)")
    nz = np.nonzero(mask)
    lo_idx = np.maximum(np.array([a.min() for a in nz]) - 2, 0)
    hi_idx = np.minimum(np.array([a.max() for a in nz]) + 3, np.array(mask.shape))
    crop = tuple(slice(int(a), int(b)) for a, b in zip(lo_idx, hi_idx))
    mask_c = np.pad(mask[crop], 1)
    if field.is_distance:
        depth_c = np.pad(np.where(mask[crop], -np.asarray(values[crop], np.float64), 0.0), 1)
    else:
        depth_c = np.maximum(ndimage.distance_transform_edt(mask_c, sampling=h) - 0.5 * h, 0.5 * h) * mask_c
    origin_c = np.asarray(grid.origin_mm) + (lo_idx - 1) * h
    t1 = time.perf_counter()
    graph, isolated = skeleton_graph(mask_c, depth_c, h)

    def crosses_wall(path_vox: np.ndarray) -> bool:
        # The midpoints of the path's steps on the continuous field: outside means the 26-connected
        # step jumped a gap between two vessels narrower than a voxel.
        mid = origin_c + 0.5 * (path_vox[1:] + path_vox[:-1]) * h
        return bool(len(mid)) and bool((field(mid) > 0).any())

    counts = simplify_graph(graph, h, prune_factor=cfg.prune_factor, min_branch_mm=cfg.min_branch_mm,
                            small_loop_factor=cfg.small_loop_factor, mask=mask_c, crosses_wall=crosses_wall)
    timings["topology_s"] = time.perf_counter() - t1
    if not graph.edges:
        if isolated:
            raise VesselfieldError(f"no centreline found: the {field.kind}'s skeleton is {isolated} isolated point(s), "
                                   "a blob rather than a vessel")
        raise VesselfieldError(f"no centreline found: the vessels of this {field.kind} are thinner than the "
                               f"{h:.3g} mm analysis grid can resolve (pass a smaller --spacing)")

    # ---- geometry of every edge
    t2 = time.perf_counter()
    deg = graph.degree()
    node_world = {n: origin_c + p * h for n, p in graph.node_pos.items()}
    edges = {}
    for e, (a, b, path) in graph.edges.items():
        zones = [(node_world[n], cfg.bifurcation_zone_factor * graph.node_depth[n])
                 for n in {a, b} if deg[n] >= 3 and cfg.bifurcation_zone_factor > 0]
        fixed = (deg[a] >= 2 or a == b, deg[b] >= 2 or a == b)
        arrays = _measure_edge(field, origin_c + path * h, graph.edge_depth[e], zones, fixed, cfg, h)
        edges[e] = _Edge(a, b, arrays)
        for end, idx in ((a, 0), (b, -1)):  # a tip node follows its centred end
            if deg[end] == 1:
                node_world[end] = arrays["points_mm"][idx].copy()
    timings["geometry_s"] = time.perf_counter() - t2

    # ---- end zones (a vessel's end: the section plane cuts its cap) and per-node radii
    for e, edge in edges.items():
        ar = edge.arrays
        ar["in_end_zone"] = np.zeros(len(ar["points_mm"]), dtype=bool)
        for end, idx in ((edge.a, 0), (edge.b, -1)):
            if deg[end] == 1:
                s = arc_length(ar["points_mm"])
                dist = s if idx == 0 else s[-1] - s
                near = ar["radius_area_mm"][dist < 4 * max(np.nanmax(ar["depth_mm"]), h)]
                near = near[np.isfinite(near)]
                r_end = float(np.median(near)) if len(near) else graph.node_depth[end]
                ar["in_end_zone"] |= dist < r_end
    node_ids = sorted(graph.node_pos)
    comp = _components(node_ids, {e: (ed.a, ed.b) for e, ed in edges.items()})

    def end_radius(n):
        vals = []
        for ed in edges.values():
            for end, idx in ((ed.a, 0), (ed.b, -1)):
                if end == n:
                    ar = ed.arrays
                    s = arc_length(ar["points_mm"])
                    dist = s if idx == 0 else s[-1] - s
                    pick = (dist < 2.0 + 3 * graph.node_depth[n]) & ar["valid"] & ~ar["in_bifurcation"]
                    vals.extend(ar["radius_area_mm"][pick].tolist())
        vals = [v for v in vals if np.isfinite(v)]
        return float(np.median(vals)) if vals else graph.node_depth[n]

    # ---- roots
    warnings = []
    roots = {}
    for n in node_ids:
        c = comp[n]
        if deg[n] == 1:
            r = end_radius(n)
            if c not in roots or r > roots[c][1]:
                roots[c] = (n, r)
    for n in node_ids:  # components without an endpoint (a closed loop)
        if comp[n] not in roots:
            roots[comp[n]] = (n, graph.node_depth[n])
    root_of = {c: n for c, (n, _) in roots.items()}
    next_node = max(node_ids) + 1
    if root_mm is not None:
        q = np.asarray(root_mm, float).reshape(3)
        best = None
        for e, ed in edges.items():
            d = np.linalg.norm(ed.arrays["points_mm"] - q, axis=1)
            i = int(np.argmin(d))
            if best is None or d[i] < best[0]:
                best = (float(d[i]), e, i)
        dist, e, i = best
        ed = edges[e]
        r_here = _fill_radius(ed.arrays, h)[i]
        inside = float(field(q[None])[0]) < 0
        if not inside and dist > r_here + h:
            raise VesselfieldError(f"--root {q[0]:g} {q[1]:g} {q[2]:g} is outside every vessel: the nearest centreline "
                                   f"is {dist:.2f} mm away")
        n_pts = len(ed.arrays["points_mm"])
        if i <= 1:
            new_root = ed.a
        elif i >= n_pts - 2:
            new_root = ed.b
        else:
            first, second = ed.split(i)
            new_root = next_node
            next_node += 1
            node_world[new_root] = first["points_mm"][-1].copy()
            graph.node_depth[new_root] = float(-field(node_world[new_root][None])[0]) if field.is_distance \
                else float(_fill_radius(first, h)[-1])
            deg[new_root] = 2
            comp[new_root] = comp[ed.a]
            del edges[e]
            e1 = max([e, *edges]) + 1
            edges[e1] = _Edge(ed.a, new_root, first)
            edges[e1 + 1] = _Edge(new_root, ed.b, second)
            node_ids.append(new_root)
        root_of[comp[new_root]] = new_root

    # ---- orientation (BFS from each root), loops
    incident = {n: [] for n in node_ids}
    for e, ed in edges.items():
        incident[ed.a].append(e)
        if ed.b != ed.a:
            incident[ed.b].append(e)
    order, entering, chords = [], {}, []
    oriented = {}
    visited = set()
    for c in sorted(root_of):
        r = root_of[c]
        visited.add(r)
        entering[r] = -1
        queue = deque([r])
        while queue:
            cur = queue.popleft()
            for e in sorted(incident[cur]):
                if e in oriented:
                    continue
                ed = edges[e]
                ed = ed if ed.a == cur else ed.reversed()
                oriented[e] = ed
                order.append(e)
                if ed.b in visited:
                    chords.append(e)
                else:
                    visited.add(ed.b)
                    entering[ed.b] = e
                    queue.append(ed.b)
    seg_index = {e: i for i, e in enumerate(order)}

    segments = []
    for e in order:
        ed = oriented[e]
        ar = ed.arrays
        parent_seg = entering.get(ed.a, -1)
        stats = ar["valid"] & ~ar["in_bifurcation"] & ~ar["in_end_zone"]
        if not stats.any():
            stats = ar["valid"]
        radii = ar["radius_area_mm"][stats]
        length = float(arc_length(ar["points_mm"])[-1])
        segments.append(Segment(
            segment_id=seg_index[e], parent_id=seg_index[parent_seg] if parent_seg >= 0 else -1,
            start_node=int(ed.a), end_node=int(ed.b), component=int(comp[ed.a]),
            points_mm=ar["points_mm"], radius_area_mm=ar["radius_area_mm"],
            radius_inscribed_mm=ar["radius_inscribed_mm"], diameter_min_mm=ar["diameter_min_mm"],
            diameter_max_mm=ar["diameter_max_mm"], curvature_per_mm=ar["curvature_per_mm"],
            in_bifurcation=ar["in_bifurcation"], valid=ar["valid"], length_mm=length,
            chord_mm=float(np.linalg.norm(ar["points_mm"][-1] - ar["points_mm"][0])),
            mean_radius_mm=float(np.mean(radii)) if len(radii) else float("nan"),
            min_radius_mm=float(np.min(radii)) if len(radii) else float("nan"),
            mean_curvature_per_mm=float(np.mean(ar["curvature_per_mm"])),
            in_end_zone=ar["in_end_zone"]))

    # ---- graph nodes (ids renumbered 0..)
    node_new = {n: i for i, n in enumerate(sorted(set(node_ids)))}
    children = {n: [] for n in node_new}
    for s in segments:
        if s.segment_id not in [seg_index[c] for c in chords]:
            children[s.start_node].append(s.segment_id)
    chord_ids = {seg_index[c] for c in chords}
    nodes = []
    for n, i in node_new.items():
        d = sum(1 for s in segments if s.start_node == n) + sum(1 for s in segments if s.end_node == n)
        if n in root_of.values():
            kind = "root"
        elif d == 1:
            kind = "endpoint"
        elif d >= 3:
            kind = "bifurcation"
        else:
            kind = "loop"
        depth = graph.node_depth.get(n, float("nan"))
        nodes.append(GraphNode(i, kind, np.asarray(node_world[n], float), float(depth), int(d), int(comp[n])))
    for s in segments:
        s.start_node, s.end_node = node_new[s.start_node], node_new[s.end_node]
    children = {node_new[n]: v for n, v in children.items()}

    # ---- bifurcations
    def direction(seg: Segment, from_start: bool, start_mm: float) -> np.ndarray:
        p = seg.points_mm if from_start else seg.points_mm[::-1]
        s = arc_length(p)
        r = seg.mean_radius_mm if np.isfinite(seg.mean_radius_mm) else start_mm
        d1 = min(start_mm, 0.5 * s[-1])
        d2 = min(d1 + max(2.0, cfg.angle_length_factor * r), s[-1])
        a = np.array([np.interp(d1, s, p[:, k]) for k in range(3)])
        b = np.array([np.interp(d2, s, p[:, k]) for k in range(3)])
        if np.linalg.norm(b - a) < 1e-9:
            b, a = p[-1], p[0]
        chord = b - a
        # The least-squares line through the samples of the stretch (a sampled input's centreline
        # wiggles by a fraction of a voxel; two end points would carry all of it into the angle).
        inner = p[(s >= d1) & (s <= d2)]
        if len(inner) >= 3:
            centred = inner - inner.mean(0)
            axis = np.linalg.svd(centred, full_matrices=False)[2][0]
            return axis * np.sign(np.dot(axis, chord)) * np.linalg.norm(chord)
        return chord

    def seg_radius(k: int) -> float:
        r = segments[k].mean_radius_mm
        return float(r) if np.isfinite(r) else float(graph.node_depth.get(segments[k].start_node, h))

    def separation_mm(kids: list, dirs: list, zone_r: float) -> list:
        """Per child, the distance from the junction where its tube has left every sibling's:
        axes at angle theta apart are r_a + r_b apart at (r_a + r_b) / (2 sin(theta / 2))."""
        out = []
        for i, k in enumerate(kids):
            d = zone_r
            for j, kk in enumerate(kids):
                if j == i:
                    continue
                theta = np.radians(_angle_deg(dirs[i], dirs[j]))
                if np.isfinite(theta) and theta > 1e-3:
                    d = max(d, (seg_radius(k) + seg_radius(kk)) / (2 * np.sin(theta / 2)))
            out.append(float(d))
        return out

    bifurcations, restat, widened = [], set(), {}
    for node in nodes:
        kids = [k for k in children[node.node_id] if k not in chord_ids]
        enter = [s.segment_id for s in segments if s.end_node == node.node_id and s.segment_id not in chord_ids]
        parent_seg = enter[0] if enter else -1
        if len(kids) < 2 or (parent_seg < 0 and node.kind != "root"):
            continue
        zone_r = cfg.bifurcation_zone_factor * node.radius_mm
        kids = sorted(kids, key=lambda k: -(segments[k].mean_radius_mm if np.isfinite(segments[k].mean_radius_mm)
                                            else 0.0))
        # Children that leave at a narrow angle share their sections with a sibling well past the
        # junction's zone: their directions are measured from where the tubes separate (two rounds:
        # the angle gives the separation, the separation a better angle), and the shared stretch
        # is left out of the segment's radius statistics.
        dirs = [direction(segments[k], True, zone_r) for k in kids]
        for _ in range(2):
            sep = separation_mm(kids, dirs, zone_r)
            dirs = [direction(segments[k], True, d) for k, d in zip(kids, sep)]
        for k, d in zip(kids, sep):
            seg = segments[k]
            shared = arc_length(seg.points_mm) < d
            if (shared & ~seg.in_bifurcation).any():
                widened[k] = widened.get(k, seg.in_bifurcation) | shared
                restat.add(k)
        if parent_seg >= 0:
            travel = -direction(segments[parent_seg], False, zone_r)
            to_parent = [_angle_deg(d, travel) for d in dirs]
        else:
            travel, to_parent = None, [float("nan")] * len(kids)
        # The branch point: the point nearest (least squares) to the branches' axes, each a line
        # through its measured stretch. The skeleton's junction lies downstream of it where the
        # children leave at a narrow angle (1.6 mm for a 20 / 30 deg Y of 2 mm radius).
        lines = [(_point_at(segments[k], True, d), u) for k, d, u in zip(kids, sep, dirs)]
        if travel is not None:
            lines.append((_point_at(segments[parent_seg], False, zone_r), travel))
        position = _nearest_to_lines(lines, node.position_mm, max_shift_mm=2 * max(zone_r, max(sep)))
        bifurcations.append(Bifurcation(
            node_id=node.node_id, parent_segment=parent_seg, child_segments=kids, position_mm=position,
            parent_radius_mm=float("nan"), child_radii_mm=[], angle_between_children_deg=_angle_deg(dirs[0], dirs[1]),
            angles_to_parent_deg=to_parent, murray_exponent=float("nan")))
    for k in restat:  # segment statistics without the shared stretches (stenosis detection keeps them: a
        seg = segments[k]  # sibling's tube can only widen a section there, never narrow it)
        stats = seg.valid & ~widened[k] & ~seg.in_end_zone
        radii = seg.radius_area_mm[stats if stats.any() else seg.valid]
        seg.mean_radius_mm = float(np.mean(radii)) if len(radii) else float("nan")
        seg.min_radius_mm = float(np.min(radii)) if len(radii) else float("nan")
    for b in bifurcations:
        b.parent_radius_mm = float(segments[b.parent_segment].mean_radius_mm) if b.parent_segment >= 0 \
            else float("nan")
        b.child_radii_mm = [float(segments[k].mean_radius_mm) for k in b.child_segments]
        b.murray_exponent = _murray_exponent(b.parent_radius_mm, b.child_radii_mm) \
            if np.isfinite(b.parent_radius_mm) else float("nan")

    # ---- root-to-leaf paths and lesions
    from vesselfield.analysis.stenosis import find_lesions, reference_diameter

    paths = []
    for c in sorted(root_of):
        start = node_new[root_of[c]]
        stack = [(k, [k]) for k in reversed(children[start])]
        while stack:
            k, trail = stack.pop()
            nxt = [] if k in chord_ids else children[segments[k].end_node]
            if not nxt:
                paths.append(trail)
            for kk in reversed(nxt):
                stack.append((kk, trail + [kk]))
    # The smallest radius the data resolves: one topology voxel, and half the input's coarsest voxel.
    limit = max(h, 0.5 * (field.coarsest_mm or 0.0))
    profiles, lesions, seen, unresolved = [], [], set(), 0
    # A narrowing shorter than the data's coarsest voxel is not resolved by the data (a mask's staircase).
    min_lesion = max(cfg.min_lesion_mm, field.coarsest_mm or 0.0)
    for pi, trail in enumerate(paths):
        pts, diam, excl, seg_of, idx_of = [], [], [], [], []
        for j, k in enumerate(trail):
            s = segments[k]
            sl = slice(1 if j else 0, None)
            pts.append(s.points_mm[sl])
            diam.append(2 * s.radius_area_mm[sl])
            excl.append((~s.valid | s.in_bifurcation | s.in_end_zone)[sl])
            seg_of.append(np.full(len(s.points_mm[sl]), k))
            idx_of.append(np.arange(len(s.points_mm))[sl])
        pts, diam, excl = np.concatenate(pts), np.concatenate(diam), np.concatenate(excl)
        seg_of, idx_of = np.concatenate(seg_of), np.concatenate(idx_of)
        s_mm = arc_length(pts)
        med = np.nanmedian(np.where(excl, np.nan, diam)) if (~excl).any() else np.nan
        window = cfg.reference_window_mm or max(5.0, 3 * (med if np.isfinite(med) else 1.0))
        ref, healthy = reference_diameter(s_mm, diam, excl, seg_of, threshold=cfg.lesion_threshold, window_mm=window)
        profiles.append(DiameterProfile(list(trail), s_mm, diam, ref, excl))
        for span in find_lesions(s_mm, diam, ref, healthy, excl, threshold=cfg.lesion_threshold,
                                 min_length_mm=min_lesion, window_mm=window):
            key = (int(seg_of[span.at]), int(idx_of[span.at]))
            if key in seen:
                continue
            seen.add(key)
            if not field.coarsest_mm:  # on sampled data the densest minimum would pick the staircase's trough
                _refine_mld(field, span, s_mm, pts, diam, excl, cfg)
            finite = np.isfinite(ref)
            span.reference_mm = float(np.interp(span.s_mld_mm, s_mm[finite], ref[finite]))
            ref_graded = span.reference_mm if cfg.reference_method == "interpolated" else span.reference_mean_local_mm
            if not ref_graded >= 2 * limit:  # a vessel at the data's limit is not graded
                unresolved += 1
                continue
            ratio = span.mld_mm / ref_graded if ref_graded > 0 else float("nan")
            ml = span.mld_mm / span.reference_mean_local_mm if span.reference_mean_local_mm > 0 else float("nan")
            point = np.array([np.interp(span.s_mld_mm, s_mm, pts[:, k]) for k in range(3)])
            pds = 100 * (1 - ratio)
            lesions.append(Lesion(
                path=pi, segment_id=key[0], position_mm=float(span.s_mld_mm), point_mm=point, mld_mm=span.mld_mm,
                reference_diameter_mm=float(ref_graded), reference_diameter_mean_local_mm=span.reference_mean_local_mm,
                percent_diameter_stenosis=float(pds), percent_diameter_stenosis_mean_local=float(100 * (1 - ml)),
                percent_area_stenosis=float(100 * (1 - ratio ** 2)), lesion_length_mm=span.length_mm,
                grade=cad_rads_grade(pds)))

    # ---- loops (segment ids on each cycle) and the SWC forest
    loops = []
    for e in chords:
        ed = oriented[e]

        def up(n):
            trail = []
            while entering.get(n, -1) >= 0:
                trail.append(entering[n])
                n = oriented[entering[n]].a
            return trail

        ua, ub = up(ed.a), up(ed.b)
        common = set(ua) & set(ub)
        loops.append([seg_index[x] for x in ua if x not in common] + [seg_index[x] for x in ub if x not in common]
                     + [seg_index[e]])
    swc_pts, swc_r, swc_parent, swc_label = [], [], [], []
    swc_of = {}

    def add(p, r, par, label):
        swc_pts.append(p)
        swc_r.append(r)
        swc_parent.append(par)
        swc_label.append(label)
        return len(swc_pts) - 1

    for s in segments:
        r = _fill_radius({"radius_area_mm": s.radius_area_mm, "radius_inscribed_mm": s.radius_inscribed_mm}, h)
        if s.start_node not in swc_of:
            swc_of[s.start_node] = add(s.points_mm[0], r[0], -1, s.segment_id + 1)
        prev = swc_of[s.start_node]
        n = len(s.points_mm)
        if s.segment_id in chord_ids:
            mid = n // 2
            for i in range(1, mid + 1):
                prev = add(s.points_mm[i], r[i], prev, s.segment_id + 1)
            prev = swc_of[s.end_node]
            for i in range(n - 2, mid, -1):
                prev = add(s.points_mm[i], r[i], prev, s.segment_id + 1)
            continue
        for i in range(1, n):
            prev = add(s.points_mm[i], r[i], prev, s.segment_id + 1)
        swc_of[s.end_node] = prev

    if loops:
        warnings.append(f"{len(loops)} closed loop(s) kept in graph.json; tree.swc cannot hold a loop and cuts each "
                        "at the middle of one of its segments")
    finite_r = [s.min_radius_mm for s in segments if np.isfinite(s.min_radius_mm)]
    if unresolved:
        warnings.append(f"{unresolved} narrowing(s) on vessels thinner than the data resolves (reference radius "
                        f"below {limit:.3g} mm) were not graded")
    if finite_r and min(finite_r) < limit:
        warnings.append(f"vessels as thin as {min(finite_r):.2f} mm radius are at the data's limit: the smallest "
                        f"radius this input measures is about {limit:.3g} mm (a finer input, or a smaller --spacing)")
    total_samples = sum(len(s.points_mm) for s in segments)
    open_share = 1 - sum(int(s.valid.sum()) for s in segments) / max(total_samples, 1)
    timings["total_s"] = time.perf_counter() - t0
    details = {"spacing_mm": h, "topology_shape": list(mask_c.shape), "spurs_pruned": counts["spurs"],
               "small_loops_broken": counts["small_loops"], "bridges_cut": counts["bridges"], "isolated_skeleton_voxels": isolated,
               "samples": total_samples, "open_sections": float(open_share), **timings}
    return AnalyzedTree(
        points_mm=np.asarray(swc_pts), radius_mm=np.asarray(swc_r), parent=np.asarray(swc_parent),
        labels=np.asarray(swc_label), segments=segments, nodes=nodes, bifurcations=bifurcations, lesions=lesions,
        paths=profiles, loops=loops, input_kind=field.kind, spacing_mm=h, warnings=warnings, details=details)
