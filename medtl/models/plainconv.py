"""A plain-convolution U-Net whose parameter names mirror nnU-Net's ``PlainConvUNet``.

nnU-Net v2 builds its default 3-D network with ``dynamic_network_architectures``
(``PlainConvUNet``). This module rebuilds that layout with plain PyTorch modules so an
nnU-Net checkpoint's encoder loads by name, without installing nnU-Net:

* ``encoder.stages.{s}.0.convs.{c}.conv`` / ``.norm``: stage ``s`` (stride 1 for the
  first stage, 2 after), two 3×3×3 convolutions each followed by an affine
  ``InstanceNorm3d`` and a ``LeakyReLU(0.01)``;
* ``decoder.transpconvs.{i}``, ``decoder.stages.{i}.convs.{c}.conv`` / ``.norm``: the
  decoder, deepest stage first, as in nnU-Net;
* ``decoder.seg_layers.{n_stages - 2}``: the 1×1×1 output head. nnU-Net builds one
  segmentation layer per decoder stage for deep supervision; medtl keeps only the last
  (full-resolution) one, under nnU-Net's name for it.

nnU-Net's state dicts also name every convolution a second time
(``convs.{c}.all_modules.{i}``) and repeat the encoder under ``decoder.encoder.``; those
are aliases of the same tensors and are not rebuilt here (the nnU-Net reader in
:mod:`medtl.models.weights` drops them).

Only isotropic 3×3×3 kernels and stride-2 downsampling are supported: an nnU-Net
checkpoint whose plans say otherwise (kernels ``[1, 3, 3]``, strides ``[1, 2, 2]``) is
refused by :mod:`medtl.models.nnunet_plans`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

#: nnU-Net's 3d_fullres widths for a 6-stage network (``features_per_stage``).
NNUNET_FEATURES: tuple[int, ...] = (32, 64, 128, 256, 320, 320)


class ConvNormAct(nn.Module):
    """``conv`` → ``norm`` → LeakyReLU, named as nnU-Net's ``ConvDropoutNormReLU``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, 3, stride, padding=1, bias=True)
        self.dropout = nn.Dropout3d(dropout) if dropout > 0 else nn.Identity()
        self.norm = nn.InstanceNorm3d(out_channels, eps=1e-5, affine=True)
        self.nonlin = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlin(self.norm(self.dropout(self.conv(x))))


class StackedConvs(nn.Module):
    """Two :class:`ConvNormAct` blocks under ``convs.{0,1}``; the first may be strided."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            ConvNormAct(in_channels, out_channels, stride, dropout),
            ConvNormAct(out_channels, out_channels, 1, dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x)


class PlainConvEncoder(nn.Module):
    """``stages.{s}.0``: one :class:`StackedConvs` per resolution stage; returns all skips."""

    def __init__(self, in_channels: int, features: Sequence[int], dropout: float) -> None:
        super().__init__()
        stages = []
        for s, width in enumerate(features):
            stride = 1 if s == 0 else 2
            stages.append(nn.Sequential(StackedConvs(in_channels, width, stride, dropout)))
            in_channels = width
        self.stages = nn.Sequential(*stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class PlainConvDecoder(nn.Module):
    """Transposed convolutions, conv stages and the full-resolution head, deepest first."""

    def __init__(self, features: Sequence[int], out_channels: int, dropout: float) -> None:
        super().__init__()
        n = len(features)
        self.transpconvs = nn.ModuleList(
            nn.ConvTranspose3d(features[-s], features[-(s + 1)], 2, 2, bias=True)
            for s in range(1, n)
        )
        self.stages = nn.ModuleList(
            StackedConvs(2 * features[-(s + 1)], features[-(s + 1)], 1, dropout)
            for s in range(1, n)
        )
        # nnU-Net's seg_layers.{n-2} is the full-resolution output; the deep-supervision
        # layers before it are not built (a ModuleDict keeps nnU-Net's index in the name).
        self.seg_layers = nn.ModuleDict(
            {str(n - 2): nn.Conv3d(features[0], out_channels, 1, 1, 0, bias=True)}
        )

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        x = skips[-1]
        for s, (up, stage) in enumerate(zip(self.transpconvs, self.stages, strict=True)):
            x = stage(torch.cat((up(x), skips[-(s + 2)]), 1))
        return self.seg_layers[str(len(self.stages) - 1)](x)


class PlainConvUNet(nn.Module):
    """nnU-Net's PlainConvUNet layout (3-D, kernel 3, strides 1 then 2, no deep supervision).

    Args:
        in_channels: input channels.
        out_channels: classes (the head's width).
        features: width of each resolution stage, shallowest first (at least two).
        dropout: dropout probability after each convolution (nnU-Net uses none).

    Example:
        >>> net = PlainConvUNet(1, 2, features=(4, 8, 16)).eval()
        >>> net(torch.zeros(1, 1, 16, 16, 8)).shape
        torch.Size([1, 2, 16, 16, 8])
        >>> "encoder.stages.0.0.convs.0.conv.weight" in net.state_dict()
        True
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        features: Sequence[int] = NNUNET_FEATURES,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(features) < 2:
            raise ValueError(f"features: need at least two stages, got {list(features)}")
        self.encoder = PlainConvEncoder(in_channels, features, dropout)
        self.decoder = PlainConvDecoder(features, out_channels, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))
