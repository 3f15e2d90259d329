"""Occupancy volumes: a closed mesh voxelised onto a grid, and an occupancy moved between grids.

An *occupancy* is an (X, Y, Z) float32 volume in [0, 1] on a :class:`~vesselfield.grid.VolumeGrid`:
the fraction of each voxel's box (voxel centre ± half a voxel, LPS mm) inside the vessel. Its sum
times the voxel volume is the vessel volume in mm³. Both functions here keep that meaning:

- :func:`voxelize_mesh`: the occupancy of a closed triangle surface, exact along z and sampled
  ``supersample``² times across each voxel (ray casting with the even-odd rule);
- :func:`resample_occupancy`: an occupancy (or a binary mask) on one grid put onto another, by
  exact box overlap, so volume is conserved exactly and thin vessels keep their volume.

Why box overlap and not trilinear interpolation: measured on a straight tube of radius 0.3 mm
sampled on 0.33 mm voxels, a trilinear resampler averaged over each 0.8 mm target voxel gained
5 % of the tube's volume and lost the outer half voxel of the source (8 % of a uniform block
shifted half out of the target box); box overlap conserves both to float32 rounding (< 1e-6
relative) and is 10-50 times faster. A trilinear resampler reproduces linear fields on upsampling,
which matters for intensities, not for occupancies.
"""

from __future__ import annotations

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid
from vesselfield.validate import require_finite

__all__ = ["iso_grid_over", "resample_linear", "resample_occupancy", "voxelize_mesh"]

# Sub-column offset (in pitches) that keeps voxelisation rays off mesh edges and vertices, which
# sit on round numbers in real files; any small irrational-looking value will do.
_RAY_JITTER = (3.1830988e-5, 2.7182818e-5)


# ==================================================================================== resampling
def resample_occupancy(occupancy, grid: VolumeGrid, out_grid: VolumeGrid) -> np.ndarray:
    """An occupancy (or binary mask) on ``grid`` put onto ``out_grid`` by exact box overlap.

    Each source voxel is a box of its spacing, uniformly filled with its value; each output voxel
    takes the fraction of its own box that this filling covers (box-filter averaging, done exactly).
    The overlap of two axis-aligned boxes is the product of three 1D overlaps, so the operator is
    separable: three sparse matrices, one per axis. Hence:

    - volume is conserved exactly: ``sum(out) * out_voxel_volume`` equals the source volume inside
      ``out_grid``'s box, to float32 rounding (< 1e-5 relative in the tests), downsampling and
      upsampling alike; what lies outside ``out_grid``'s box is cut off, and output voxels outside
      the source's box are 0;
    - nested voxels give the block mean (0.4 mm -> 0.8 mm with aligned boxes);
    - each bit of volume moves at most half an output voxel per axis, so the centroid moves at most
      that far (0.4 mm per axis at 0.8 mm);
    - on the same grid it is the identity (to float32 rounding).

    Args:
        occupancy: (X, Y, Z) values in [0, 1] on ``grid`` (bool, 0/1 or partial volume), LPS mm.
        grid: its grid.
        out_grid: the target grid (any shape, spacing and origin, same LPS frame).

    Returns:
        ``out_grid.shape`` float32 in [0, 1].

    Raises:
        VesselfieldError: the array does not match ``grid``, holds NaN/inf or values outside [0, 1].
    """
    values = np.asarray(occupancy)
    grid.check_array(values, "occupancy to resample")
    if values.dtype != bool:
        require_finite(values, "occupancy to resample")
        if values.size and (values.min() < 0 or values.max() > 1):
            raise VesselfieldError(f"occupancy to resample must lie in [0, 1], got values from "
                                   f"{float(values.min()):g} to {float(values.max()):g}")
    weights = [
        _overlap_weights(grid.shape[a], grid.origin[a], grid.spacing[a], out_grid.shape[a],
                         out_grid.origin[a], out_grid.spacing[a])
        for a in range(3)
    ]
    out = np.zeros(out_grid.shape, dtype=np.float32)
    reach = []
    for w in weights:
        rows = np.flatnonzero(w.getnnz(axis=1))
        if rows.size == 0:
            return out  # the source's box misses the output grid
        reach.append(slice(int(rows[0]), int(rows[-1]) + 1))
    values = values.astype(np.float32)
    # Contract the axis that shrinks most first: later products then run on smaller arrays.
    for axis in np.argsort([reach[a].stop - reach[a].start - values.shape[a] for a in range(3)]):
        values = _apply_along(values, weights[axis][reach[axis]], int(axis))
    out[tuple(reach)] = np.clip(values, 0.0, 1.0)
    return out


def resample_linear(values, grid: VolumeGrid, out_grid: VolumeGrid) -> np.ndarray:
    """A field on ``grid`` sampled at ``out_grid``'s voxel centres by trilinear interpolation.

    For fields whose values are point samples, not box averages: an SDF (mm) or a probability
    upsampled from sparse slices (unlike :func:`resample_occupancy`, which conserves volume). A
    field linear along an axis is reproduced exactly between the outermost source centres; beyond
    them the edge value is kept (clamping). Separable: one sparse (n_out, n_src) matrix of two
    weights per row per axis.

    Args:
        values: (X, Y, Z) on ``grid``.
        grid, out_grid: the source and output grids.

    Returns:
        float32 (X', Y', Z') on ``out_grid``.
    """
    for g, name in ((grid, "grid"), (out_grid, "out_grid")):
        if not isinstance(g, VolumeGrid):
            raise VesselfieldError(f"{name} must be a VolumeGrid, got {type(g).__name__}")
    v = np.asarray(values, dtype=np.float32)
    grid.check_array(v, "values")
    require_finite(v, "values")
    for axis in range(3):
        weights = _linear_weights(grid.shape[axis], grid.origin_mm[axis], grid.spacing_mm[axis], out_grid.shape[axis],
                                  out_grid.origin_mm[axis], out_grid.spacing_mm[axis])
        v = _apply_along(v, weights, axis)
    return v


def iso_grid_over(grid: VolumeGrid, spacing_mm: float) -> VolumeGrid:
    """The isotropic grid of ``spacing_mm`` from ``grid``'s first voxel centre to (at most) its last."""
    s = float(spacing_mm)
    if not (np.isfinite(s) and s > 0):
        raise VesselfieldError(f"the isotropic spacing must be a positive number of mm, got {spacing_mm!r}")
    extent = (np.asarray(grid.shape) - 1) * grid.spacing
    # 1e-9 relative: an extent that is a whole number of steps keeps its last centre despite rounding.
    shape = tuple(int(np.floor(e / s * (1 + 1e-9))) + 1 for e in extent)
    return VolumeGrid(shape, (s, s, s), grid.origin_mm)


def _linear_weights(n_src: int, origin_src: float, step_src: float, n_out: int, origin_out: float, step_out: float):
    """(n_out, n_src) sparse matrix of linear-interpolation weights along one axis (edge clamped)."""
    from scipy import sparse

    u = (origin_out + np.arange(n_out) * step_out - origin_src) / step_src
    u = np.clip(u, 0.0, n_src - 1)
    i0 = np.minimum(np.floor(u).astype(np.int64), max(n_src - 2, 0))
    w1 = u - i0 if n_src > 1 else np.zeros_like(u)
    i1 = np.minimum(i0 + 1, n_src - 1)
    rows = np.concatenate([np.arange(n_out), np.arange(n_out)])
    cols = np.concatenate([i0, i1])
    data = np.concatenate([1.0 - w1, w1])
    return sparse.csr_matrix((data, (rows, cols)), shape=(n_out, n_src))


def _overlap_weights(n_src: int, origin_src: float, step_src: float, n_out: int, origin_out: float,
                     step_out: float):
    """(n_out, n_src) sparse matrix along one axis: the fraction of output voxel I's length that
    source voxel i covers (voxels are boxes centred on their grid points)."""
    from scipy import sparse

    src_lo = origin_src + (np.arange(n_src) - 0.5) * step_src
    src_hi = src_lo + step_src
    first = np.floor((src_lo - (origin_out - 0.5 * step_out)) / step_out).astype(np.int64)
    span = int(np.ceil(step_src / step_out)) + 1  # output voxels one source voxel can touch
    rows = first[:, None] + np.arange(span)[None, :]
    out_lo = origin_out + (rows - 0.5) * step_out
    out_hi = origin_out + (rows + 0.5) * step_out
    length = np.minimum(src_hi[:, None], out_hi) - np.maximum(src_lo[:, None], out_lo)
    ok = (length > 0) & (rows >= 0) & (rows < n_out)
    cols = np.broadcast_to(np.arange(n_src)[:, None], rows.shape)
    return sparse.csr_matrix(((length[ok] / step_out).astype(np.float32), (rows[ok], cols[ok])),
                             shape=(n_out, n_src))


def _apply_along(values: np.ndarray, weights, axis: int) -> np.ndarray:
    moved = np.moveaxis(values, axis, 0)
    rest = moved.shape[1:]
    result = weights @ moved.reshape(moved.shape[0], -1)
    return np.moveaxis(np.asarray(result, dtype=np.float32).reshape((weights.shape[0],) + rest), 0, axis)


# ================================================================================= voxelisation
def voxelize_mesh(mesh, grid: VolumeGrid, supersample: int = 3) -> np.ndarray:
    """Partial-volume occupancy (X, Y, Z) float32 in [0, 1] of a closed triangle surface on ``grid``.

    Rays parallel to +z through ``supersample``² sub-columns of every (i, j) column cross each
    connected closed piece of the surface; the crossings, sorted along the ray, alternate
    entering and leaving (even-odd rule), the pieces' inside intervals are merged (union), and
    each voxel takes the length of its z-extent covered by them, averaged over its sub-columns.
    So the occupancy is exact along z and sampled ``supersample``² times across (an axis-aligned
    box whose x and y faces lie on voxel boundaries is voxelised exactly). Parts outside the grid
    are cut off. Sub-columns whose ray crosses a piece an odd number of times (it grazes an edge,
    or the piece is open) are skipped; more than 1 % of them raise.

    Args:
        mesh: ``trimesh.Trimesh`` (or anything with ``vertices`` (V, 3) and ``faces`` (F, 3)),
            vertices in LPS mm.
        grid: the target grid.
        supersample: sub-columns per voxel along x and along y.

    Raises:
        VesselfieldError: no faces, ``supersample`` < 1, or the mesh is not closed.
    """
    import trimesh

    s = int(supersample)
    if s < 1:
        raise VesselfieldError(f"supersample must be a positive integer, got {supersample!r}")
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    if len(faces) == 0:
        raise VesselfieldError("mesh to voxelise has no faces")
    adjacency = trimesh.graph.face_adjacency(faces)
    piece = trimesh.graph.connected_component_labels(adjacency, node_count=len(faces))
    pitch = grid.spacing[:2] / s
    start = grid.origin[:2] - 0.5 * grid.spacing[:2] + (0.5 + np.asarray(_RAY_JITTER)) * pitch
    n_cols = np.asarray(grid.shape[:2]) * s

    cols, depths, hit_faces = _ray_crossings(vertices[faces], start, pitch, n_cols)
    intervals, n_odd, n_groups = _inside_intervals(cols, depths, piece[hit_faces])
    if n_groups and n_odd > 0.01 * n_groups:
        raise VesselfieldError(
            f"mesh to voxelise is not closed: {n_odd} of {n_groups} rays cross a piece an odd number of times"
        )
    col, z_in, z_out = _merge_intervals(*intervals)

    # Coverage of voxel k by [z_in, z_out] in units of the z voxel size: voxel k spans [k, k + 1).
    nz = grid.shape[2]
    u_in = np.clip((z_in - grid.origin[2]) / grid.spacing[2] + 0.5, 0, nz)
    u_out = np.clip((z_out - grid.origin[2]) / grid.spacing[2] + 0.5, 0, nz)
    k0 = np.floor(u_in).astype(np.int64)
    count = np.maximum(np.ceil(u_out).astype(np.int64) - k0, 0)
    seg = np.repeat(np.arange(len(col)), count)
    k = k0[seg] + (np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count))
    cover = np.minimum(u_out[seg], k + 1) - np.maximum(u_in[seg], k)
    ix, iy = col[seg] // n_cols[1] // s, col[seg] % n_cols[1] // s
    flat = (ix * grid.shape[1] + iy) * nz + k
    occupancy = np.bincount(flat, weights=cover, minlength=grid.num_voxels) / (s * s)
    return np.clip(occupancy, 0.0, 1.0).reshape(grid.shape).astype(np.float32)


def _ray_crossings(triangles: np.ndarray, start, pitch, n_cols, max_pairs: int = 1 << 22):
    """Every (triangle, sub-column) crossing: column id, depth z (mm), triangle index."""
    xy = triangles[:, :, :2]
    lo = np.maximum(np.ceil((xy.min(1) - start) / pitch), 0).astype(np.int64)
    hi = np.minimum(np.floor((xy.max(1) - start) / pitch), n_cols - 1).astype(np.int64)
    span = np.maximum(hi - lo + 1, 0)
    pairs = span[:, 0] * span[:, 1]
    out_cols, out_z, out_tri = [], [], []
    cumulative = np.cumsum(pairs)
    first = 0
    # Chunks of triangles bound the memory of the (triangle, column) pairs.
    while first < len(triangles):
        done = cumulative[first - 1] if first else 0
        last = max(int(np.searchsorted(cumulative, done + max_pairs, "right")), first + 1)
        idx = np.arange(first, last)
        first = last
        n = pairs[idx]
        tri = np.repeat(idx, n)
        local = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
        cx = lo[tri, 0] + local // span[tri, 1]
        cy = lo[tri, 1] + local % span[tri, 1]
        px, py = start[0] + cx * pitch[0], start[1] + cy * pitch[1]
        a, b, c = triangles[tri, 0], triangles[tri, 1], triangles[tri, 2]
        w_a, w_b, w_c = _edge(b, c, px, py), _edge(c, a, px, py), _edge(a, b, px, py)
        area = w_a + w_b + w_c
        hit = (area != 0) & (((w_a >= 0) & (w_b >= 0) & (w_c >= 0)) | ((w_a <= 0) & (w_b <= 0) & (w_c <= 0)))
        z = (w_a * a[:, 2] + w_b * b[:, 2] + w_c * c[:, 2])[hit] / area[hit]
        out_cols.append(cx[hit] * n_cols[1] + cy[hit])
        out_z.append(z)
        out_tri.append(tri[hit])
    return np.concatenate(out_cols), np.concatenate(out_z), np.concatenate(out_tri)


def _edge(p, q, px, py):
    """Twice the signed area of the triangle (p, q, pixel) in the xy plane."""
    return (q[:, 0] - p[:, 0]) * (py - p[:, 1]) - (q[:, 1] - p[:, 1]) * (px - p[:, 0])


def _inside_intervals(cols, depths, pieces):
    """Even-odd rule per (piece, column): ((col, z_in, z_out), rays with an odd count, rays)."""
    empty = (cols[:0], depths[:0], depths[:0])
    if len(cols) == 0:
        return empty, 0, 0
    order = np.lexsort((depths, cols, pieces))
    cols, depths, pieces = cols[order], depths[order], pieces[order]
    new = np.ones(len(cols), bool)
    new[1:] = (cols[1:] != cols[:-1]) | (pieces[1:] != pieces[:-1])
    starts = np.nonzero(new)[0]
    counts = np.diff(np.r_[starts, len(cols)])
    even = np.repeat(counts % 2 == 0, counts)
    rank = np.arange(len(cols)) - np.repeat(starts, counts)
    enter = np.nonzero(even & (rank % 2 == 0))[0]
    return (cols[enter], depths[enter], depths[enter + 1]), int(np.sum(counts % 2)), len(counts)


def _merge_intervals(col, z_in, z_out):
    """Union of the intervals on each column: (col, z_in, z_out), sorted by column then depth."""
    if len(col) == 0:
        return col, z_in, z_out
    order = np.lexsort((z_in, col))
    col, z_in, z_out = col[order], z_in[order], z_out[order]
    # A per-column offset larger than any depth lets one running maximum serve every column.
    lift = (col - col.min()) * (2.0 * (np.abs(z_in).max() + np.abs(z_out).max()) + 1.0)
    reach = np.maximum.accumulate(z_out + lift)
    new = np.ones(len(col), bool)
    new[1:] = (col[1:] != col[:-1]) | (z_in[1:] + lift[1:] > reach[:-1])
    starts = np.nonzero(new)[0]
    return col[starts], z_in[starts], np.maximum.reduceat(z_out, starts)
