"""Convolutional networks for dense (voxel) prediction, built from MONAI (imported on first use).

- ``vesselfield.networks.unet``: the attention U-Net (Oktay et al. 2018, MONAI's) and a plain 3D
  U-Net of MONAI's nnU-Net blocks, for VesselSDF and its baselines, with strides chosen from the
  voxel spacing (anisotropic CT).

This package sits beside ``fields/`` (coordinate networks): methods build on both.
"""

from __future__ import annotations

from vesselfield.lazy import lazy_exports

_EXPORTS = {
    "attention_unet": "unet",
    "plain_unet": "unet",
    "pooling_strides": "unet",
    "total_strides": "unet",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
