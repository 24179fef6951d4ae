"""Primus, the nnU-Net group's 3-D vision transformer, in plain PyTorch.

Primus (Wald et al. 2025, "Primus: Enforcing Attention Usage for 3D Medical Image
Segmentation") is a patch embedding (one strided convolution), an EVA-02 transformer
(pre-norm blocks with rotary position embedding over the 3-D token grid, a learned
absolute positional embedding, a SwiGLU MLP with a norm inside, an inner norm in
attention and layer scale) and a patch decoder (transposed convolutions that halve the
width at each step back to the voxel grid). nnssl pretrains it (PrimusS/B/M/L) and
nnU-Net fine-tunes it.

**Why hand-written.** The reference implementation lives in dynamic-network-architectures
(DNA) >= 0.4 (``architectures/primus.py``, ``building_blocks/eva.py``,
``building_blocks/patch_encode_decode.py``) and is built from ``timm`` (EvaBlock,
RotaryEmbeddingCat, PatchDropout). ``import timm`` imports torchvision, and PyPI's
torchvision does not import beside the CPU build of torch that medtl installs
("operator torchvision::nms does not exist"); newer timm also dropped the
``PatchDropout(return_indices=...)`` that DNA passes. This module therefore rebuilds the
network from those sources, so that **its state-dict names and shapes equal DNA 0.4.4's
PrimusS/B/M/L exactly** (nnssl and nnU-Net checkpoints load key for key) and **its output
equals DNA's** for the same weights. ``tests/models/test_primus.py`` checks both against a
reference that DNA 0.4.4 with timm 1.0.15 wrote (``tests/models/fixtures/``). Masked
pretraining (patch dropout, register tokens) is not rebuilt: medtl fine-tunes.

The network takes one input shape, the training patch: the learned positional embedding
has one vector per token of that grid (:func:`interpolate_pos_embed` resizes a pretrained
one), and the rotary embedding is computed for that grid, as nnU-Net does when it
fine-tunes a Primus at another patch size (the reference shape is the new grid).

Example:
    >>> net = Primus(1, 2, (32, 32, 16), embed_dim=48, depth=2, heads=2).eval()
    >>> net(torch.zeros(1, 1, 32, 32, 16)).shape
    torch.Size([1, 2, 32, 32, 16])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from medtl.models.primus_sizes import PRIMUS_PRESETS
from medtl.models.primus_sizes import primus_size_problem as size_problem


@dataclass(frozen=True)
class PrimusSize:
    """The transformer's width, depth and heads (DNA's ``_PRIMUS_CONFIGS``)."""

    embed_dim: int
    depth: int
    heads: int


#: DNA's presets, as nnssl pretrains them (PrimusS, PrimusB, PrimusM, PrimusL).
PRIMUS_SIZES: dict[str, PrimusSize] = {k: PrimusSize(*v) for k, v in PRIMUS_PRESETS.items()}
#: The patch embedding nnssl and nnU-Net use for every preset.
PATCH_EMBED = 8
#: DNA's MLP ratio: SwiGLU's hidden width is ``int(embed_dim * MLP_RATIO)``.
MLP_RATIO = 4 * 2 / 3
#: DNA's presets' layer scale (``init_values``).
LAYER_SCALE = 0.1


def rotary_embedding(grid: Sequence[int], dim: int) -> torch.Tensor:
    """Sines then cosines of the token grid's positions, ``(tokens, 2 × 1.5 × dim)``.

    What timm's ``RotaryEmbeddingCat(dim, in_pixels=False, feat_shape=grid,
    ref_feat_shape=grid)`` caches: ``dim / 4`` frequencies ``10000^(-i / (dim / 4))`` per
    axis, positions 0 … n − 1 along each axis, each value repeated twice (pairs rotate
    together), computed in the same order of operations so that the floats agree.
    """
    bands_n = dim // 4
    exponent = torch.arange(0, bands_n, 1, dtype=torch.int64).to(torch.float32) / bands_n
    bands = 1.0 / (10000.0**exponent)
    axes = [torch.arange(s, dtype=torch.int64).to(torch.float32) for s in grid]
    axes = [t / s * s for t, s in zip(axes, grid, strict=True)]  # timm's reference-shape rescale
    positions = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).unsqueeze(-1) * bands
    tokens = math.prod(grid)
    sin = positions.sin().reshape(tokens, -1).repeat_interleave(2, -1)
    cos = positions.cos().reshape(tokens, -1).repeat_interleave(2, -1)
    return torch.cat([sin, cos], -1)


def apply_rotary(x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
    """Rotate each (even, odd) pair of ``x``'s last axis by its token's angles."""
    sin, cos = embedding.tensor_split(2, -1)
    rotated = torch.stack([-x[..., 1::2], x[..., ::2]], -1).reshape(x.shape)
    return x * cos + rotated * sin


class LayerNormNd(nn.Module):
    """Layer norm over the channel axis of ``(B, C, *spatial)`` (DNA's, eps 1e-6)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        shape = (1, -1, *([1] * (x.ndim - 2)))
        return self.weight.view(shape) * x + self.bias.view(shape)


class PatchEmbed(nn.Module):
    """One convolution with kernel = stride = the patch embedding (``proj``)."""

    def __init__(self, patch_embed: Sequence[int], in_channels: int, embed_dim: int) -> None:
        super().__init__()
        patch = tuple(patch_embed)
        self.proj = nn.Conv3d(in_channels, embed_dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def decoder_plan(
    patch_embed: Sequence[int], embed_dim: int, out_channels: int
) -> tuple[list[int], list[list[int]]]:
    """DNA's ``PatchDecode`` widths and strides: log2(patch) transposed convolutions whose
    width shrinks geometrically from ``embed_dim`` to ``out_channels`` (rounded to 8).

    Example:
        >>> decoder_plan((8, 8, 8), 864, 2)
        ([864, 144, 24, 2], [[2, 2, 2], [2, 2, 2], [2, 2, 2]])
    """
    stages = int(math.log(max(patch_embed)) / math.log(2))
    strides = [[2 if (p / 2**n) % 2 == 0 else 1 for p in patch_embed] for n in range(stages)]
    reduction = (embed_dim / (2 * out_channels)) ** (1 / stages)
    widths = [embed_dim] + [
        int(max(8, round((embed_dim / reduction ** (i + 1) + 1e-6) / 8) * 8)) for i in range(stages)
    ]
    widths[-1] = out_channels
    return widths, strides[::-1]


class PatchDecode(nn.Module):
    """Transposed convolutions from the token grid back to voxels (``decode``)."""

    def __init__(self, patch_embed: Sequence[int], embed_dim: int, out_channels: int) -> None:
        super().__init__()
        widths, strides = decoder_plan(patch_embed, embed_dim, out_channels)
        stages: list[nn.Module] = [
            nn.Sequential(
                nn.ConvTranspose3d(widths[s], widths[s + 1], strides[s], strides[s]),
                LayerNormNd(widths[s + 1]),
                nn.GELU(),
            )
            for s in range(len(strides) - 1)
        ]
        stages.append(nn.ConvTranspose3d(widths[-2], widths[-1], strides[-1], strides[-1]))
        self.decode = nn.Sequential(*stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(x)


class SwiGLU(nn.Module):
    """timm's SwiGLU with the norm inside: ``fc2(norm(silu(fc1_g(x)) * fc1_x(x)))``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1_g = nn.Linear(dim, hidden)
        self.fc1_x = nn.Linear(dim, hidden)
        self.act = nn.SiLU()
        self.norm = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.norm(self.act(self.fc1_g(x)) * self.fc1_x(x)))


class EvaAttention(nn.Module):
    """timm's EvaAttention with separate q/k/v projections (k without bias), rotary
    embedding on queries and keys, and a norm before the output projection."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = (
            p(x).reshape(b, n, self.heads, -1).transpose(1, 2)
            for p in (self.q_proj, self.k_proj, self.v_proj)
        )
        q, k = apply_rotary(q, rope).type_as(v), apply_rotary(k, rope).type_as(v)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(self.norm(x.transpose(1, 2).reshape(b, n, c)))


class EvaBlock(nn.Module):
    """A pre-norm transformer block with layer scale (``gamma_1``, ``gamma_2``)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = EvaAttention(dim, heads)
        self.gamma_1 = nn.Parameter(LAYER_SCALE * torch.ones(dim))
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = SwiGLU(dim, int(dim * MLP_RATIO))
        self.gamma_2 = nn.Parameter(LAYER_SCALE * torch.ones(dim))

    def forward(self, x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        x = x + self.gamma_1 * self.attn(self.norm1(x), rope)
        return x + self.gamma_2 * self.mlp(self.norm2(x))


class Eva(nn.Module):
    """The transformer: learned positional embedding, blocks, final norm (DNA's ``Eva``).

    The rotary embedding is a buffer left out of the state dict, as in timm.
    """

    def __init__(self, size: PrimusSize, grid: Sequence[int]) -> None:
        super().__init__()
        problem = size_problem(size.embed_dim, size.heads)
        if problem:
            raise ValueError(problem)
        self.pos_embed = nn.Parameter(torch.zeros(1, math.prod(grid), size.embed_dim))
        rope_dim = round(size.embed_dim // size.heads / 1.5)
        self.rope: torch.Tensor
        self.register_buffer("rope", rotary_embedding(grid, rope_dim), persistent=False)
        self.blocks = nn.ModuleList(EvaBlock(size.embed_dim, size.heads) for _ in range(size.depth))
        self.norm = nn.LayerNorm(size.embed_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        """DNA's: truncated normal (std 0.02) linears and positional embedding, zero
        biases, each block's output projections scaled down by sqrt(2 × its depth)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        with torch.no_grad():
            for i, block in enumerate(self.blocks, start=1):
                block.attn.proj.weight.div_(math.sqrt(2.0 * i))
                block.mlp.fc2.weight.div_(math.sqrt(2.0 * i))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embed
        for block in self.blocks:
            x = block(x, self.rope)
        return self.norm(x)


class Primus(nn.Module):
    """Patch embedding (``down_projection``), transformer (``eva``), patch decoder
    (``up_projection``), under DNA 0.4.4's names; ``mask_token`` is DNA's unused buffer
    for masked pretraining, kept so the state dicts are equal.

    Args:
        in_channels: image channels.
        num_classes: output channels.
        input_shape: the patch the network sees; each side a multiple of ``patch_embed``.
        patch_embed: voxels per token along each axis (a power of two).
        embed_dim, depth, heads: the transformer's size (PrimusM: 864, 16, 12).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        input_shape: Sequence[int],
        patch_embed: Sequence[int] = (PATCH_EMBED,) * 3,
        embed_dim: int = 864,
        depth: int = 16,
        heads: int = 12,
    ) -> None:
        super().__init__()
        if len(input_shape) != 3 or any(
            s % p for s, p in zip(input_shape, patch_embed, strict=True)
        ):
            raise ValueError(
                f"input shape {list(input_shape)} must be 3-D and a multiple of the patch "
                f"embedding {list(patch_embed)}"
            )
        self.input_shape = tuple(int(s) for s in input_shape)
        self.grid = tuple(s // p for s, p in zip(input_shape, patch_embed, strict=True))
        self.down_projection = PatchEmbed(patch_embed, in_channels, embed_dim)
        self.up_projection = PatchDecode(patch_embed, embed_dim, num_classes)
        self.eva = Eva(PrimusSize(embed_dim, depth, heads), self.grid)
        self.mask_token: torch.Tensor
        self.register_buffer("mask_token", torch.zeros(1, 1, embed_dim))
        for part in (self.down_projection, self.up_projection):
            for module in part.modules():
                if isinstance(module, nn.Conv3d | nn.ConvTranspose3d):
                    nn.init.kaiming_normal_(module.weight, a=1e-2)
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[2:]) != self.input_shape:
            raise ValueError(
                f"Primus was built for {list(self.input_shape)} voxel patches (its positional "
                f"embedding has one vector per token of that grid), got {list(x.shape[2:])}"
            )
        x = self.down_projection(x)
        b, c, *grid = x.shape
        x = self.eva(x.flatten(2).transpose(1, 2))
        return self.up_projection(x.transpose(1, 2).reshape(b, c, *grid))


def interpolate_pos_embed(
    pos_embed: torch.Tensor, source: Sequence[int], target: Sequence[int]
) -> torch.Tensor:
    """A learned positional embedding ``(1, tokens, C)`` resized from one token grid to
    another by trilinear interpolation (``align_corners=False``), as nnU-Net does when it
    fine-tunes a pretrained Primus at another patch size.

    Example:
        >>> ramp = torch.arange(4.0).repeat_interleave(16).reshape(1, 64, 1)  # x = 0..3
        >>> interpolate_pos_embed(ramp, (4, 4, 4), (2, 2, 2)).flatten().tolist()
        [0.5, 0.5, 0.5, 0.5, 2.5, 2.5, 2.5, 2.5]
    """
    channels = pos_embed.shape[-1]
    grid = pos_embed.transpose(1, 2).reshape(1, channels, *source)
    resized = F.interpolate(grid.float(), size=tuple(target), mode="trilinear", align_corners=False)
    return resized.reshape(1, channels, -1).transpose(1, 2).to(pos_embed.dtype).contiguous()
