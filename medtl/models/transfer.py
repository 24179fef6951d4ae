"""Load pretrained encoder weights into a network and report what happened.

:func:`load_pretrained` reads a source of any format of :mod:`medtl.models.weights`,
copies the tensors that belong to the network's encoder, adapts the first layer to
another number of input channels when needed, never copies the head, and refuses a
checkpoint that initialises too little of the encoder, listing the mismatches and the
model settings that would match.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medtl.models.networks import Architecture, architecture_name
from medtl.models.weights import FORMATS, Weights, WeightsError, read_checkpoint, read_weights

__all__ = [
    "FORMATS",
    "LoadReport",
    "WeightsError",
    "load_encoder",
    "load_pretrained",
    "read_checkpoint",
]


@dataclass
class LoadReport:
    """What a checkpoint initialised in the network's encoder.

    Attributes:
        source: the checkpoint file or folder.
        format: the weight format recognised.
        loaded: encoder keys copied from the checkpoint (adapted ones included).
        missing: encoder keys the checkpoint lacks (left at random init).
        unexpected: checkpoint encoder keys the network does not have.
        shape_mismatch: keys present in both with different shapes
            (``{"key", "checkpoint", "model"}``), left at random init.
        dropped: checkpoint keys outside the encoder (old decoder and head), not used.
        adapted: first-layer weights changed to another number of input channels
            (``{"key", "from", "to", "how"}``, ``how`` being ``"repeat/N"`` or ``"mean"``).
        notes: renames, ignored aliases, known differences from the pretraining network
            and, when something did not match, suggested model settings.
        encoder_params_total / encoder_params_loaded: parameter counts.
    """

    source: str
    format: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    adapted: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    encoder_params_total: int = 0
    encoder_params_loaded: int = 0

    @property
    def fraction_loaded(self) -> float:
        """Share of the encoder's parameters initialised from the checkpoint."""
        return self.encoder_params_loaded / max(self.encoder_params_total, 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with ``fraction_loaded``."""
        d = asdict(self)
        d["fraction_loaded"] = self.fraction_loaded
        return d


def adapt_input_channels(weight: torch.Tensor, channels: int) -> tuple[torch.Tensor, str] | None:
    """A first-layer weight for ``channels`` inputs, from one trained on 1 or on ``channels``→1.

    One input channel → N: the kernel is repeated over the N channels and divided by N, so
    an image whose channels are all equal gives the same activations as before. N → 1: the
    kernels are averaged over the channel axis.

    Args:
        weight: ``(out, in, *kernel)``.
        channels: the model's input channels.

    Returns:
        The adapted weight and how (``"repeat/N"`` or ``"mean"``), or None when neither
        side has a single channel.

    Example:
        >>> w, how = adapt_input_channels(torch.ones(4, 1, 3, 3, 3), 3)
        >>> tuple(w.shape), how, round(w[0, 0, 0, 0, 0].item(), 4)
        ((4, 3, 3, 3, 3), 'repeat/N', 0.3333)
    """
    have = weight.shape[1]
    if have == 1 and channels > 1:
        reps = [1, channels] + [1] * (weight.dim() - 2)
        return weight.repeat(*reps) / channels, "repeat/N"
    if have > 1 and channels == 1:
        return weight.mean(dim=1, keepdim=True), "mean"
    return None


def load_pretrained(
    model: nn.Module,
    arch: Architecture,
    source: Path,
    fmt: str = "auto",
    min_fraction: float = 0.9,
    adapt_channels: bool = True,
) -> LoadReport:
    """Copy the encoder part of a pretrained source into ``model``.

    Args:
        model: the freshly built network (its head already sized for the task).
        arch: the network's architecture description.
        source: weights file, or a MONAI bundle folder.
        fmt: the source's format (:data:`medtl.models.weights.FORMATS`); ``auto`` detects it.
        min_fraction: refuse when less than this share of encoder parameters loads.
        adapt_channels: adapt the first layer between 1 and N input channels.

    Returns:
        The load report; the model is changed only when the load is accepted.

    Raises:
        WeightsError: when the source cannot be read safely, is not in the given format,
            or too little of the encoder matches (listing mismatches and suggestions).

    Example:
        >>> cfg = ModelConfig(name="swinunetr", features=(48,))  # doctest: +SKIP
        >>> net = build_network(cfg, 1, 3)  # doctest: +SKIP
        >>> arch = get_architecture(cfg.name)  # doctest: +SKIP
        >>> load_pretrained(net, arch, Path("model_swinvit.pt")).fraction_loaded  # doctest: +SKIP
        1.0
    """
    own = model.state_dict()
    weights = read_weights(Path(source), fmt, model_keys=own.keys())
    state = weights.state
    params = {name for name, _ in model.named_parameters()}
    report = LoadReport(source=str(source), format=weights.format, notes=list(weights.notes))
    update: dict[str, torch.Tensor] = {}
    for key, value in own.items():
        if arch.part_of(key) != "encoder":
            continue
        is_param = key in params
        if is_param:
            report.encoder_params_total += value.numel()
        if key not in state:
            report.missing.append(key)
            continue
        tensor = state[key]
        if tuple(tensor.shape) != tuple(value.shape):
            adapted = _adapt(key, tensor, value, arch) if adapt_channels else None
            if adapted is None:
                report.shape_mismatch.append(
                    {"key": key, "checkpoint": list(tensor.shape), "model": list(value.shape)}
                )
                continue
            tensor, how = adapted
            report.adapted.append(
                {"key": key, "from": state[key].shape[1], "to": value.shape[1], "how": how}
            )
        update[key] = tensor.to(value.dtype)
        report.loaded.append(key)
        if is_param:
            report.encoder_params_loaded += value.numel()
    for key in state:
        if arch.part_of(key) == "encoder":
            if key not in own:
                report.unexpected.append(key)
        else:
            report.dropped.append(key)
    suggestions = _suggestions(arch, weights, own, report, adapt_channels)
    report.notes.extend(suggestions)
    if report.fraction_loaded < min_fraction:
        raise WeightsError(_refusal(report, min_fraction, suggestions))
    model.load_state_dict(update, strict=False)
    return report


def load_encoder(
    model: nn.Module,
    arch: Architecture,
    path: Path,
    min_fraction: float = 0.9,
    *,
    fmt: str = "auto",
    adapt_channels: bool = True,
) -> LoadReport:
    """Copy the encoder part of a checkpoint into ``model`` (see :func:`load_pretrained`).

    Args:
        model: the freshly built network (its head already sized for the task).
        arch: the network's architecture description.
        path: the checkpoint file (or MONAI bundle folder).
        min_fraction: refuse when less than this share of encoder parameters loads.
        fmt: the checkpoint's format; ``auto`` detects it.
        adapt_channels: adapt the first layer between 1 and N input channels.

    Returns:
        The load report.

    Raises:
        WeightsError: when too little of the encoder matches, listing the mismatches.
    """
    return load_pretrained(model, arch, path, fmt, min_fraction, adapt_channels)


def _adapt(
    key: str, tensor: torch.Tensor, value: torch.Tensor, arch: Architecture
) -> tuple[torch.Tensor, str] | None:
    """The stem weight adapted to the model's input channels, if only those differ."""
    if key not in arch.stem_keys or tensor.dim() != value.dim() or tensor.dim() < 2:
        return None
    if tensor.shape[0] != value.shape[0] or tensor.shape[2:] != value.shape[2:]:
        return None
    return adapt_input_channels(tensor, value.shape[1])


# --------------------------------------------------------------------------- suggestions

_RESNETS = {
    ("basic", (1, 1, 1, 1)): "resnet10",
    ("basic", (2, 2, 2, 2)): "resnet18",
    ("basic", (3, 4, 6, 3)): "resnet34",
    ("bottleneck", (3, 4, 6, 3)): "resnet50",
    ("bottleneck", (3, 4, 23, 3)): "resnet101",
    ("bottleneck", (3, 8, 36, 3)): "resnet152",
    ("bottleneck", (3, 24, 36, 3)): "resnet200",
}


def _resnet_name(keys: Mapping[str, Any] | set[str], prefix: str = "encoder.") -> str | None:
    """``resnet18`` etc. from the block counts of a ResNet state dict, or None."""
    blocks: dict[int, set[int]] = {}
    bottleneck = False
    for key in keys:
        m = re.match(re.escape(prefix) + r"layer([1-4])\.(\d+)\.(conv\d)\.", key)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
            bottleneck |= m.group(3) == "conv3"
    if sorted(blocks) != [1, 2, 3, 4]:
        return None
    layers = tuple(len(blocks[i]) for i in (1, 2, 3, 4))
    return _RESNETS.get(("bottleneck" if bottleneck else "basic", layers))


def _plainconv_widths(state: Mapping[str, torch.Tensor]) -> list[int]:
    widths = {}
    for key, value in state.items():
        m = re.fullmatch(r"encoder\.stages\.(\d+)\.0\.convs\.0\.conv\.weight", key)
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
    if any(k.startswith("encoder.stages.") and ".convs." in k for k in keys):
        return "plainconvunet"
    if "conv_0.conv_0.conv.weight" in keys:
        return "basicunet"
    return None


def _suggestions(
    arch: Architecture,
    weights: Weights,
    own: Mapping[str, torch.Tensor],
    report: LoadReport,
    adapt_channels: bool,
) -> list[str]:
    """Model settings that would match the checkpoint better (empty when all matched)."""
    if not (report.missing or report.unexpected or report.shape_mismatch):
        return []
    state = weights.state
    name = architecture_name(arch)
    out: list[str] = []
    guess = _guess_architecture(state)
    resnet = _resnet_name(state)
    if guess and name and guess != name:
        extra = f" and model.backbone: {resnet}" if guess == "flexibleunet" and resnet else ""
        out.append(f"the checkpoint holds {guess} weights: set model.name: {guess}{extra}")
    if any(k.startswith("encoder.stem.") for k in state):
        out.append(
            "the checkpoint is an nnU-Net ResidualEncoderUNet (encoder.stem.*); medtl's "
            "plainconvunet mirrors nnU-Net's PlainConvUNet only"
        )
    if name == "flexibleunet" and resnet and resnet != _resnet_name(own):
        out.append(f"the checkpoint's encoder looks like a {resnet}: set model.backbone: {resnet}")
    if name == "plainconvunet":
        widths, mine = _plainconv_widths(state), _plainconv_widths(own)
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
        if theirs[0] != mine[0] and name != "plainconvunet":
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


def _refusal(report: LoadReport, min_fraction: float, suggestions: list[str]) -> str:
    lines = [
        f"    {m['key']}: checkpoint {m['checkpoint']}, model {m['model']}"
        for m in report.shape_mismatch[:10]
    ]
    if len(report.shape_mismatch) > 10:
        lines.append(f"    … and {len(report.shape_mismatch) - 10} more of other shape")
    for label, keys in (("missing", report.missing), ("unexpected", report.unexpected)):
        if keys:
            more = f", … ({len(keys)} in all)" if len(keys) > 5 else ""
            lines.append(f"  {label}: {', '.join(keys[:5])}{more}")
    hints = "".join(f"\n  - {s}" for s in suggestions)
    return (
        f"{report.source}: only {report.fraction_loaded:.0%} of the encoder's parameters could "
        f"be loaded from this {report.format} checkpoint (need {min_fraction:.0%}); "
        f"{len(report.missing)} missing, {len(report.unexpected)} unexpected, "
        f"{len(report.shape_mismatch)} of other shape"
        + ("\n" + "\n".join(lines) if lines else "")
        + (f"\nSuggested settings:{hints}" if hints else "")
        + "\nHow to fix: choose model settings (model.name, model.features, model.backbone) "
        "that match the network the checkpoint was trained with, or lower "
        "pretrain.min_loaded_fraction"
    )
