"""3D U-Nets from MONAI, with per-axis strides for anisotropic voxels.

MONAI provides the networks (``monai.networks.nets.AttentionUnet`` and ``UNet``); what is ours is
the choice of strides: sparse-slice CT has slices 3-6 times further apart than its in-plane
voxels, and halving the axial resolution at every level, as an isotropic U-Net does, would leave
one or two slices at the bottom. :func:`pooling_strides` follows nnU-Net's rule (Isensee et al.,
Nature Methods 2021): an axis is downsampled at a level only while its voxel size is less than
twice the finest one and enough voxels are left, so thin-slice axes are pooled first and the
volume becomes near-isotropic in mm before the axial axis is pooled.
"""

from __future__ import annotations

from collections.abc import Sequence

from vesselfield.errors import VesselfieldError

__all__ = ["attention_unet", "plain_unet", "pooling_strides", "total_strides"]

#: An axis is pooled only while at least this many voxels remain after halving (nnU-Net keeps
#: feature maps of 4 or more voxels at the bottom so 3x3x3 convolutions still see context).
MIN_VOXELS_AFTER_POOLING = 4
#: An axis is pooled only while its voxel size is below this multiple of the finest one (nnU-Net).
ANISOTROPY_RATIO = 2.0


def pooling_strides(spacing_mm: Sequence[float], patch_voxels: Sequence[int], levels: int) -> list[tuple[int, int, int]]:
    """Strides ``(sx, sy, sz)`` in {1, 2} of each of ``levels`` downsampling steps.

    At each level an axis is halved when its current voxel size (mm) is below
    ``ANISOTROPY_RATIO`` times the smallest current voxel size and at least
    ``MIN_VOXELS_AFTER_POOLING`` voxels remain after halving; a level where no axis qualifies
    still halves the axes that have room, so every level is a real downsampling where possible.

    Args:
        spacing_mm: (Δx, Δy, Δz) of the training data, mm.
        patch_voxels: (X, Y, Z) patch size.
        levels: downsampling steps (number of U-Net levels minus one).

    Returns:
        ``levels`` stride triples.
    """
    spacing = [float(v) for v in spacing_mm]
    size = [int(v) for v in patch_voxels]
    if len(spacing) != 3 or len(size) != 3 or min(spacing) <= 0 or min(size) < 1:
        raise VesselfieldError(f"pooling_strides needs 3 positive spacings and sizes, got {spacing_mm!r}, {patch_voxels!r}")
    strides = []
    for _ in range(int(levels)):
        finest = min(spacing)
        room = [s // 2 >= MIN_VOXELS_AFTER_POOLING and s % 2 == 0 for s in size]
        pick = [room[a] and spacing[a] < ANISOTROPY_RATIO * finest for a in range(3)]
        if not any(pick):
            pick = room
        step = tuple(2 if p else 1 for p in pick)
        strides.append(step)
        spacing = [sp * st for sp, st in zip(spacing, step)]
        size = [sz // st for sz, st in zip(size, step)]
    return strides


def total_strides(strides: Sequence[Sequence[int]]) -> tuple[int, int, int]:
    """The product of the strides per axis: patch sizes must be multiples of it."""
    out = [1, 1, 1]
    for s in strides:
        for a in range(3):
            out[a] *= int(s[a])
    return tuple(out)


def attention_unet(in_channels: int, out_channels: int, channels: Sequence[int], strides: Sequence[Sequence[int]]):
    """MONAI's 3D attention U-Net (Oktay et al., MIDL 2018): ``len(channels)`` levels.

    Each skip connection passes through an additive attention gate
    ``α = σ(ψ(ReLU(W_g g + W_x h)))`` (``g`` the coarser decoder features, ``h`` the skip), and
    ``α h`` is concatenated to the upsampled features: the gate of VesselSDF's eq. 2. Batch
    normalisation, ReLU; the output is linear (logits or an SDF).

    Args:
        channels: features per level, e.g. ``(8, 16, 32, 64)``.
        strides: ``len(channels) - 1`` stride triples (:func:`pooling_strides`).

    Returns:
        ``nn.Module`` mapping (B, in_channels, X, Y, Z) to (B, out_channels, X, Y, Z), for X, Y, Z
        multiples of :func:`total_strides`.
    """
    from monai.networks.nets import AttentionUnet

    _check(channels, strides)
    return AttentionUnet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels,
                         channels=tuple(int(c) for c in channels), strides=[tuple(s) for s in strides])


def plain_unet(in_channels: int, out_channels: int, channels: Sequence[int], strides: Sequence[Sequence[int]],
               norm: str = "instance"):
    """MONAI's 3D U-Net (Çiçek et al. 2016 as MONAI builds it): ``len(channels)`` levels.

    Strided convolutions down, transposed convolutions up, PReLU, no residual units, a linear
    output. ``norm``: ``"instance"`` (MONAI's default, nnU-Net's choice for images) or
    ``"batch"``. VesselSDF's refiner is this network with two levels and batch normalisation:
    its input is a probability whose absolute level (0.5 is the surface) carries the answer,
    and instance normalisation would take that level away, patch by patch (measured on the
    phantom tubes: validation Dice of ``sdf < 0`` 0.3-0.45 with instance normalisation against
    0.98 for stage 1's own mask).
    """
    from monai.networks.nets import UNet

    _check(channels, strides)
    if norm not in ("instance", "batch"):
        raise VesselfieldError(f"norm must be instance or batch, got {norm!r}")
    return UNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels,
                channels=tuple(int(c) for c in channels), strides=[tuple(s) for s in strides], num_res_units=0,
                norm=norm)


def _check(channels, strides) -> None:
    if len(channels) < 2 or any(int(c) < 1 for c in channels):
        raise VesselfieldError(f"a U-Net needs at least two levels of positive channel counts, got {tuple(channels)}")
    if len(strides) != len(channels) - 1:
        raise VesselfieldError(f"{len(channels)} levels need {len(channels) - 1} strides, got {len(strides)}")
