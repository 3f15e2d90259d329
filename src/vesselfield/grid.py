"""One volume grid and one world frame for the whole package.

World frame: LPS patient coordinates in millimetres (x towards the patient's left, y posterior,
z superior). A volume is a NumPy/PyTorch array indexed ``[i, j, k]`` along world ``(x, y, z)``,
and voxel ``(i, j, k)`` has its centre at ``origin_mm + (i, j, k) * spacing_mm``. Grids are
axis-aligned in LPS; readers turn flipped or permuted file orientations into this layout and
reject truly oblique ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from vesselfield.errors import VesselfieldError


def _triple(values: Iterable[Any], name: str, kind=float) -> tuple:
    try:
        out = tuple(kind(v) for v in values)
    except (TypeError, ValueError):
        raise VesselfieldError(f"{name} must be three numbers, got {values!r}") from None
    if len(out) != 3:
        raise VesselfieldError(f"{name} must have 3 values, got {len(out)}")
    return out


@dataclass(frozen=True)
class VolumeGrid:
    """A regular, axis-aligned voxel grid in LPS millimetres.

    Attributes:
        shape: number of voxels along world x, y, z (array axes 0, 1, 2).
        spacing_mm: voxel size along x, y, z in mm (all > 0).
        origin_mm: world position (mm, LPS) of the centre of voxel (0, 0, 0).
    """

    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self):
        shape = _triple(self.shape, "shape", int)
        spacing = _triple(self.spacing_mm, "spacing_mm")
        origin = _triple(self.origin_mm, "origin_mm")
        if any(s <= 0 for s in shape):
            raise VesselfieldError(f"grid shape must be positive, got {shape}")
        if not all(np.isfinite(spacing)) or any(s <= 0 for s in spacing):
            raise VesselfieldError(f"spacing_mm must be positive and finite, got {spacing}")
        if not all(np.isfinite(origin)):
            raise VesselfieldError(f"origin_mm must be finite, got {origin}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "spacing_mm", spacing)
        object.__setattr__(self, "origin_mm", origin)

    # ----------------------------------------------------------------------------- builders
    @classmethod
    def centered(
        cls,
        shape: Sequence[int],
        spacing_mm: float | Sequence[float],
        center_mm: Sequence[float] = (0.0, 0.0, 0.0),
    ) -> "VolumeGrid":
        """A grid whose centre (midpoint of the voxel centres) is ``center_mm``."""
        shape = _triple(shape, "shape", int)
        if np.isscalar(spacing_mm):
            spacing_mm = (float(spacing_mm),) * 3
        spacing = np.asarray(_triple(spacing_mm, "spacing_mm"))
        origin = np.asarray(center_mm, float) - (np.asarray(shape) - 1) / 2.0 * spacing
        return cls(shape, tuple(spacing), tuple(origin))

    @classmethod
    def from_dict(cls, d: dict) -> "VolumeGrid":
        """From ``{"shape": [..3], "spacing_mm": [..3], "origin_mm": [..3]}`` (origin optional)."""
        if not isinstance(d, dict):
            raise VesselfieldError("volume grid must be an object with shape and spacing_mm")
        missing = [k for k in ("shape", "spacing_mm") if k not in d]
        if missing:
            raise VesselfieldError(f"volume grid is missing key(s): {', '.join(missing)}")
        return cls(d["shape"], d["spacing_mm"], d.get("origin_mm", (0.0, 0.0, 0.0)))

    def to_dict(self) -> dict:
        return {
            "shape": list(self.shape),
            "spacing_mm": list(self.spacing_mm),
            "origin_mm": list(self.origin_mm),
        }

    # ------------------------------------------------------------------------- properties
    @property
    def spacing(self) -> np.ndarray:
        """(3,) spacing in mm as an array."""
        return np.asarray(self.spacing_mm, dtype=np.float64)

    @property
    def origin(self) -> np.ndarray:
        """(3,) origin in mm as an array."""
        return np.asarray(self.origin_mm, dtype=np.float64)

    @property
    def num_voxels(self) -> int:
        return int(np.prod(self.shape))

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing))

    @property
    def center_mm(self) -> np.ndarray:
        """(3,) world position of the grid centre."""
        return self.origin + (np.asarray(self.shape) - 1) / 2.0 * self.spacing

    @property
    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi): the box covered by the voxels (voxel centres ± half a voxel), mm."""
        lo = self.origin - 0.5 * self.spacing
        hi = self.origin + (np.asarray(self.shape) - 0.5) * self.spacing
        return lo, hi

    @property
    def affine_lps(self) -> np.ndarray:
        """(4, 4) index -> LPS world affine (diagonal)."""
        a = np.diag(np.r_[self.spacing, 1.0])
        a[:3, 3] = self.origin
        return a

    @property
    def affine_ras(self) -> np.ndarray:
        """(4, 4) index -> RAS world affine (what NIfTI stores): x and y negated."""
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.affine_lps

    # ------------------------------------------------------------------------- mappings
    def index_to_world(self, ijk) -> np.ndarray:
        """(..., 3) continuous voxel indices -> (..., 3) LPS mm."""
        return self.origin + np.asarray(ijk, dtype=np.float64) * self.spacing

    def world_to_index(self, xyz) -> np.ndarray:
        """(..., 3) LPS mm -> (..., 3) continuous voxel indices."""
        return (np.asarray(xyz, dtype=np.float64) - self.origin) / self.spacing

    def axes_mm(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World coordinates of the voxel centres along x, y and z (three 1D arrays)."""
        return tuple(self.origin[a] + np.arange(self.shape[a]) * self.spacing[a] for a in range(3))

    def voxel_centers_mm(self, dtype=np.float32) -> np.ndarray:
        """(X, Y, Z, 3) world coordinates of every voxel centre."""
        x, y, z = self.axes_mm()
        return np.stack(np.meshgrid(x, y, z, indexing="ij"), axis=-1).astype(dtype)

    def contains(self, xyz, margin_mm: float = 0.0) -> np.ndarray:
        """(...,) bool: whether each point lies inside the grid's box (± margin)."""
        lo, hi = self.bounds_mm
        p = np.asarray(xyz, dtype=np.float64)
        return np.all((p >= lo - margin_mm) & (p <= hi + margin_mm), axis=-1)

    # --------------------------------------------------------------------- comparisons
    def is_close(self, other: "VolumeGrid", atol_mm: float = 1e-3) -> bool:
        """Same shape, and spacing/origin equal within ``atol_mm``."""
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=atol_mm)
            and np.allclose(self.origin, other.origin, atol=atol_mm)
        )

    def require_same(self, other: "VolumeGrid", what: str = "volumes") -> None:
        """Raise a one-line :class:`VesselfieldError` when two grids differ."""
        if not self.is_close(other):
            raise VesselfieldError(
                f"{what} are on different grids: shape {self.shape} spacing {self.spacing_mm} "
                f"origin {self.origin_mm} vs shape {other.shape} spacing {other.spacing_mm} "
                f"origin {other.origin_mm}"
            )

    def check_array(self, array, what: str = "volume") -> None:
        """Raise when ``array``'s shape is not this grid's."""
        if tuple(array.shape) != self.shape:
            raise VesselfieldError(f"{what} has shape {tuple(array.shape)}, grid has {self.shape}")


#: Default margin of :func:`grid_over_box`, in voxels on every side.
DEFAULT_MARGIN_VOXELS = 5


def grid_over_box(bounds_mm, spacing_mm: float = 1.0, margin_mm: float | None = None, *,
                  max_voxels: int = 512 ** 3) -> VolumeGrid:
    """An isotropic grid over the box ``bounds_mm`` ((2, 3): lo, hi; mm) plus ``margin_mm`` on every
    side (default :data:`DEFAULT_MARGIN_VOXELS` spacings); at most ``max_voxels`` voxels (a one-line error otherwise)."""
    spacing_mm = float(spacing_mm)
    if not (math.isfinite(spacing_mm) and spacing_mm > 0):
        raise VesselfieldError(f"spacing must be a positive number of mm, got {spacing_mm}")
    margin = DEFAULT_MARGIN_VOXELS * spacing_mm if margin_mm is None else float(margin_mm)
    lo, hi = np.asarray(bounds_mm, dtype=np.float64)
    shape = np.ceil((hi - lo + 2 * margin) / spacing_mm).astype(int) + 1
    if int(np.prod(shape)) > int(max_voxels):
        raise VesselfieldError(f"a {spacing_mm} mm grid over this shape would have {tuple(shape)} voxels: use a coarser spacing")
    return VolumeGrid.centered(tuple(int(s) for s in shape), spacing_mm, (lo + hi) / 2)
