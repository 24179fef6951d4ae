"""MONAI segmentation networks, each described by which parameters form its encoder.

Transfer learning needs to know, for any network, which parameters are the encoder
(copied from a pretrained checkpoint, maybe frozen), which are the decoder, and which
are the head (always rebuilt for the task's classes). An :class:`Architecture` states
this with parameter-name prefixes, so the same transfer code serves every network.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from medtl.config import ModelConfig
from medtl.kernel.errors import ConfigError
from medtl.models.primus_sizes import PRIMUS_PRESETS, primus_size_problem

if TYPE_CHECKING:  # torch is imported where it is used: the workflow checks patch sizes
    from torch import nn


@dataclass(frozen=True)
class Architecture:
    """How to build a network and how its parameters split into parts.

    Attributes:
        build: ``build(config, in_channels, out_channels) -> nn.Module``.
        encoder_prefixes: parameter-name prefixes of the encoder.
        head_prefixes: parameter-name prefixes of the output head.
        patch_multiple: every patch side must be a multiple of this.
        multiple_of: where the multiple depends on the settings (e.g. the number of
            stages), the function of the model config that gives it; else None.
        stem_keys: weights of the first layer, whose second axis is the input channels
            (adapted when a checkpoint was trained with another number of channels).
        encoder_stages: where the generic rule of :mod:`medtl.models.stages` does not
            split the encoder by resolution, the function of the built network that gives
            its stages (stem first; each a prefix or a sequence of prefixes); else None.
        input_sized: the network is built for one input shape (``primus``): ``build``
            takes the patch size as a fourth argument.
        any_side: eager PyTorch takes inputs of any side (MONAI's BasicUNet pads where a
            pooled side is odd), so prediction may run on a case's own sides; an ONNX
            export still needs multiples of ``patch_multiple`` (the trace fixes the
            padding).
        pos_embed_key: a learned positional embedding ``(1, tokens, C)`` over the token
            grid (the built network's ``grid``), resized when a checkpoint was trained on
            another grid; empty when there is none.
    """

    build: Callable[..., nn.Module]
    encoder_prefixes: tuple[str, ...]
    head_prefixes: tuple[str, ...]
    patch_multiple: int
    stem_keys: tuple[str, ...] = ()
    multiple_of: Callable[[ModelConfig], int] | None = None
    encoder_stages: Callable[[nn.Module], Sequence[str | Sequence[str]]] | None = None
    input_sized: bool = False
    any_side: bool = False
    pos_embed_key: str = ""

    def part_of(self, name: str) -> str:
        """``"encoder"``, ``"head"`` or ``"decoder"`` for a parameter or buffer name."""
        if name.startswith(self.encoder_prefixes):
            return "encoder"
        if name.startswith(self.head_prefixes):
            return "head"
        return "decoder"


def _basicunet(cfg: ModelConfig, in_channels: int, out_channels: int) -> nn.Module:
    from monai.networks.nets import BasicUNet

    if len(cfg.features) != 6:
        raise ConfigError(
            f"config key 'model.features': basicunet needs 6 widths, got {list(cfg.features)}; "
            "e.g. [16, 16, 32, 64, 128, 16]"
        )
    return BasicUNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        features=tuple(cfg.features),
        dropout=cfg.dropout,
    )


def _flexibleunet(cfg: ModelConfig, in_channels: int, out_channels: int) -> nn.Module:
    from monai.networks.nets import FlexibleUNet

    # pretrained=False always: MONAI would otherwise download weights from a hub.
    return FlexibleUNet(
        in_channels=in_channels,
        out_channels=out_channels,
        backbone=cfg.backbone,
        pretrained=False,
        spatial_dims=3,
        dropout=cfg.dropout,
    )


#: Swin UNETR width when ``model.features`` is not given: the self-supervised weights'.
SWINUNETR_FEATURE_SIZE = 48


def _uses_default_features(cfg: ModelConfig) -> bool:
    """Whether ``model.features`` was left at its (basicunet-shaped) default."""
    return tuple(cfg.features) == ModelConfig().features


def _swinunetr(cfg: ModelConfig, in_channels: int, out_channels: int) -> nn.Module:
    from monai.networks.nets import SwinUNETR

    # model.features[0] is Swin UNETR's feature_size; the default features are basicunet's,
    # so they mean "not given" here and the published self-supervised width (48) is used.
    size = SWINUNETR_FEATURE_SIZE if _uses_default_features(cfg) else int(cfg.features[0])
    if size <= 0 or size % 12:
        raise ConfigError(
            f"config key 'model.features': swinunetr takes its feature_size from "
            f"model.features[0], got {size}; it must be a positive multiple of 12 (its "
            "attention heads are 3, 6, 12, 24). How to fix: use e.g. features: [48] (the "
            "published self-supervised weights) or [12] for a small network"
        )
    return SwinUNETR(
        in_channels=in_channels,
        out_channels=out_channels,
        feature_size=size,
        drop_rate=cfg.dropout,
        spatial_dims=3,
    )


def _nnunet_features(cfg: ModelConfig) -> tuple[int, ...]:
    """The stage widths of an nnU-Net network: ``model.features``, or nnU-Net's default."""
    from medtl.models.nnunet_networks import NNUNET_FEATURES

    features = NNUNET_FEATURES if _uses_default_features(cfg) else tuple(cfg.features)
    if not 2 <= len(features) <= 7 or min(features) <= 0:
        raise ConfigError(
            f"config key 'model.features': {cfg.name} needs 2 to 7 positive stage widths, "
            f"got {list(features)}; e.g. nnU-Net's 3d_fullres {list(NNUNET_FEATURES)}"
        )
    return features


def _plainconvunet(cfg: ModelConfig, in_channels: int, out_channels: int) -> nn.Module:
    from medtl.models.nnunet_networks import plain_conv_unet

    return plain_conv_unet(in_channels, out_channels, _nnunet_features(cfg), cfg.dropout)


def _resencunet(cfg: ModelConfig, in_channels: int, out_channels: int) -> nn.Module:
    from medtl.models.nnunet_networks import residual_encoder_unet

    return residual_encoder_unet(in_channels, out_channels, _nnunet_features(cfg), cfg.dropout)


def _nnunet_multiple(cfg: ModelConfig) -> int:
    """Strides 1 then 2: n stages halve the patch n - 1 times (six by default: 32)."""
    return 32 if _uses_default_features(cfg) else 2 ** (len(cfg.features) - 1)


def _resenc_stages(model: nn.Module) -> list[str]:
    """The stem, then one stage per resolution: ``encoder.stem``, ``encoder.stages.{i}``."""
    return ["encoder.stem", *(f"encoder.stages.{i}" for i in range(len(model.encoder.stages)))]


def primus_size(cfg: ModelConfig) -> tuple[int, int, int]:
    """``(embed_dim, depth, heads)``: ``model.preset``'s, or ``model.features`` when given.

    Example:
        >>> primus_size(ModelConfig(name="primus", preset="M"))
        (864, 16, 12)
        >>> primus_size(ModelConfig(name="primus", features=(48, 2, 2)))
        (48, 2, 2)
    """
    if _uses_default_features(cfg):
        return PRIMUS_PRESETS[cfg.preset]
    features = tuple(int(f) for f in cfg.features)
    problem = "" if len(features) == 3 else f"{len(features)} values"
    if not problem and features[1] <= 0:
        problem = f"depth {features[1]}"
    problem = problem or primus_size_problem(features[0], features[2]) or ""
    if problem:
        raise ConfigError(
            f"config key 'model.features': primus takes [embed_dim, depth, heads], got "
            f"{list(cfg.features)}: {problem}. How to fix: use e.g. [48, 2, 2] for a small "
            f"network, or leave features out and set model.preset ({', '.join(PRIMUS_PRESETS)})"
        )
    return features[0], features[1], features[2]


def _primus_embed(cfg: ModelConfig) -> int:
    """The patch embedding, a power of two (the patch decoder halves it step by step)."""
    p = cfg.patch_embed
    if p < 2 or p & (p - 1):
        raise ConfigError(
            f"config key 'model.patch_embed': got {p}; Primus's patch decoder needs a power "
            "of two (2, 4, 8, 16). How to fix: use 8, as nnssl's and nnU-Net's Primus do"
        )
    return p


def _primus(
    cfg: ModelConfig, in_channels: int, out_channels: int, patch_size: Sequence[int]
) -> nn.Module:
    from medtl.models.primus import Primus

    embed_dim, depth, heads = primus_size(cfg)
    embed = _primus_embed(cfg)
    return Primus(in_channels, out_channels, patch_size, (embed,) * 3, embed_dim, depth, heads)


#: How many groups of transformer blocks Primus's encoder stages are.
PRIMUS_BLOCK_GROUPS = 4


def _primus_stages(model: nn.Module) -> list[tuple[str, ...]]:
    """The patch embedding with the positional embedding first, then the transformer's
    blocks in up to four equal groups, the last with the final norm."""
    depth = len(model.eva.blocks)
    groups = min(PRIMUS_BLOCK_GROUPS, depth)
    bounds = [round(g * depth / groups) for g in range(groups + 1)]
    stages = [("down_projection", "eva.pos_embed")]
    for g in range(groups):
        stages.append(tuple(f"eva.blocks.{i}" for i in range(bounds[g], bounds[g + 1])))
    stages[-1] = (*stages[-1], "eva.norm")
    return stages


ARCHITECTURES: dict[str, Architecture] = {
    "basicunet": Architecture(
        build=_basicunet,
        encoder_prefixes=("conv_0.", "down_1.", "down_2.", "down_3.", "down_4."),
        head_prefixes=("final_conv.",),
        patch_multiple=16,
        stem_keys=("conv_0.conv_0.conv.weight",),
        any_side=True,
    ),
    "flexibleunet": Architecture(
        build=_flexibleunet,
        encoder_prefixes=("encoder.",),
        head_prefixes=("segmentation_head.",),
        patch_multiple=32,
        stem_keys=("encoder.conv1.weight",),
    ),
    # The self-supervised Swin UNETR weights cover the Swin transformer only, so that is
    # the encoder; the convolutional encoder1-4 blocks train from scratch with the decoder.
    "swinunetr": Architecture(
        build=_swinunetr,
        encoder_prefixes=("swinViT.",),
        head_prefixes=("out.",),
        patch_multiple=32,
        stem_keys=("swinViT.patch_embed.proj.weight",),
    ),
    # nnU-Net's networks, built by dynamic-network-architectures (medtl.models.nnunet_networks).
    # The head is every segmentation layer: the deep-supervision ones too, which DNA builds
    # and the forward pass leaves unused.
    "plainconvunet": Architecture(
        build=_plainconvunet,
        encoder_prefixes=("encoder.",),
        head_prefixes=("decoder.seg_layers.",),
        patch_multiple=32,
        stem_keys=("encoder.stages.0.0.convs.0.conv.weight",),
        multiple_of=_nnunet_multiple,
    ),
    "resencunet": Architecture(
        build=_resencunet,
        encoder_prefixes=("encoder.",),
        head_prefixes=("decoder.seg_layers.",),
        patch_multiple=32,
        stem_keys=("encoder.stem.convs.0.conv.weight",),
        multiple_of=_nnunet_multiple,
        encoder_stages=_resenc_stages,
    ),
    # Primus (medtl.models.primus): the patch embedding and the transformer are the
    # encoder; the patch decoder's widths follow the classes, so all of it is the head.
    "primus": Architecture(
        build=_primus,
        encoder_prefixes=("down_projection.", "eva."),
        head_prefixes=("up_projection.",),
        patch_multiple=8,
        stem_keys=("down_projection.proj.weight",),
        multiple_of=_primus_embed,
        encoder_stages=_primus_stages,
        input_sized=True,
        pos_embed_key="eva.pos_embed",
    ),
}


def architecture_name(arch: Architecture) -> str:
    """The registry name of ``arch`` (``""`` for an unregistered one)."""
    return next((name for name, a in ARCHITECTURES.items() if a is arch), "")


def get_architecture(name: str) -> Architecture:
    """The architecture registered under ``name``, or a clear error."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ConfigError(
            f"config key 'model.name': got {name!r}; allowed values: {', '.join(ARCHITECTURES)}"
        ) from None


def build_network(
    cfg: ModelConfig,
    in_channels: int,
    out_channels: int,
    patch_size: Sequence[int] | None = None,
) -> nn.Module:
    """Build the configured network with a fresh head for ``out_channels`` classes.

    ``patch_size`` is the patch the network will see; ``primus`` is built for it (its
    positional embedding has one vector per token) and refuses to be built without it.

    Example:
        >>> import torch
        >>> net = build_network(ModelConfig(features=(4, 4, 8, 8, 16, 4)), 1, 2).eval()
        >>> net(torch.zeros(1, 1, 32, 32, 16)).shape
        torch.Size([1, 2, 32, 32, 16])
    """
    arch = get_architecture(cfg.name)
    if not arch.input_sized:
        return arch.build(cfg, in_channels, out_channels)
    if patch_size is None:
        raise ConfigError(
            f"model.name: {cfg.name} is built for one input shape, the training patch, and "
            "none was given. How to fix: pass the patch size (train.patch_size)"
        )
    check_patch_size(cfg, tuple(patch_size))
    return arch.build(cfg, in_channels, out_channels, tuple(int(p) for p in patch_size))


def input_multiple(cfg: ModelConfig) -> int:
    """What every side of the network's input must be a multiple of; 0: only the patch.

    Convolutional networks take any input whose sides are multiples of their
    downsampling factor; a network built for one input shape (``primus``) takes only the
    training patch, which 0 says.

    Example:
        >>> input_multiple(ModelConfig()), input_multiple(ModelConfig(name="primus"))
        (16, 0)
    """
    arch = get_architecture(cfg.name)
    if arch.input_sized:
        return 0
    return arch.multiple_of(cfg) if arch.multiple_of else arch.patch_multiple


def window_multiple(cfg: ModelConfig) -> int:
    """What every side of a prediction window must be a multiple of in PyTorch; 0: only
    the patch, 1: any side (``Architecture.any_side``), else :func:`input_multiple`.

    Example:
        >>> window_multiple(ModelConfig()), window_multiple(ModelConfig(name="swinunetr"))
        (1, 32)
    """
    return 1 if get_architecture(cfg.name).any_side else input_multiple(cfg)


def patch_problem(cfg: ModelConfig, patch_size: tuple[int, ...] | list[int]) -> str | None:
    """What is wrong with a patch for the configured network, or None if it fits.

    Every side must be a multiple of the network's downsampling factor
    (``Architecture.patch_multiple``, or ``multiple_of(cfg)`` where it follows the
    settings), and not every side may equal it. Needs no torch: the workflow calls it
    when it starts, before any job.

    Example:
        >>> patch_problem(ModelConfig(), [32, 32, 16]) is None
        True
        >>> print(patch_problem(ModelConfig(), [24, 24, 24]))  # doctest: +ELLIPSIS
        got [24, 24, 24]; basicunet needs every side to be a multiple of 16. How to fix: ...
    """
    arch = get_architecture(cfg.name)
    multiple = arch.multiple_of(cfg) if arch.multiple_of else arch.patch_multiple
    if any(p % multiple for p in patch_size):
        fixed = [max(multiple, round(p / multiple) * multiple) for p in patch_size]
        if all(f == multiple for f in fixed):  # would leave one voxel: see below
            fixed[list(patch_size).index(max(patch_size))] = 2 * multiple
        return (
            f"got {list(patch_size)}; {cfg.name} needs every side to be a multiple of "
            f"{multiple}. How to fix: use e.g. {fixed}"
        )
    if all(p == multiple for p in patch_size):
        return (
            f"got {list(patch_size)}; {cfg.name} downsamples by {multiple}, which leaves a "
            f"single voxel at its deepest level. How to fix: make at least one side "
            f"{2 * multiple} or more"
        )
    return None


def check_patch_size(
    cfg: ModelConfig, patch_size: tuple[int, ...], key: str = "train.patch_size"
) -> None:
    """Refuse a patch the network cannot downsample evenly (see :func:`patch_problem`)."""
    problem = patch_problem(cfg, patch_size)
    if problem:
        raise ConfigError(f"config key '{key}': {problem}")


def count_parameters(model: nn.Module, arch: Architecture) -> dict[str, int]:
    """Number of parameters per part (encoder, decoder, head)."""
    counts = {"encoder": 0, "decoder": 0, "head": 0}
    for name, p in model.named_parameters():
        counts[arch.part_of(name)] += p.numel()
    return counts


def encoder_state_keys(model: nn.Module, arch: Architecture) -> list[str]:
    """Names in the model's state dict that belong to the encoder (aliases left out)."""
    from medtl.models.nnunet_networks import canonical_state

    return [k for k in canonical_state(model) if arch.part_of(k) == "encoder"]


def freeze_encoder(model: nn.Module, arch: Architecture) -> int:
    """Stop gradients through the encoder; returns the number of frozen parameters."""
    n = 0
    for name, p in model.named_parameters():
        if arch.part_of(name) == "encoder":
            p.requires_grad_(False)
            n += p.numel()
    return n


def param_groups(
    model: nn.Module, arch: Architecture, lr: float, encoder_lr_scale: float
) -> list[dict]:
    """Optimiser parameter groups: the encoder at ``lr * encoder_lr_scale``, the rest at ``lr``."""
    enc, rest = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (enc if arch.part_of(name) == "encoder" else rest).append(p)
    groups = [{"params": rest, "lr": lr, "name": "decoder+head"}]
    if enc:
        groups.append({"params": enc, "lr": lr * encoder_lr_scale, "name": "encoder"})
    return groups
