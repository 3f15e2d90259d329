"""Differentiable cone-beam projector: line integrals of volumes and fields along source->pixel rays.

For a view (:class:`~vesselfield.geometry.ConeBeamView`) every pixel's ray runs from the source
S through the pixel centre P. The ray is clipped to the volume's box (the slab method, Kay &
Kajiya 1986; Williams et al. 2005) to ``[t0, t1]`` (t >= 0), split into
``n = ceil((t1 - t0) / step_mm)`` equal steps ``h = (t1 - t0) / n`` and integrated with the
midpoint rule::

    I = sum_k f(S + (t0 + (k + 1/2) h) d) h          (mm x value; mm for an occupancy in [0, 1])

For a voxel volume ``f`` is its trilinear interpolant (voxel centres on the grid's points, the
edge voxels' values held out to the box's faces, zero outside the box); for a field ``f`` is the
given function. Rays that miss the box give 0.

Default sampling: ``step_mm = DEFAULT_STEP_VOXELS x min(grid.spacing_mm)`` = half a voxel
(0.4 mm and up to ~440 samples per ray for the default 128³ x 0.8 mm volume). Measured (see
``docs/geometry.md`` and ``tests/test_projector.py``): against a dense (step / 16) reference the
sampling error on thin tubes (r = 0.6-1.5 mm) is 0.3-0.4 % relative L1 (1.2-1.5 % at one sample
per voxel), and against the closed-form chords of spheres and cylinders the error is below 1 %
(0.2-0.7 %) for partial-volume voxelisations and smooth fields.

Memory stays bounded by ``chunk_rays``: rays are processed in chunks, and when gradients are
needed and there is more than one chunk, each chunk is checkpointed (recomputed in backward),
so that backward memory is that of one chunk plus the per-ray outputs.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from vesselfield.errors import VesselfieldError
from vesselfield.geometry.cone_beam import ConeBeamView, Geometry
from vesselfield.grid import VolumeGrid

__all__ = [
    "DEFAULT_CHUNK_RAYS",
    "DEFAULT_MASK_THRESHOLD_MM",
    "DEFAULT_STEP_VOXELS",
    "default_step_mm",
    "project_field",
    "project_views",
    "project_volume",
    "projection_mask",
    "ray_box_intersection",
]

DEFAULT_STEP_VOXELS = 0.5
"""Default ray-marching step as a fraction of the smallest voxel spacing (see module docstring)."""

DEFAULT_CHUNK_RAYS = 16384
"""Rays per chunk: at most ~7 M samples on the default geometry, measured peak ~0.5 GB of
temporaries for a full 512² view forward and ~0.75 GB forward+backward on the CPU."""

DEFAULT_MASK_THRESHOLD_MM = 0.5
"""Default line-integral threshold (mm) of :func:`projection_mask` for occupancy volumes."""


def default_step_mm(grid: VolumeGrid) -> float:
    """The default sampling step along rays for ``grid``: ``DEFAULT_STEP_VOXELS x min(spacing_mm)``."""
    return DEFAULT_STEP_VOXELS * float(min(grid.spacing_mm))


def ray_box_intersection(origins, directions, lo, hi) -> tuple[torch.Tensor, torch.Tensor]:
    """Where rays enter and leave an axis-aligned box (slab method).

    Args:
        origins: (N, 3) ray origins, mm (tensor; its dtype and device are used).
        directions: (N, 3) ray directions (need not be unit; t is in units of their length).
            Zero components are allowed: such rays are parallel to a pair of faces.
        lo, hi: (3,) the box's low and high corners, mm.

    Returns:
        ``(t_near, t_far)``, each (N,): the line ``origin + t * direction`` lies inside the box for
        ``t_near <= t <= t_far``. The ray misses the box when ``t_near > t_far`` (the line misses)
        or ``t_far < 0`` (the box is behind the origin); ``t_near < 0`` means the origin is inside.
    """
    origins = torch.as_tensor(origins)
    directions = torch.as_tensor(directions, dtype=origins.dtype, device=origins.device)
    lo = torch.as_tensor(np.asarray(lo, dtype=np.float64), dtype=origins.dtype, device=origins.device)
    hi = torch.as_tensor(np.asarray(hi, dtype=np.float64), dtype=origins.dtype, device=origins.device)
    parallel = directions == 0
    safe = torch.where(parallel, torch.ones_like(directions), directions)
    t_lo = (lo - origins) / safe
    t_hi = (hi - origins) / safe
    t_min = torch.minimum(t_lo, t_hi)
    t_max = torch.maximum(t_lo, t_hi)
    # A ray parallel to a slab is inside it for every t, or for none.
    inside = (origins >= lo) & (origins <= hi)
    inf = torch.full_like(t_min, math.inf)
    t_min = torch.where(parallel, torch.where(inside, -inf, inf), t_min)
    t_max = torch.where(parallel, torch.where(inside, inf, -inf), t_max)
    return t_min.amax(dim=1), t_max.amin(dim=1)


# ----------------------------------------------------------------------------------- rays
class _RaySamples:
    """Every ray's midpoint samples, described per ray (float64, CPU).

    Sample ``k`` (0 <= k < ``count``) of a ray lies at ``first + k * step`` (mm), where
    ``first = entry + h/2 d`` and ``step = h d``, ``h = length / count``; rays that miss the box
    have ``count = 0``.
    """

    def __init__(self, grid: VolumeGrid, view: ConeBeamView, pixels, step_mm: float | None):
        if isinstance(pixels, torch.Tensor):
            pixels = pixels.detach().cpu().numpy()
        step = default_step_mm(grid) if step_mm is None else step_mm
        if isinstance(step, bool) or not isinstance(step, (int, float, np.floating, np.integer)) or not (
            math.isfinite(step) and step > 0
        ):
            raise VesselfieldError(f"step_mm must be a positive number, got {step_mm!r}")
        origins, dirs = view.rays(pixels)
        o = torch.from_numpy(origins)
        d = torch.from_numpy(dirs)
        lo, hi = grid.bounds_mm
        t_near, t_far = ray_box_intersection(o, d, lo, hi)
        t_near = t_near.clamp_min(0.0)
        length = t_far - t_near
        hits = torch.isfinite(length) & (length > 0)
        length = torch.where(hits, length, torch.zeros_like(length))
        t_near = torch.where(hits, t_near, torch.zeros_like(t_near))
        self.count = torch.ceil(length / float(step)).to(torch.int64)
        self.h = length / self.count.clamp_min(1)
        self.first = o + (t_near + 0.5 * self.h)[:, None] * d
        self.step = self.h[:, None] * d

    def __len__(self) -> int:
        return int(self.count.shape[0])


def _check_chunk(chunk_rays) -> int:
    if isinstance(chunk_rays, bool) or not isinstance(chunk_rays, (int, np.integer)) or chunk_rays < 1:
        raise VesselfieldError(f"chunk_rays must be a positive integer, got {chunk_rays!r}")
    return int(chunk_rays)


def _march(sample_fn: Callable, first, step, h, count, chunk: int, dtype, device) -> torch.Tensor:
    """Midpoint-rule line integrals of ``sample_fn(points (M, 3)) -> (M,)``, chunk by chunk.

    ``first``/``step`` (N, 3) are in whatever coordinates ``sample_fn`` takes; ``h`` (N,) is
    the step length in mm and ``count`` (N,) the number of samples of each ray.
    """
    n = count.shape[0]
    first = first.to(device=device, dtype=dtype)
    step = step.to(device=device, dtype=dtype)
    h = h.to(device=device, dtype=dtype)
    count_dev = count.to(device=device)

    def one_chunk(f, s, hh, c):
        # Samples are packed ray after ray: ray[m] is the sample's ray, k[m] its index on the ray.
        ray = torch.repeat_interleave(torch.arange(c.shape[0], device=device), c)
        start = torch.cumsum(c, 0) - c
        # index_select, not f[ray]: several times faster on the CPU for row gathers.
        k = (torch.arange(ray.shape[0], device=device) - start.index_select(0, ray)).to(dtype)
        points = torch.addcmul(f.index_select(0, ray), k[:, None], s.index_select(0, ray))
        values = sample_fn(points)
        # Every sample of a ray has the same weight h, so it multiplies the per-ray sum.
        return torch.zeros(c.shape[0], dtype=values.dtype, device=device).index_add_(0, ray, values) * hh

    # Checkpointing keeps backward memory at one chunk's worth when there are several chunks.
    use_checkpoint = torch.is_grad_enabled() and n > chunk
    out = []
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        if int(count[a:b].sum()) == 0:
            out.append(torch.zeros(b - a, dtype=dtype, device=device))
            continue
        args = (first[a:b], step[a:b], h[a:b], count_dev[a:b])
        out.append(checkpoint(one_chunk, *args, use_reentrant=False) if use_checkpoint else one_chunk(*args))
    if not out:
        return torch.zeros(0, dtype=dtype, device=device)
    return torch.cat(out)


def _shape_output(integrals: torch.Tensor, view: ConeBeamView, pixels) -> torch.Tensor:
    return integrals.reshape(view.detector_shape) if pixels is None else integrals


def _to_grid_sample_coords(rays: _RaySamples, grid: VolumeGrid) -> tuple[torch.Tensor, torch.Tensor]:
    """``first``/``step`` of the rays in ``F.grid_sample``'s normalised (z, y, x) = (k, j, i) order.

    With ``align_corners=True`` -1 and +1 are the first and last voxel centres along an axis; on a
    size-1 axis every point maps to its single centre (0).
    """
    sizes = np.asarray(grid.shape, dtype=np.float64)
    scale = np.where(sizes > 1, 2.0 / np.maximum(sizes - 1, 1), 0.0) / grid.spacing
    offset = np.where(sizes > 1, -1.0, 0.0) - scale * grid.origin
    scale_t, offset_t = torch.from_numpy(scale), torch.from_numpy(offset)
    return (rays.first * scale_t + offset_t).flip(-1), (rays.step * scale_t).flip(-1)


def _trilinear_sampler(volume: torch.Tensor) -> Callable:
    """Normalised grid_sample coordinates (M, 3) -> (M,) trilinear values of ``volume``.

    ``padding_mode="border"`` holds the edge voxels' values out to the box's faces; samples never
    leave the box, so the volume is zero outside it.
    """
    vol5 = volume[None, None]

    def sample(points: torch.Tensor) -> torch.Tensor:
        out = F.grid_sample(vol5, points.view(1, -1, 1, 1, 3), mode="bilinear", padding_mode="border",
                            align_corners=True)
        return out.view(-1)

    return sample


def _check_volume(volume, grid: VolumeGrid) -> torch.Tensor:
    if not isinstance(volume, torch.Tensor):
        raise VesselfieldError(f"volume must be a torch tensor, got {type(volume).__name__}")
    if not isinstance(grid, VolumeGrid):
        raise VesselfieldError(f"grid must be a VolumeGrid, got {type(grid).__name__}")
    grid.check_array(volume)
    if not volume.is_floating_point():
        volume = volume.float()
    return volume


def project_volume(
    volume: torch.Tensor,
    grid: VolumeGrid,
    view: ConeBeamView,
    pixels=None,
    *,
    step_mm: float | None = None,
    chunk_rays: int = DEFAULT_CHUNK_RAYS,
) -> torch.Tensor:
    """Line integrals of a voxel volume along the view's source->pixel rays (differentiable).

    Args:
        volume: (X, Y, Z) tensor on ``grid`` (any device; float dtypes kept, others cast to
            float32). Gradients flow to it.
        grid: the volume's :class:`VolumeGrid` (LPS mm).
        view: the :class:`ConeBeamView`.
        pixels: None for the whole detector, or (N, 2) (row, column) indices (array or tensor).
        step_mm: sampling step along each ray (mm); default ``default_step_mm(grid)``.
        chunk_rays: rays per chunk, bounds memory (see module docstring).

    Returns:
        (H, W) line integrals (value x mm) when ``pixels`` is None, else (N,); on the volume's
        device and dtype. Trilinear interpolation inside the box, zero outside; midpoint rule.
    """
    volume = _check_volume(volume, grid)
    rays = _RaySamples(grid, view, pixels, step_mm)
    first, step = _to_grid_sample_coords(rays, grid)
    integrals = _march(_trilinear_sampler(volume), first, step, rays.h, rays.count, _check_chunk(chunk_rays),
                       volume.dtype, volume.device)
    return _shape_output(integrals, view, pixels)


def project_field(
    field: Callable[[torch.Tensor], torch.Tensor],
    grid: VolumeGrid,
    view: ConeBeamView,
    pixels=None,
    *,
    step_mm: float | None = None,
    chunk_rays: int = DEFAULT_CHUNK_RAYS,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Line integrals of a field (e.g. an MLP) along the view's rays inside ``grid``'s box.

    Args:
        field: ``field(points_mm) -> values``: (M, 3) LPS mm -> (M,) (or (M, 1)); called once per
            chunk with all that chunk's sample points. Gradients flow to its parameters.
        grid: the box the rays are clipped to, and the default step (as :func:`project_volume`).
        view, pixels, step_mm, chunk_rays: as :func:`project_volume`.
        device: where the sample points are made. Default: the device of the field's first
            parameter when ``field`` is an ``nn.Module`` with parameters, else the CPU, so a
            plain function (e.g. a lambda around a CUDA model) needs ``device`` named.
        dtype: dtype of the sample points.

    Returns:
        (H, W) or (N,) line integrals (value x mm).
    """
    if not callable(field):
        raise VesselfieldError(f"field must be callable points_mm (M, 3) -> (M,), got {type(field).__name__}")
    if device is None:
        params = next(iter(field.parameters()), None) if isinstance(field, torch.nn.Module) else None
        device = params.device if params is not None else torch.device("cpu")
    device = torch.device(device)
    rays = _RaySamples(grid, view, pixels, step_mm)

    def sample(points):
        values = field(points)
        if values.dim() == 2 and values.shape[1] == 1:
            values = values[:, 0]
        if values.shape != points.shape[:1]:
            raise VesselfieldError(
                f"field returned shape {tuple(values.shape)} for {points.shape[0]} points; "
                f"expected ({points.shape[0]},)"
            )
        return values.to(dtype)

    integrals = _march(sample, rays.first, rays.step, rays.h, rays.count, _check_chunk(chunk_rays), dtype, device)
    return _shape_output(integrals, view, pixels)


def project_views(volume: torch.Tensor, geometry: Geometry, **kwargs) -> list[torch.Tensor]:
    """(H, W) line-integral images of ``volume`` (on ``geometry.volume``) for every view.

    ``kwargs`` (``step_mm``, ``chunk_rays``) go to :func:`project_volume`.
    """
    return [project_volume(volume, geometry.volume, view, **kwargs) for view in geometry.views]


def projection_mask(line_integral_mm: torch.Tensor, threshold_mm: float = DEFAULT_MASK_THRESHOLD_MM) -> torch.Tensor:
    """Binarised projection: ``line_integral_mm > threshold_mm`` (bool, same shape).

    The default 0.1 mm (1/8 of the default 0.8 mm voxel) suits occupancy volumes in [0, 1],
    whose line integrals are path lengths through the vessel: it keeps rays whose chord is at
    least a tenth of a millimetre and drops the faint partial-volume halo outside the silhouette.
    """
    threshold_mm = float(threshold_mm)
    if not math.isfinite(threshold_mm):
        raise VesselfieldError(f"threshold_mm must be finite, got {threshold_mm!r}")
    return torch.as_tensor(line_integral_mm) > threshold_mm
