"""NUDF's network: a 3D convolutional image encoder and a point decoder that regresses an unsigned distance.

Sørensen, Juhl et al., "NUDF: Neural Unsigned Distance Fields for high resolution 3D medical
image segmentation", ISBI 2022 (``../shared/papers/nudf-sorensen-juhl-2022.txt``), eq. 1:
``f(p) = FCNN(Ψ(X)(p))``, with the encoder and decoder "similar to the networks of" IF-Net
(Chibane, Alldieck & Pons-Moll, CVPR 2020):

- **encoder** Ψ: per level two 3x3x3 convolutions with ReLU and batch normalisation, then a 2x2x2
  max pooling: feature maps of decreasing resolution;
- **point decoder**: at a query point ``p`` and at its six neighbours ``p ± δ e_i`` along the
  axes, every feature map (and the image itself) is sampled trilinearly; the ``7 x Σ channels``
  values are concatenated and a fully connected network (the paper: two hidden layers of 256)
  regresses the distance.

Coordinates are the region of interest's normalised coordinates ``u ∈ [-1, 1]^3`` (axis order
x, y, z of the ROI frame; ``u = ±1`` the centres of the first and last ROI voxels); distances are
in the same normalised unit (mm / half the ROI side). Tensors: images ``(B, 1, X, Y, Z)``,
points ``(B, P, 3)``, distances ``(B, P)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from vesselfield.errors import VesselfieldError

__all__ = ["build_udf_net"]


def build_udf_net(channels: Sequence[int] = (16, 32, 64, 128), hidden: Sequence[int] = (256, 256),
                  neighbour_offset: float = 0.0722, output_scale: float = 0.1, dropout: float = 0.0):
    """An untrained NUDF network (a plain ``nn.Module``).

    Args:
        channels: features of each encoder level (one level per entry; a level halves the
            resolution after its convolutions, except the last).
        hidden: widths of the decoder's hidden layers (the paper: two of 256).
        neighbour_offset: δ, the displacement of the six neighbour samples along the axes in
            normalised coordinates (IF-Net's 0.0722; 2.3 voxels of a 64-voxel ROI).
        output_scale: the decoder outputs ``output_scale * softplus(z)``: non-negative, smooth
            everywhere (the mesher differentiates it), and of the order of the clamped targets
            from the first step (the distance loss clamps at 0.1).
        dropout: dropout probability after each encoder level (the paper uses dropout in the
            encoder; 0 disables it).

    Returns:
        ``nn.Module`` with ``forward(image (B,1,X,Y,Z), points (B,P,3)) -> (B,P)``, and
        ``encode(image) -> list of feature maps`` / ``decode(features, points) -> (B,P)``, so a
        prediction encodes the image once and decodes any number of points.
    """
    import torch
    import torch.nn.functional as F

    channels = [int(c) for c in channels]
    hidden = [int(h) for h in hidden]
    if not channels or min(channels) < 1:
        raise VesselfieldError(f"encoder channels must be positive numbers, got {tuple(channels)}")
    if not hidden or min(hidden) < 1:
        raise VesselfieldError(f"decoder widths must be positive numbers, got {tuple(hidden)}")
    if not neighbour_offset >= 0:
        raise VesselfieldError(f"neighbour_offset must be >= 0, got {neighbour_offset}")
    if not 0 <= dropout < 1:
        raise VesselfieldError(f"dropout must be in [0, 1), got {dropout}")

    def level(cin: int, cout: int):
        return torch.nn.Sequential(
            torch.nn.Conv3d(cin, cout, 3, padding=1), torch.nn.ReLU(inplace=True), torch.nn.BatchNorm3d(cout),
            torch.nn.Conv3d(cout, cout, 3, padding=1), torch.nn.ReLU(inplace=True), torch.nn.BatchNorm3d(cout))

    class UdfNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.levels = torch.nn.ModuleList(
                [level(cin, cout) for cin, cout in zip([1] + channels[:-1], channels)])
            self.dropout = torch.nn.Dropout3d(dropout) if dropout > 0 else torch.nn.Identity()
            d = float(neighbour_offset)
            offsets = [[0.0, 0.0, 0.0]] + [[s * d if a == i else 0.0 for a in range(3)] for i in range(3)
                                           for s in (1.0, -1.0)]
            self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.float32), persistent=False)
            n_in = (1 + sum(channels)) * len(offsets)
            widths = [n_in] + hidden
            layers = []
            for a, b in zip(widths[:-1], widths[1:]):
                layers += [torch.nn.Linear(a, b), torch.nn.ReLU(inplace=True)]
            layers.append(torch.nn.Linear(widths[-1], 1))
            self.decoder = torch.nn.Sequential(*layers)
            self.output_scale = float(output_scale)

        def encode(self, image):
            """``[image, level 0, level 1, ...]``: (B, C_l, X_l, Y_l, Z_l) feature maps."""
            maps = [image]
            x = image
            for i, block in enumerate(self.levels):
                if i > 0:
                    x = F.max_pool3d(x, 2)
                x = self.dropout(block(x))
                maps.append(x)
            return maps

        def decode(self, maps, points):
            """(B, P) normalised distances at ``points`` (B, P, 3), normalised x, y, z."""
            b, p, _ = points.shape
            q = points[:, :, None, :] + self.offsets.to(points.dtype)  # (B, P, 7, 3)
            # grid_sample indexes a (B, C, D, H, W) tensor with (w, h, d) = (z, y, x) coordinates.
            grid = q.flip(-1).reshape(b, p * q.shape[2], 1, 1, 3)
            feats = [F.grid_sample(m, grid.to(m.dtype), mode="bilinear", padding_mode="border",
                                   align_corners=True).reshape(b, m.shape[1], p, q.shape[2]) for m in maps]
            x = torch.cat(feats, dim=1).permute(0, 2, 1, 3).reshape(b, p, -1)
            return self.output_scale * F.softplus(self.decoder(x)[..., 0])

        def forward(self, image, points):
            return self.decode(self.encode(image), points)

    return UdfNet()
