"""The branch graph of a vessel mask: thinning (scikit-image, Lee et al. 1994), junction clusters,
spur pruning, small-loop breaking, degree-2 merging.

The graph lives in voxel indices of an isotropic grid; :mod:`vesselfield.analysis.core` turns
its edges into centred, measured centrelines on the continuous field.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_OFFSETS = np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)
                     if (i, j, k) != (0, 0, 0)], dtype=np.int64)


@dataclass
class SkeletonGraph:
    """A multigraph of skeleton paths, in voxel units of an isotropic grid.

    Attributes:
        node_pos: {node id: (3,) float64 voxel position (junction clusters: their mean)}.
        node_depth: {node id: inscribed radius at the node, mm (largest over its voxels)}.
        edges: {edge id: (a, b, path)}: path an (n, 3) float64 voxel array from node a to node b,
            both ends included (node positions).
        edge_depth: {edge id: (n,) inscribed radius along the path, mm}.
    """

    node_pos: dict = field(default_factory=dict)
    node_depth: dict = field(default_factory=dict)
    edges: dict = field(default_factory=dict)
    edge_depth: dict = field(default_factory=dict)
    _next_node: int = 0
    _next_edge: int = 0

    def add_node(self, pos, depth) -> int:
        n = self._next_node
        self._next_node += 1
        self.node_pos[n] = np.asarray(pos, dtype=np.float64)
        self.node_depth[n] = float(depth)
        return n

    def add_edge(self, a: int, b: int, path, depth) -> int:
        e = self._next_edge
        self._next_edge += 1
        self.edges[e] = (a, b, np.asarray(path, dtype=np.float64))
        self.edge_depth[e] = np.asarray(depth, dtype=np.float64)
        return e

    def degree(self) -> dict:
        deg = {n: 0 for n in self.node_pos}
        for a, b, _ in self.edges.values():
            deg[a] += 1
            deg[b] += 1
        return deg

    def incident(self) -> dict:
        inc = {n: [] for n in self.node_pos}
        for e, (a, b, _) in self.edges.items():
            inc[a].append(e)
            if b != a:
                inc[b].append(e)
        return inc

    def edge_length(self, e: int, spacing_mm: float) -> float:
        path = self.edges[e][2]
        return float(np.linalg.norm(np.diff(path, axis=0), axis=1).sum() * spacing_mm)


def skeleton_graph(mask: np.ndarray, depth_mm: np.ndarray, spacing_mm: float) -> tuple[SkeletonGraph, int]:
    """Thin ``mask`` and trace its skeleton into a :class:`SkeletonGraph`.

    Args:
        mask: (X, Y, Z) bool, isotropic voxels.
        depth_mm: (X, Y, Z) inscribed radius (distance to the background), mm.
        spacing_mm: the voxel size, mm.

    Returns:
        (graph, isolated): ``isolated`` counts single skeleton voxels with no neighbour (dropped).
    """
    from skimage.morphology import skeletonize

    skel = skeletonize(mask) > 0
    coords = np.argwhere(skel)
    graph = SkeletonGraph()
    if len(coords) == 0:
        return graph, 0
    index = np.full(skel.shape, -1, dtype=np.int64)
    index[tuple(coords.T)] = np.arange(len(coords))
    padded = np.pad(index, 1, constant_values=-1)
    neigh = np.stack([padded[tuple((coords + 1 + o).T)] for o in _OFFSETS], axis=1)  # (M, 26)
    degree = (neigh >= 0).sum(1)
    depth = depth_mm[tuple(coords.T)].astype(np.float64)
    nbrs = [row[row >= 0] for row in neigh]

    # Node voxels: ends (degree 1) and junction voxels (degree >= 3), clustered by adjacency.
    is_node = degree != 2
    node_of = np.full(len(coords), -1, dtype=np.int64)
    isolated = 0
    for v in np.nonzero(is_node)[0]:
        if node_of[v] >= 0:
            continue
        if degree[v] == 0:
            isolated += 1
            continue
        cluster, stack = [v], [v]
        node_of[v] = -2
        while stack:
            u = stack.pop()
            for w in nbrs[u]:
                if is_node[w] and degree[w] >= 3 and degree[u] >= 3 and node_of[w] == -1:
                    node_of[w] = -2
                    cluster.append(w)
                    stack.append(w)
        n = graph.add_node(coords[cluster].mean(0), depth[cluster].max())
        node_of[cluster] = n

    visited_step = set()
    seen = np.zeros(len(coords), dtype=bool)

    def trace(start: int, first: int):
        path = [start, first]
        prev, cur = start, first
        while node_of[cur] < 0:
            seen[cur] = True
            nxt = [w for w in nbrs[cur] if w != prev]
            if not nxt:
                break
            prev, cur = cur, nxt[0]
            if cur == start and node_of[cur] < 0:
                break
            path.append(cur)
        return path, prev, cur

    for v in np.nonzero(node_of >= 0)[0]:
        for w in nbrs[v]:
            if node_of[w] == node_of[v] or (v, w) in visited_step:
                continue
            path, prev, end = trace(v, w)
            if node_of[end] < 0:  # a dead end inside a path cannot happen in a thin skeleton; skip it
                continue
            visited_step.add((v, w))
            visited_step.add((end, prev))
            pts = coords[path].astype(np.float64)
            dep = depth[path]
            pts[0] = graph.node_pos[node_of[v]]
            pts[-1] = graph.node_pos[node_of[end]]
            graph.add_edge(int(node_of[v]), int(node_of[end]), pts, dep)

    # Closed loops of degree-2 voxels with no node: one voxel becomes a node.
    for v in np.nonzero((~is_node) & (~seen))[0]:
        if seen[v]:
            continue
        n = graph.add_node(coords[v], depth[v])
        node_of[v] = n
        seen[v] = True
        path, _, end = trace(v, nbrs[v][0])
        pts = coords[path + [v]].astype(np.float64)
        graph.add_edge(n, n, pts, depth[path + [v]])
    return graph, isolated


def _merge_degree_two(graph: SkeletonGraph) -> None:
    """Join the two edges of every node of degree 2 (not a self-loop) into one."""
    changed = True
    while changed:
        changed = False
        inc = graph.incident()
        for n, edges in inc.items():
            if len(edges) != 2 or n not in graph.node_pos:
                continue
            e1, e2 = edges
            a1, b1, p1 = graph.edges[e1]
            a2, b2, p2 = graph.edges[e2]
            if a1 == b1 or a2 == b2 or e1 == e2:
                continue
            d1, d2 = graph.edge_depth[e1], graph.edge_depth[e2]
            if b1 != n:  # orient e1 to end at n
                a1, b1, p1, d1 = b1, a1, p1[::-1], d1[::-1]
            if a2 != n:  # orient e2 to start at n
                a2, b2, p2, d2 = b2, a2, p2[::-1], d2[::-1]
            del graph.edges[e1], graph.edges[e2], graph.edge_depth[e1], graph.edge_depth[e2]
            del graph.node_pos[n], graph.node_depth[n]
            graph.add_edge(a1, b2, np.concatenate([p1, p2[1:]]), np.concatenate([d1, d2[1:]]))
            changed = True
            break


def _drop_isolated_nodes(graph: SkeletonGraph) -> None:
    deg = graph.degree()
    for n, d in deg.items():
        if d == 0:
            del graph.node_pos[n], graph.node_depth[n]


def _no_hole(paths: list, mask: np.ndarray | None) -> bool:
    """True when a cycle (its voxel paths) encloses no background: its centroid and the points halfway
    from the centroid to every path point are all inside ``mask`` (a thinning artefact, not a ring)."""
    if mask is None:
        return False
    pts = np.concatenate(paths)
    centre = pts.mean(0)
    probes = np.concatenate([centre[None], 0.5 * (pts + centre)])
    idx = np.clip(np.rint(probes).astype(int), 0, np.array(mask.shape) - 1)
    return bool(mask[tuple(idx.T)].all())


def simplify_graph(graph: SkeletonGraph, spacing_mm: float, *, prune_factor: float, min_branch_mm: float,
                   small_loop_factor: float, mask: np.ndarray | None = None, crosses_wall=None) -> dict:
    """Prune spurs, break small loops and merge degree-2 nodes, in place, until nothing changes.

    A terminal edge (one end of degree 1, the other of degree >= 3) is a spur when its length is
    below ``max(min_branch_mm, prune_factor x junction depth)``. A cycle (self-loop, parallel
    edges, or a cycle of the minimum cycle basis) shorter than ``small_loop_factor x`` its largest
    depth, or enclosing no background of ``mask`` (:func:`_no_hole`), is broken by removing its
    thinnest edge. ``crosses_wall(path) -> bool`` (a voxel path) tells an edge that leaves the
    continuous vessel between two voxels: a cycle holding one is a bridge of 26-connectivity across
    a gap narrower than a voxel (two vessels nearly touching), and that edge is removed instead.

    Returns counts: ``spurs``, ``small_loops`` and ``bridges`` removed.
    """
    import networkx as nx

    counts = {"spurs": 0, "small_loops": 0, "bridges": 0}

    def bridge_of(edges) -> int | None:
        if crosses_wall is None:
            return None
        for e in edges:
            if crosses_wall(graph.edges[e][2]):
                return e
        return None
    _merge_degree_two(graph)
    for _ in range(1000):
        changed = False
        deg = graph.degree()
        # Spurs: shortest first, one junction at a time so a fork of two real branches keeps one.
        tips = []
        for e, (a, b, _) in graph.edges.items():
            if a == b:
                continue
            for tip, junction in ((a, b), (b, a)):
                if deg[tip] == 1 and deg[junction] >= 3:
                    length = graph.edge_length(e, spacing_mm)
                    limit = max(min_branch_mm, prune_factor * graph.node_depth[junction])
                    if length < limit:
                        tips.append((length, e, tip, junction))
        done_junctions = set()
        for length, e, tip, junction in sorted(tips):
            if junction in done_junctions or e not in graph.edges:
                continue
            if graph.degree()[junction] < 3:
                continue
            del graph.edges[e], graph.edge_depth[e]
            del graph.node_pos[tip], graph.node_depth[tip]
            done_junctions.add(junction)
            counts["spurs"] += 1
            changed = True
        # Small loops.
        for e, (a, b, path) in list(graph.edges.items()):
            if a == b and e in graph.edges:
                depth = max(float(graph.edge_depth[e].max()), graph.node_depth[a])
                bridge = bridge_of([e])
                if bridge is not None or graph.edge_length(e, spacing_mm) < small_loop_factor * depth \
                        or _no_hole([path], mask):
                    del graph.edges[e], graph.edge_depth[e]
                    counts["bridges" if bridge is not None else "small_loops"] += 1
                    changed = True
        simple = nx.Graph()
        best = {}
        for e, (a, b, _) in list(graph.edges.items()):
            if a == b:
                continue
            key = (min(a, b), max(a, b))
            length = graph.edge_length(e, spacing_mm)
            if key in best:  # parallel edges: a two-edge cycle
                other = best[key]
                loop_len = length + graph.edge_length(other, spacing_mm)
                depth = max(float(graph.edge_depth[e].max()), float(graph.edge_depth[other].max()))
                bridge = bridge_of([e, other])
                if bridge is not None or loop_len < small_loop_factor * depth or \
                        _no_hole([graph.edges[e][2], graph.edges[other][2]], mask):
                    thin = bridge if bridge is not None else \
                        min((e, other), key=lambda k: float(np.median(graph.edge_depth[k])))
                    del graph.edges[thin], graph.edge_depth[thin]
                    counts["bridges" if bridge is not None else "small_loops"] += 1
                    changed = True
                    best[key] = other if thin == e else e
                continue
            best[key] = e
        for key, e in best.items():
            if e in graph.edges:
                simple.add_edge(*key, weight=graph.edge_length(e, spacing_mm), edge=e)
        if not changed and simple.number_of_edges() >= simple.number_of_nodes() > 0:
            for cycle in nx.minimum_cycle_basis(simple, weight="weight"):
                sub = simple.subgraph(cycle)
                edges = [d["edge"] for _, _, d in sub.edges(data=True)]
                if len(edges) < 3 or any(e not in graph.edges for e in edges):
                    continue
                total = sum(graph.edge_length(e, spacing_mm) for e in edges)
                depth = max(float(graph.edge_depth[e].max()) for e in edges)
                bridge = bridge_of(edges)
                if bridge is not None or total < small_loop_factor * depth or \
                        _no_hole([graph.edges[e][2] for e in edges], mask):
                    thin = bridge if bridge is not None else \
                        min(edges, key=lambda k: float(np.median(graph.edge_depth[k])))
                    del graph.edges[thin], graph.edge_depth[thin]
                    counts["bridges" if bridge is not None else "small_loops"] += 1
                    changed = True
                    break
        _drop_isolated_nodes(graph)
        _merge_degree_two(graph)
        if not changed:
            break
    return counts
