"""nnU-Net's 3-D networks, built by the library nnU-Net saves its checkpoints from.

``dynamic-network-architectures`` (DNA, maintained by the nnU-Net group) defines the
networks nnU-Net v2 trains; an nnU-Net checkpoint's ``network_weights`` is the state dict
of one of them. medtl builds them with DNA itself, so such a checkpoint loads key for key:

* :func:`plain_conv_unet`: DNA's ``PlainConvUNet`` as nnU-Net's default planner
  (``ExperimentPlanner``) configures ``3d_fullres`` on isotropic data: 3×3×3 kernels,
  stride 1 in the first stage and 2 after, two convolutions per stage in the encoder and
  two in each decoder stage, convolution bias, affine ``InstanceNorm3d`` (eps 1e-5),
  ``LeakyReLU(0.01, inplace=True)``;
* :func:`residual_encoder_unet`: DNA's ``ResidualEncoderUNet`` as nnU-Net's ResEnc presets
  (``nnUNetPlannerResEncM``, ``…L``, ``…XL``) configure it: a one-convolution stem
  (``encoder.stem``), residual basic blocks per stage (:data:`RESENC_BLOCKS`), one
  convolution per decoder stage; otherwise as above. The M, L and XL presets build the
  same network shape for the same data: they differ only in the GPU memory they plan for
  (8, 24 and 40 GB), hence in patch and batch size, and so in the number of stages.

Deep supervision is off: the forward pass returns the full-resolution output. DNA still
builds one segmentation layer per decoder stage (``decoder.seg_layers.{i}``) so that
deep-supervision checkpoints always load; only the last one is used.

**Aliases.** DNA registers some modules twice: each convolution block's ``conv`` and
``norm`` again under ``all_modules.{i}``, and the whole encoder under
``decoder.encoder``. Their state dicts name those tensors twice; :func:`alias_names`
finds them by identity, and :func:`canonical_state` leaves them out, so the transfer code
counts every tensor once, under its first name (``…conv.weight``, ``encoder.…``).

Primus (DNA ≥ 0.4) is not built here: it needs ``timm``, whose ``torchvision`` replaces
the installed torch when pip resolves it; medtl pins DNA 0.3.1, which builds these two
networks with the same code and parameter names as 0.4.4.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

#: nnU-Net's 3d_fullres widths for a 6-stage network (32 doubling per stage, at most 320).
NNUNET_FEATURES: tuple[int, ...] = (32, 64, 128, 256, 320, 320)
#: Residual blocks per encoder stage of nnU-Net's ResEnc presets (6 for any further stage).
RESENC_BLOCKS: tuple[int, ...] = (1, 3, 4, 6, 6, 6)
#: Convolutions per encoder stage and per decoder stage of nnU-Net's default PlainConvUNet.
PLAIN_CONVS, PLAIN_DECODER_CONVS = 2, 2
#: Convolutions per decoder stage of the ResEnc presets.
RESENC_DECODER_CONVS = 1


def resenc_blocks(n_stages: int) -> tuple[int, ...]:
    """Residual blocks per stage of a ResEnc preset with ``n_stages`` stages.

    Example:
        >>> resenc_blocks(7)
        (1, 3, 4, 6, 6, 6, 6)
    """
    return tuple((*RESENC_BLOCKS, *[RESENC_BLOCKS[-1]] * n_stages)[:n_stages])


def _common(n_stages: int, dropout: float) -> dict:
    """Keyword arguments both networks share: nnU-Net's 3-D defaults."""
    return {
        "n_stages": n_stages,
        "conv_op": nn.Conv3d,
        "kernel_sizes": [[3, 3, 3]] * n_stages,
        "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n_stages - 1),
        "conv_bias": True,
        "norm_op": nn.InstanceNorm3d,
        "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": nn.Dropout3d if dropout > 0 else None,
        "dropout_op_kwargs": {"p": dropout} if dropout > 0 else None,
        "nonlin": nn.LeakyReLU,
        "nonlin_kwargs": {"inplace": True},
        "deep_supervision": False,
    }


def plain_conv_unet(
    in_channels: int, out_channels: int, features: Sequence[int], dropout: float = 0.0
) -> nn.Module:
    """DNA's ``PlainConvUNet`` with nnU-Net's 3d_fullres settings (see the module doc).

    Example:
        >>> net = plain_conv_unet(1, 2, (4, 8, 16)).eval()
        >>> net(torch.zeros(1, 1, 16, 16, 8)).shape
        torch.Size([1, 2, 16, 16, 8])
    """
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    n = len(features)
    return PlainConvUNet(
        input_channels=in_channels,
        features_per_stage=list(features),
        n_conv_per_stage=[PLAIN_CONVS] * n,
        num_classes=out_channels,
        n_conv_per_stage_decoder=[PLAIN_DECODER_CONVS] * (n - 1),
        **_common(n, dropout),
    )


def residual_encoder_unet(
    in_channels: int, out_channels: int, features: Sequence[int], dropout: float = 0.0
) -> nn.Module:
    """DNA's ``ResidualEncoderUNet`` as nnU-Net's ResEnc presets build it.

    Example:
        >>> net = residual_encoder_unet(1, 2, (4, 8, 16)).eval()
        >>> net(torch.zeros(1, 1, 16, 16, 8)).shape
        torch.Size([1, 2, 16, 16, 8])
        >>> "encoder.stem.convs.0.conv.weight" in canonical_state(net)
        True
    """
    from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet

    n = len(features)
    return ResidualEncoderUNet(
        input_channels=in_channels,
        features_per_stage=list(features),
        n_blocks_per_stage=list(resenc_blocks(n)),
        num_classes=out_channels,
        n_conv_per_stage_decoder=[RESENC_DECODER_CONVS] * (n - 1),
        **_common(n, dropout),
    )


def alias_names(model: nn.Module) -> dict[str, str]:
    """State-dict names that repeat an earlier name's tensor: alias → first name.

    Example:
        >>> aliases = alias_names(plain_conv_unet(1, 2, (4, 8)))
        >>> aliases["encoder.stages.0.0.convs.0.all_modules.0.weight"]
        'encoder.stages.0.0.convs.0.conv.weight'
        >>> aliases["decoder.encoder.stages.1.0.convs.1.conv.bias"]
        'encoder.stages.1.0.convs.1.conv.bias'
    """
    first: dict[int, str] = {}
    out: dict[str, str] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        owner = first.setdefault(id(tensor), name)
        if owner != name:
            out[name] = owner
    return out


def canonical_state(model: nn.Module, keep_vars: bool = False) -> dict[str, torch.Tensor]:
    """The model's state dict with every tensor once, under its first name.

    For a network without shared modules this is ``model.state_dict()``.
    """
    aliases = alias_names(model)
    return {k: v for k, v in model.state_dict(keep_vars=keep_vars).items() if k not in aliases}


def fold_aliases(
    state: Mapping[str, torch.Tensor], aliases: Mapping[str, str]
) -> tuple[dict[str, torch.Tensor], int]:
    """A checkpoint's tensors under the model's first names, aliases dropped.

    An alias whose first name is also in ``state`` is dropped; one whose first name is
    absent is renamed to it.

    Returns:
        The folded state and the number of alias keys it had.
    """
    out: dict[str, torch.Tensor] = {}
    n = 0
    for key, value in state.items():
        canonical = aliases.get(key)
        if canonical is None:
            out[key] = value
            continue
        n += 1
        if canonical not in state:
            out[canonical] = value
    return out, n


def complete_state(
    model: nn.Module, state: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A checkpoint's state dict with the model's alias names filled in.

    medtl checkpoints written by the network before it was built with DNA (the
    hand-written ``plainconvunet``) have the same first names but no aliases and only the
    last segmentation layer. Their aliases are filled from the first names; deep-
    supervision layers the forward pass never uses (every ``decoder.seg_layers.{i}`` but
    the last) are taken from the freshly built model.

    Returns:
        The completed state and the names taken from the fresh model.
    """
    out = dict(state)
    for alias, canonical in alias_names(model).items():
        if alias not in out and canonical in out:
            out[alias] = out[canonical]
    own = model.state_dict()
    heads = sorted({k.split(".")[2] for k in own if k.startswith("decoder.seg_layers.")}, key=int)
    kept = []
    for key, value in own.items():
        unused_head = key.startswith("decoder.seg_layers.") and key.split(".")[2] != heads[-1]
        if key not in out and unused_head:
            out[key] = value
            kept.append(key)
    return out, kept
