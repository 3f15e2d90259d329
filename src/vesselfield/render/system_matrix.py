"""The projector as a sparse matrix, and the visual hull of a set of masks.

For a fixed view and set of rays, :func:`project_volume` is linear in the volume: ``I = A v``
with ``A[r, j]`` the summed trilinear weight of voxel ``j`` over ray ``r``'s midpoint samples
times the step length (mm). Building ``A`` once and multiplying by it afterwards gives exactly
the projector's numbers (same rays, same samples, same interpolation) at a fraction of the
cost per iteration, which is what makes two-view optimisation fast on a CPU
(``../shared/NOTES-two-view.md``: ~300x faster per sample than ``grid_sample``). Restricting the
columns to the voxels of the visual hull keeps ``A`` small (a few million non-zeros for a
coronary tree on the default geometry).

The visual hull (Laurentini, IEEE TPAMI 1994) of binary masks is the set of voxels whose centre
projects inside the mask in every view: a vessel voxel seen in every view is in it, so an
optimisation may be restricted to it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from vesselfield.errors import VesselfieldError
from vesselfield.geometry.cone_beam import ConeBeamView, Geometry
from vesselfield.grid import VolumeGrid
from vesselfield.render.projector import _RaySamples


class _SparseMatVec(torch.autograd.Function):
    """``A x`` with a precomputed CSR transpose for the backward pass.

    PyTorch's own autograd through a CSR product transposes ``A`` on every backward (~100x slower
    than the product itself on a CPU); keeping ``A^T`` as CSR makes backward as cheap as forward.
    """

    @staticmethod
    def forward(ctx, matrix, matrix_t, values):
        ctx.save_for_backward(matrix_t)
        return (matrix @ values[:, None])[:, 0]

    @staticmethod
    def backward(ctx, grad):
        (matrix_t,) = ctx.saved_tensors
        return None, None, (matrix_t @ grad[:, None])[:, 0]


@dataclass
class RayVoxelMatrix:
    """A sparse projection matrix for one view.

    Attributes:
        matrix: (N_rays, N_columns) sparse CSR tensor, float32, mm per unit voxel value.
        matrix_t: its transpose, CSR (for fast gradients).
        voxel_index: (N_columns,) int64 flat (C-order) indices into the grid of each column.
        pixels: (N_rays, 2) int64 (row, col) of each ray.
        grid: the volume grid.
        view: the view.
    """

    matrix: torch.Tensor
    matrix_t: torch.Tensor
    voxel_index: torch.Tensor
    pixels: np.ndarray
    grid: VolumeGrid
    view: ConeBeamView

    @property
    def nnz(self) -> int:
        return int(self.matrix.values().numel())

    def project(self, values: torch.Tensor) -> torch.Tensor:
        """Line integrals (N_rays,) in mm of ``values``: either (N_columns,) column values or a
        full (X, Y, Z) volume (its hull columns are taken). Differentiable w.r.t. ``values``."""
        if values.dim() == 3:
            self.grid.check_array(values)
            values = values.reshape(-1).index_select(0, self.voxel_index.to(values.device))
        if values.shape != (self.matrix.shape[1],):
            raise VesselfieldError(f"values must have shape ({self.matrix.shape[1]},), got {tuple(values.shape)}")
        if values.device != self.matrix.device or values.dtype != self.matrix.dtype:
            raise VesselfieldError(
                f"values are {values.dtype} on {values.device}, the matrix is {self.matrix.dtype} on "
                f"{self.matrix.device}: move one with .to()"
            )
        return _SparseMatVec.apply(self.matrix, self.matrix_t, values)

    def to(self, device) -> "RayVoxelMatrix":
        return RayVoxelMatrix(self.matrix.to(device), self.matrix_t.to(device), self.voxel_index.to(device),
                              self.pixels, self.grid, self.view)


def all_pixels(view: ConeBeamView) -> np.ndarray:
    """(H*W, 2) (row, col) of every detector pixel, row-major."""
    rows, cols = np.meshgrid(np.arange(view.detector_shape[0]), np.arange(view.detector_shape[1]), indexing="ij")
    return np.stack([rows.ravel(), cols.ravel()], axis=1)


def ray_voxel_matrix(
    grid: VolumeGrid,
    view: ConeBeamView,
    pixels=None,
    *,
    voxel_mask: np.ndarray | None = None,
    step_mm: float | None = None,
    chunk_rays: int = 2048,
) -> RayVoxelMatrix:
    """Build the sparse matrix ``A`` with ``A @ v == project_volume(v, grid, view, pixels)``.

    Args:
        grid: the volume grid.
        view: the view.
        pixels: (N, 2) (row, col) of the rays, or None for every pixel.
        voxel_mask: optional (X, Y, Z) bool: keep only these voxels as columns (weights on other
            voxels are dropped, which is exact for volumes that are zero outside the mask).
        step_mm: ray sampling step; the projector's default when None.
        chunk_rays: rays processed at a time (bounds memory during construction).

    Returns:
        A :class:`RayVoxelMatrix`.
    """
    pixels = all_pixels(view) if pixels is None else np.asarray(pixels, dtype=np.int64).reshape(-1, 2)
    shape = np.asarray(grid.shape)
    if voxel_mask is not None:
        voxel_mask = np.asarray(voxel_mask, dtype=bool)
        grid.check_array(voxel_mask, "voxel mask")
        voxel_index = np.flatnonzero(voxel_mask)
        column_of = np.full(grid.num_voxels, -1, dtype=np.int64)
        column_of[voxel_index] = np.arange(len(voxel_index))
    else:
        voxel_index = np.arange(grid.num_voxels)
        column_of = None
    column_of_t = None if column_of is None else torch.from_numpy(column_of)
    strides = torch.tensor([shape[1] * shape[2], shape[2], 1], dtype=torch.int64)
    upper = torch.from_numpy(shape - 1).to(torch.float64)
    origin = torch.from_numpy(grid.origin)
    spacing = torch.from_numpy(grid.spacing)

    rows_out, cols_out, vals_out = [], [], []
    for a in range(0, len(pixels), chunk_rays):
        rays = _RaySamples(grid, view, pixels[a:a + chunk_rays], step_mm)
        count = rays.count
        ray = torch.repeat_interleave(torch.arange(len(count)), count)
        if ray.numel() == 0:
            continue
        start = torch.cumsum(count, 0) - count
        k = (torch.arange(ray.numel()) - start[ray]).to(torch.float64)
        points = rays.first[ray] + k[:, None] * rays.step[ray]
        # Index coordinates clamped to the voxel centres: the projector's border padding.
        idx = ((points - origin) / spacing).clamp(min=torch.zeros(3, dtype=torch.float64), max=upper)
        base = idx.floor().clamp(max=(upper - 1).clamp(min=0))
        frac = idx - base
        base = base.to(torch.int64)
        weight_h = rays.h[ray]
        for corner in range(8):
            offs = torch.tensor([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1], dtype=torch.int64)
            w = torch.where(offs.bool(), frac, 1.0 - frac).prod(dim=1) * weight_h
            vox = ((base + offs).minimum(torch.from_numpy(shape - 1)) * strides).sum(dim=1)
            col = vox if column_of_t is None else column_of_t[vox]
            keep = (w > 0) & (col >= 0)
            rows_out.append(ray[keep] + a)
            cols_out.append(col[keep])
            vals_out.append(w[keep])
    n_cols = len(voxel_index)
    if rows_out:
        rows = torch.cat(rows_out)
        cols = torch.cat(cols_out)
        vals = torch.cat(vals_out)
    else:
        rows = cols = torch.zeros(0, dtype=torch.int64)
        vals = torch.zeros(0, dtype=torch.float64)
    with warnings.catch_warnings():  # torch's "beta"/"invariant checks" notices: we build valid indices
        warnings.simplefilter("ignore", UserWarning)
        coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (len(pixels), n_cols),
                                      check_invariants=False).coalesce().to(torch.float32)
        matrix = coo.to_sparse_csr()
        matrix_t = coo.t().coalesce().to_sparse_csr()
    return RayVoxelMatrix(matrix, matrix_t, torch.from_numpy(voxel_index), pixels, grid, view)


def visual_hull(masks, geometry: Geometry, *, dilate_voxels: int = 1) -> np.ndarray:
    """Voxels whose centre projects inside every view's mask, dilated by ``dilate_voxels``.

    Args:
        masks: one (H, W) bool array per view, in the geometry's view order (row 0 at the top).
        geometry: the views and the volume grid.
        dilate_voxels: 3D dilation of the hull (voxels), so partial-volume voxels at the vessel
            border whose centre projects just outside a mask are kept.

    Returns:
        (X, Y, Z) bool.
    """
    from scipy import ndimage

    if len(masks) != len(geometry.views):
        raise VesselfieldError(f"{len(masks)} masks for {len(geometry.views)} views")
    grid = geometry.volume
    centres = grid.voxel_centers_mm(np.float64).reshape(-1, 3)
    hull = np.ones(len(centres), dtype=bool)
    for i, (mask, view) in enumerate(zip(masks, geometry.views), start=1):
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != tuple(view.detector_shape):
            raise VesselfieldError(f"mask {i} has shape {mask.shape}, view {i}'s detector is {tuple(view.detector_shape)}")
        rc = view.project_points(centres[hull])
        r = np.rint(rc[:, 0])
        c = np.rint(rc[:, 1])
        ok = np.isfinite(r) & np.isfinite(c) & (r >= 0) & (c >= 0) & (r < mask.shape[0]) & (c < mask.shape[1])
        inside = np.zeros(len(rc), dtype=bool)
        inside[ok] = mask[r[ok].astype(np.int64), c[ok].astype(np.int64)]
        hull[np.flatnonzero(hull)[~inside]] = False
    hull = hull.reshape(grid.shape)
    if dilate_voxels > 0 and hull.any():
        hull = ndimage.binary_dilation(hull, iterations=int(dilate_voxels))
    return hull
