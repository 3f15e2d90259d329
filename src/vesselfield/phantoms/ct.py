"""CT-like images of phantoms, and sparse-slice acquisitions of volumes.

The image model is the usual "partial volume, then system blur, then noise" chain of CT
simulation: each voxel mixes contrast-filled vessel and soft tissue in proportion to its
vessel fraction, soft tissue carries a smooth random texture, the whole image is blurred by a
Gaussian point-spread function given in mm (so anisotropic voxels get per-axis sigmas), and
white Gaussian noise is added. Values are Hounsfield units.
"""

from __future__ import annotations

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid
from vesselfield.validate import require_finite, require_ndim


def _number(value, name: str, *, minimum: float | None = None, positive: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise VesselfieldError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v):
        raise VesselfieldError(f"{name} must be finite, got {v}")
    if positive and v <= 0:
        raise VesselfieldError(f"{name} must be > 0, got {v:g}")
    if minimum is not None and v < minimum:
        raise VesselfieldError(f"{name} must be >= {minimum:g}, got {v:g}")
    return v


def ct_like_image(
    occupancy,
    grid: VolumeGrid,
    *,
    seed: int = 0,
    vessel_hu: float = 350.0,
    background_hu: float = 40.0,
    noise_hu: float = 15.0,
    blur_sigma_mm: float = 0.6,
    tissue_texture_hu: float = 10.0,
    texture_scale_mm: float = 5.0,
) -> np.ndarray:
    """A contrast-enhanced CT-like image of a vessel occupancy volume.

    ``image = blur(f * vessel_hu + (1 - f) * (background_hu + texture)) + noise`` where ``f`` is
    the occupancy fraction, ``texture`` a Gaussian random field (white noise smoothed with a
    Gaussian of ``texture_scale_mm``, rescaled to mean 0 and standard deviation
    ``tissue_texture_hu`` over the volume), ``blur`` a Gaussian of ``blur_sigma_mm`` in every
    world direction (sigma / spacing voxels per axis) and ``noise`` white Gaussian noise of
    standard deviation ``noise_hu``.

    Args:
        occupancy: (X, Y, Z) vessel fraction in [0, 1] on ``grid``.
        grid: the volume grid (its spacing sets the blur and texture sizes in voxels).
        seed: same seed -> identical image.

    Returns:
        float32 (X, Y, Z) image in HU.
    """
    if not isinstance(grid, VolumeGrid):
        raise VesselfieldError(f"grid must be a VolumeGrid, got {type(grid).__name__}")
    occ = np.asarray(occupancy)
    require_ndim(occ, 3, "occupancy")
    grid.check_array(occ, "occupancy")
    if occ.dtype.kind not in "biuf":
        raise VesselfieldError(f"occupancy must be numeric, got dtype {occ.dtype}")
    occ = occ.astype(np.float32)
    require_finite(occ, "occupancy")
    if occ.size and (occ.min() < -1e-6 or occ.max() > 1 + 1e-6):
        raise VesselfieldError(f"occupancy must lie in [0, 1], got values in [{occ.min():g}, {occ.max():g}]")
    occ = np.clip(occ, 0.0, 1.0)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise VesselfieldError(f"seed must be a non-negative integer, got {seed!r}")
    vessel_hu = _number(vessel_hu, "vessel_hu")
    background_hu = _number(background_hu, "background_hu")
    noise_hu = _number(noise_hu, "noise_hu", minimum=0.0)
    blur_sigma_mm = _number(blur_sigma_mm, "blur_sigma_mm", minimum=0.0)
    tissue_texture_hu = _number(tissue_texture_hu, "tissue_texture_hu", minimum=0.0)
    texture_scale_mm = _number(texture_scale_mm, "texture_scale_mm", positive=True)

    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(int(seed))
    spacing = grid.spacing
    tissue = np.full(occ.shape, background_hu, dtype=np.float32)
    if tissue_texture_hu > 0:
        field = gaussian_filter(rng.standard_normal(occ.shape, dtype=np.float32),
                                sigma=texture_scale_mm / spacing, mode="wrap")
        std = float(field.std())
        if std > 0:
            tissue += (field - field.mean()) * (tissue_texture_hu / std)
    image = occ * np.float32(vessel_hu) + (1.0 - occ) * tissue
    if blur_sigma_mm > 0:
        image = gaussian_filter(image, sigma=blur_sigma_mm / spacing, mode="nearest")
    if noise_hu > 0:
        image += rng.standard_normal(occ.shape, dtype=np.float32) * np.float32(noise_hu)
    return image.astype(np.float32, copy=False)


def sparse_slices(volume, grid: VolumeGrid, keep_every: int, axis: int = 2, offset: int = 0):
    """Keep every ``keep_every``-th slice along ``axis``, starting at slice ``offset``.

    Models a sparse acquisition (thick-slice CT, a few MR slices): slices
    ``offset, offset + k, offset + 2k, ...`` are kept. The returned grid has spacing
    ``k * spacing`` along ``axis`` and its origin moved to slice ``offset``, so every kept voxel
    keeps its world position: ``new_grid.index_to_world(i') == grid.index_to_world(i)``.

    Args:
        volume: (X, Y, Z) array on ``grid`` (any dtype).
        grid: its grid.
        keep_every: k >= 1 (1 keeps everything).
        axis: 0, 1 or 2 (or -3..-1), the world axis x, y or z across which slices are dropped.
        offset: first kept slice, 0 <= offset < the number of slices along ``axis``.

    Returns:
        ``(array, VolumeGrid)``: a contiguous copy of the kept slices and its grid.
    """
    if not isinstance(grid, VolumeGrid):
        raise VesselfieldError(f"grid must be a VolumeGrid, got {type(grid).__name__}")
    vol = np.asarray(volume)
    require_ndim(vol, 3, "volume")
    grid.check_array(vol, "volume")
    for name, value in (("keep_every", keep_every), ("axis", axis), ("offset", offset)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise VesselfieldError(f"{name} must be an integer, got {value!r}")
    if keep_every < 1:
        raise VesselfieldError(f"keep_every must be >= 1, got {keep_every}")
    if not -3 <= axis <= 2:
        raise VesselfieldError(f"axis must be 0, 1 or 2, got {axis}")
    axis = int(axis) % 3
    if not 0 <= offset < vol.shape[axis]:
        raise VesselfieldError(f"offset must be in [0, {vol.shape[axis]}) along axis {axis}, got {offset}")
    index = [slice(None)] * 3
    index[axis] = slice(int(offset), None, int(keep_every))
    kept = np.ascontiguousarray(vol[tuple(index)])
    spacing = list(grid.spacing_mm)
    origin = list(grid.origin_mm)
    origin[axis] = origin[axis] + offset * spacing[axis]
    spacing[axis] = spacing[axis] * keep_every
    return kept, VolumeGrid(kept.shape, tuple(spacing), tuple(origin))
