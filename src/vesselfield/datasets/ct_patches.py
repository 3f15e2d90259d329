"""Patches of CT volumes with their vessel occupancy and SDF targets, for dataset training.

A map-style dataset (``__len__``, ``__getitem__``) for :func:`vesselfield.training.train`.
Every item is fixed by the construction seed and its index (patch positions are drawn once, in
``__init__``), so items draw no random numbers and a resumed training is exact in the middle
of an epoch too. Patches are the whole volume when it fits; otherwise a fraction of them is
centred on a random vessel voxel (foreground oversampling, as nnU-Net does, because vessels fill
a few percent of a CT volume) and the rest lie anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.training.checkpoint import derived_seed

__all__ = ["CaseArrays", "CtPatchDataset", "pad_to"]


@dataclass
class CaseArrays:
    """One training case on its grid: every array (X, Y, Z).

    Attributes:
        name: the case name.
        image: float32 normalised intensities.
        occupancy: float32 0/1 vessel labels.
        sdf_mm: float32 target signed distance (mm, negative inside; possibly truncated).
        spacing_mm: (Δx, Δy, Δz).
    """

    name: str
    image: np.ndarray
    occupancy: np.ndarray
    sdf_mm: np.ndarray
    spacing_mm: tuple[float, float, float]


def pad_to(array: np.ndarray, shape: Sequence[int], mode: str = "edge") -> np.ndarray:
    """``array`` padded at the high end of each axis to at least ``shape`` (NumPy ``np.pad`` mode)."""
    pad = [(0, max(0, int(s) - n)) for n, s in zip(array.shape, shape)]
    return np.pad(array, pad, mode=mode) if any(p[1] for p in pad) else array


class CtPatchDataset:
    """Fixed, seeded patches of a list of cases.

    Args:
        cases: :class:`CaseArrays`; volumes smaller than the patch along an axis are padded at the
            high end (image and SDF by their edge values, occupancy by 0).
        patch_voxels: (X, Y, Z) patch size.
        patches_per_case: patches drawn from each case (1 when the patch covers the volume).
        foreground_fraction: fraction of a case's patches centred on a vessel voxel.
        seed: fixes every patch position.
        min_items: repeat the items cyclically until there are at least this many (one per
            process of a distributed run).

    Items: ``{"image": (1, X, Y, Z), "occupancy": (1, X, Y, Z), "sdf_mm": (1, X, Y, Z),
    "spacing_mm": (3,)}`` float32 tensors.
    """

    def __init__(self, cases: Sequence[CaseArrays], patch_voxels: Sequence[int], patches_per_case: int,
                 foreground_fraction: float = 1 / 3, seed: int = 0, min_items: int = 1):
        if not cases:
            raise VesselfieldError("no cases to draw patches from")
        if int(patches_per_case) < 1:
            raise VesselfieldError(f"patches_per_case must be >= 1, got {patches_per_case}")
        if not 0.0 <= float(foreground_fraction) <= 1.0:
            raise VesselfieldError(f"foreground_fraction must be in [0, 1], got {foreground_fraction}")
        self.patch = tuple(int(p) for p in patch_voxels)
        self.cases = []
        self.items: list[tuple[int, tuple[int, int, int]]] = []
        for c, case in enumerate(cases):
            image = pad_to(case.image, self.patch, "edge")
            arrays = CaseArrays(case.name, image, pad_to(case.occupancy, self.patch, "constant"),
                                pad_to(case.sdf_mm, self.patch, "edge"), tuple(case.spacing_mm))
            self.cases.append(arrays)
            shape = image.shape
            room = [s - p for s, p in zip(shape, self.patch)]
            if max(room) == 0:
                self.items.append((c, (0, 0, 0)))
                continue
            rng = np.random.default_rng(derived_seed(int(seed), c))
            n_fg = int(round(int(patches_per_case) * float(foreground_fraction)))
            fg = np.argwhere(arrays.occupancy > 0.5)
            for k in range(int(patches_per_case)):
                if k < n_fg and len(fg):
                    centre = fg[rng.integers(len(fg))]
                    start = [int(np.clip(centre[a] - self.patch[a] // 2, 0, room[a])) for a in range(3)]
                else:
                    start = [int(rng.integers(room[a] + 1)) for a in range(3)]
                self.items.append((c, tuple(start)))
        # Every process of a distributed run needs a sample: repeat the items cyclically up to
        # min_items (a case trained whole gives one item).
        self.items += [self.items[i % len(self.items)] for i in range(max(0, int(min_items) - len(self.items)))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        import torch

        c, (i, j, k) = self.items[index]
        case = self.cases[c]
        px, py, pz = self.patch
        window = (slice(i, i + px), slice(j, j + py), slice(k, k + pz))

        def tensor(a):
            return torch.from_numpy(np.ascontiguousarray(a[window], dtype=np.float32))[None]

        return {"image": tensor(case.image), "occupancy": tensor(case.occupancy), "sdf_mm": tensor(case.sdf_mm),
                "spacing_mm": torch.tensor(case.spacing_mm, dtype=torch.float32)}
