"""Model settings that would fit a checkpoint better, for the messages that refuse it.

When a checkpoint does not fit the configured network, :func:`suggest_settings` reads
what the checkpoint's names and shapes say about the network it was trained with (the
architecture, a ResNet's depth, nnU-Net's stage widths, the first layer's channels and
kernel) and names the config keys that would match it.

Example:
    >>> resnet_name({"encoder.layer1.0.conv1.weight", "encoder.layer2.0.conv1.weight",
    ...              "encoder.layer3.0.conv1.weight", "encoder.layer4.0.conv1.weight"})
    'resnet10'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from medtl.models.load_report import LoadReport
from medtl.models.networks import Architecture, architecture_name
from medtl.models.primus_sizes import PRIMUS_PRESETS
from medtl.models.weights import Weights

_RESNETS = {
    ("basic", (1, 1, 1, 1)): "resnet10",
    ("basic", (2, 2, 2, 2)): "resnet18",
    ("basic", (3, 4, 6, 3)): "resnet34",
    ("bottleneck", (3, 4, 6, 3)): "resnet50",
    ("bottleneck", (3, 4, 23, 3)): "resnet101",
    ("bottleneck", (3, 8, 36, 3)): "resnet152",
    ("bottleneck", (3, 24, 36, 3)): "resnet200",
}


def _resnet_layers(
    keys: Mapping[str, Any] | set[str], prefix: str = "encoder."
) -> tuple[str, tuple[int, ...]] | None:
    """``("basic" | "bottleneck", blocks per layer)`` of a ResNet state dict, or None."""
    blocks: dict[int, set[int]] = {}
    bottleneck = False
    for key in keys:
        m = re.match(re.escape(prefix) + r"layer([1-4])\.(\d+)\.(conv\d)\.", key)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
            bottleneck |= m.group(3) == "conv3"
    if sorted(blocks) != [1, 2, 3, 4]:
        return None
    return ("bottleneck" if bottleneck else "basic", tuple(len(blocks[i]) for i in (1, 2, 3, 4)))


def resnet_name(keys: Mapping[str, Any] | set[str], prefix: str = "encoder.") -> str | None:
    """``resnet18`` etc. from the block counts of a ResNet state dict, or None."""
    layers = _resnet_layers(keys, prefix)
    return _RESNETS.get(layers) if layers else None


def _resnet_text(keys: Mapping[str, Any] | set[str]) -> str:
    """``resnet18 (2, 2, 2, 2 basic blocks per layer)``, for the messages."""
    layers = _resnet_layers(keys)
    if layers is None:
        return "no ResNet"
    name = _RESNETS.get(layers, "an unlisted ResNet")
    return f"{name} ({', '.join(map(str, layers[1]))} {layers[0]} blocks in layer1-4)"


def _nnunet_widths(state: Mapping[str, torch.Tensor]) -> list[int]:
    """Stage widths of a PlainConvUNet or ResidualEncoderUNet state dict."""
    widths = {}
    for key, value in state.items():
        m = re.fullmatch(
            r"encoder\.stages\.(\d+)\.(?:0\.convs\.0|blocks\.0\.conv1)\.conv\.weight", key
        )
        if m:
            widths[int(m.group(1))] = int(value.shape[0])
    return [widths[s] for s in sorted(widths)]


def _guess_architecture(state: Mapping[str, torch.Tensor]) -> str | None:
    """The medtl architecture whose names the (renamed) checkpoint uses."""
    keys = set(state)
    if any(k.startswith("swinViT.") for k in keys):
        return "swinunetr"
    if "encoder.conv1.weight" in keys:
        return "flexibleunet"
    if any(k.startswith("encoder.stem.") for k in keys):
        return "resencunet"
    if any(k.startswith("encoder.stages.") and ".convs." in k for k in keys):
        return "plainconvunet"
    if "conv_0.conv_0.conv.weight" in keys:
        return "basicunet"
    return None


def _primus_size(state: Mapping[str, torch.Tensor]) -> list[int]:
    """``[embed_dim, depth]`` of a Primus state dict (empty when it is none)."""
    pos = state.get("eva.pos_embed")
    blocks = {k.split(".")[2] for k in state if k.startswith("eva.blocks.")}
    return [int(pos.shape[-1]), len(blocks)] if pos is not None else []


def _settings_text(settings: Mapping[str, Any]) -> str:
    """``model.name: resencunet, model.features: [32, 64]``."""
    return ", ".join(f"model.{k}: {v}" for k, v in settings.items())


def family_conflict(arch: Architecture, weights: Weights, own: Mapping[str, torch.Tensor]) -> str:
    """What the checkpoint holds and what the model is, when its file names another network.

    Only checkpoints that say which network they hold (``weights.settings``, e.g. from an
    nnssl adaptation plan) are checked; empty when the model is that network.

    Example:
        >>> from pathlib import Path
        >>> from medtl.models.networks import get_architecture
        >>> w = Weights(Path("ckpt.pth"), "nnssl", {}, family="nnssl ResEncL",
        ...             settings={"name": "resencunet", "features": [32, 64]})
        >>> family_conflict(get_architecture("basicunet"), w, {})  # doctest: +ELLIPSIS
        'this nnssl checkpoint holds nnssl ResEncL, which medtl builds with model.name: ...'
    """
    wanted = weights.settings
    if not wanted:
        return ""
    name = architecture_name(arch)
    if name == "primus":
        mine, key = _primus_size(own), "embed_dim, depth"
        theirs = list(PRIMUS_PRESETS.get(wanted.get("preset", ""), (0, 0))[:2])
    else:
        mine = _nnunet_widths(own) if name in ("plainconvunet", "resencunet") else []
        key, theirs = "model.features", list(wanted.get("features", mine))
    if name == wanted.get("name") and (not mine or mine == theirs):
        return ""
    configured = f"model.name: {name or 'unregistered'}"
    if mine:
        configured += f", {key}: {mine}"
    return (
        f"this {weights.format} checkpoint holds {weights.family or 'another network'}, "
        f"which medtl builds with {_settings_text(wanted)}; the configured network is "
        f"{configured}"
    )


def suggest_settings(
    arch: Architecture,
    weights: Weights,
    own: Mapping[str, torch.Tensor],
    report: LoadReport,
    adapt_channels: bool,
) -> list[str]:
    """Model settings that would match the checkpoint better (empty when all matched)."""
    if report.conflict and weights.settings:
        return [f"set {_settings_text(weights.settings)}"]
    if not (report.missing or report.unexpected or report.shape_mismatch):
        return []
    state = weights.state
    name = architecture_name(arch)
    out: list[str] = []
    guess = _guess_architecture(state)
    resnet = resnet_name(state)
    if guess and name and guess != name:
        extra = f" and model.backbone: {resnet}" if guess == "flexibleunet" and resnet else ""
        out.append(f"the checkpoint holds {guess} weights: set model.name: {guess}{extra}")
    if name == "flexibleunet" and resnet and resnet != resnet_name(own):
        out.append(
            f"the checkpoint's encoder looks like a {_resnet_text(state)}, the model's backbone "
            f"is {_resnet_text(own)}: set model.backbone: {resnet}"
        )
    if name in ("plainconvunet", "resencunet") and guess == name:
        widths, mine = _nnunet_widths(state), _nnunet_widths(own)
        if widths and widths != mine:
            out.append(
                f"the checkpoint's encoder has {len(widths)} stages of widths {widths}: set "
                f"model.features to {widths}"
            )
    for key in arch.stem_keys:
        if key not in state or key not in own:
            continue
        theirs, mine = tuple(state[key].shape), tuple(own[key].shape)
        if len(theirs) != len(mine):
            out.append(
                f"the checkpoint's first layer has a {len(theirs) - 2}-D kernel {list(theirs)}, "
                f"the model's is {len(mine) - 2}-D: use weights of a 3-D network"
            )
            continue
        if theirs[0] != mine[0] and name not in ("plainconvunet", "resencunet"):
            out.append(
                f"the checkpoint's encoder has {theirs[0]} features in its first stage: set "
                f"model.features[0] to {theirs[0]}"
            )
        if theirs[1] != mine[1]:
            if adapt_channels or 1 not in (theirs[1], mine[1]):
                out.append(
                    f"the checkpoint's first layer takes {theirs[1]} input channels, the model "
                    f"{mine[1]}: only 1 → N and N → 1 can be adapted; train on {theirs[1]}-"
                    "channel images or use weights trained on your number of channels"
                )
            else:
                out.append(
                    f"the checkpoint's first layer takes {theirs[1]} input channels, the model "
                    f"{mine[1]}: allow input-channel adaptation (adapt_channels)"
                )
        if theirs[2:] != mine[2:]:
            out.append(
                f"the checkpoint's first kernel is {list(theirs[2:])}, the model's "
                f"{list(mine[2:])}: the network was built with other kernel sizes"
            )
    return out
