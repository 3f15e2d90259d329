"""3D U-Nets from MONAI, with per-axis strides for anisotropic voxels.

MONAI provides the attention U-Net (``monai.networks.nets.AttentionUnet``) and the blocks of the
plain U-Net (nnU-Net's, ``monai.networks.blocks.dynunet_block``); what is ours is the assembly of
a plain U-Net of any depth (two levels for VesselSDF's refiner) and the choice of strides: sparse-slice CT has slices 3-6 times further apart than its in-plane
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
    """A plain 3D U-Net of ``len(channels)`` levels (Çiçek et al. 2016, as nnU-Net builds it).

    Built from MONAI's nnU-Net blocks (``monai.networks.blocks.dynunet_block``): at every level
    two 3x3x3 convolutions with normalisation and leaky ReLU (``UnetBasicBlock``; the first of a
    lower level strided), transposed-convolution upsampling, concatenation with the skip and two
    convolutions (``UnetUpBlock``), a 1x1x1 linear output (``UnetOutBlock``). The full resolution
    has its own convolutions and skip, which thin vessels need: MONAI's ``UNet`` goes down at its
    first convolution and back up at its last, with nothing at full resolution in between, and
    MONAI's ``DynUNet`` (the same blocks) needs at least three levels, the refiner has two.

    Args:
        channels: features per level, e.g. ``(8, 16)`` (VesselSDF's refiner) or ``(8, 16, 32, 64)``.
        strides: ``len(channels) - 1`` stride triples (:func:`pooling_strides`).
        norm: ``"instance"`` (nnU-Net's choice for images) or ``"batch"``. VesselSDF's refiner
            uses batch normalisation: its input is a probability whose absolute level (0.5 is
            the surface) carries the answer, which instance normalisation takes away patch by
            patch (measured on phantom tubes: validation Dice of ``sdf < 0`` 0.45 with instance
            against 0.79 with batch normalisation, docs/methods/vessel-sdf.md).

    Returns:
        ``nn.Module`` mapping (B, in_channels, X, Y, Z) to (B, out_channels, X, Y, Z), for X, Y, Z
        multiples of :func:`total_strides`.
    """
    import torch
    from monai.networks.blocks.dynunet_block import UnetBasicBlock, UnetOutBlock, UnetUpBlock

    _check(channels, strides)
    if norm not in ("instance", "batch"):
        raise VesselfieldError(f"norm must be instance or batch, got {norm!r}")
    channels = [int(c) for c in channels]
    strides = [tuple(int(v) for v in s) for s in strides]

    class PlainUNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.down = torch.nn.ModuleList(
                [UnetBasicBlock(3, in_channels, channels[0], 3, 1, norm)]
                + [UnetBasicBlock(3, channels[i - 1], channels[i], 3, strides[i - 1], norm)
                   for i in range(1, len(channels))])
            self.up = torch.nn.ModuleList(
                [UnetUpBlock(3, channels[i], channels[i - 1], 3, strides[i - 1], strides[i - 1], norm)
                 for i in range(len(channels) - 1, 0, -1)])
            self.output_block = UnetOutBlock(3, channels[0], out_channels)

        def forward(self, x):
            skips = []
            for block in self.down:
                x = block(x)
                skips.append(x)
            x = skips.pop()
            for block in self.up:
                x = block(x, skips.pop())
            return self.output_block(x)

    return PlainUNet()


def _check(channels, strides) -> None:
    if len(channels) < 2 or any(int(c) < 1 for c in channels):
        raise VesselfieldError(f"a U-Net needs at least two levels of positive channel counts, got {tuple(channels)}")
    if len(strides) != len(channels) - 1:
        raise VesselfieldError(f"{len(channels)} levels need {len(channels) - 1} strides, got {len(strides)}")
