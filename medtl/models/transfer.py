"""Load pretrained encoder weights into a network and report what happened.

:func:`load_pretrained` reads a source of any format of :mod:`medtl.models.weights`,
copies the tensors that belong to the network's encoder, adapts the first layer to
another number of input channels when needed, never copies the head, and refuses a
checkpoint that does not fit the network, listing the mismatches and the model settings
that would match. What it would copy is decided by :func:`plan_transfer` alone, which
``medtl describe-model`` and the workflow's start-up check (:func:`check_checkpoint`)
call too, so all three say the same.

A checkpoint is refused (:func:`refuse_mismatch`) when

* less than ``min_loaded_fraction`` of the model encoder's parameters would load;
* more than ``max_unused_fraction`` of the checkpoint encoder's values would find no
  place in the model (unexpected names, other shapes): the checkpoint is another
  architecture, e.g. a ResNet-18 for a ResNet-10 backbone, whose first blocks match by
  name while the rest is silently left out;
* an encoder stage of the model would get nothing while a deeper stage gets weights
  (skipped when ``min_loaded_fraction`` is 0, which means "load whatever fits").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medtl.config import ModelConfig
from medtl.models.networks import (
    Architecture,
    architecture_name,
    build_network,
    get_architecture,
)
from medtl.models.stages import encoder_stages
from medtl.models.weights import FORMATS, Weights, WeightsError, read_checkpoint, read_weights

__all__ = [
    "FORMATS",
    "MAX_UNUSED_FRACTION",
    "MIN_LOADED_FRACTION",
    "LoadReport",
    "Transfer",
    "WeightsError",
    "check_checkpoint",
    "load_encoder",
    "load_pretrained",
    "plan_checkpoint",
    "plan_transfer",
    "read_checkpoint",
    "refuse_mismatch",
]

#: Default share of the model encoder's parameters a checkpoint must initialise.
MIN_LOADED_FRACTION = 0.9
#: Default share of the checkpoint encoder's values that may find no place in the model.
MAX_UNUSED_FRACTION = 0.05


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
        notes: renames, ignored aliases, known differences from the pretraining network.
        encoder_params_total / encoder_params_loaded: parameter counts of the model's
            encoder, all and initialised.
        checkpoint_values_total / checkpoint_values_unused: values (elements) of the
            checkpoint's encoder tensors, all and those with no place in the model
            (unexpected or of other shape).
        stages: per encoder stage of the model, stem first: ``{"stage", "tensors",
            "loaded"}`` (tensor counts).
        suggestions: when something did not match, model settings that would match.
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
    checkpoint_values_total: int = 0
    checkpoint_values_unused: int = 0
    stages: list[dict[str, Any]] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)

    @property
    def fraction_loaded(self) -> float:
        """Share of the encoder's parameters initialised from the checkpoint."""
        return self.encoder_params_loaded / max(self.encoder_params_total, 1)

    @property
    def fraction_unused(self) -> float:
        """Share of the checkpoint encoder's values that found no place in the model."""
        return self.checkpoint_values_unused / max(self.checkpoint_values_total, 1)

    @property
    def target_tensors(self) -> int:
        """Tensors of the model's encoder: loaded, missing or of other shape."""
        return len(self.loaded) + len(self.missing) + len(self.shape_mismatch)

    @property
    def checkpoint_tensors(self) -> int:
        """Tensors of the checkpoint's encoder part: loaded, unexpected or of other shape."""
        return len(self.loaded) + len(self.unexpected) + len(self.shape_mismatch)

    @property
    def unused_tensors(self) -> int:
        """Checkpoint encoder tensors with no place in the model."""
        return len(self.unexpected) + len(self.shape_mismatch)

    @property
    def skipped_stages(self) -> list[str]:
        """Encoder stages that get nothing although a deeper stage gets weights."""
        deepest = max((i for i, s in enumerate(self.stages) if s["loaded"]), default=0)
        return [s["stage"] for s in self.stages[:deepest] if not s["loaded"]]

    def summary(self) -> str:
        """One line for the train log: what loaded, what of the checkpoint was not used.

        Example:
            >>> r = LoadReport("w.pt", "medicalnet", loaded=["a", "b"], missing=["c"],
            ...                unexpected=["d"], encoder_params_total=4,
            ...                encoder_params_loaded=3, checkpoint_values_total=10,
            ...                checkpoint_values_unused=5)
            >>> print(r.summary())  # doctest: +NORMALIZE_WHITESPACE
            w.pt (medicalnet): loaded 2 of 3 encoder tensors of the model (75.0% of its
            parameters); 1 of 3 encoder tensors of the checkpoint unused (50.0% of their
            values); adapted 0; 0 checkpoint tensors outside the encoder not used
        """
        return (
            f"{self.source} ({self.format}): loaded {len(self.loaded)} of "
            f"{self.target_tensors} encoder tensors of the model ({self.fraction_loaded:.1%} "
            f"of its parameters); {self.unused_tensors} of {self.checkpoint_tensors} encoder "
            f"tensors of the checkpoint unused ({self.fraction_unused:.1%} of their values); "
            f"adapted {len(self.adapted)}; {len(self.dropped)} checkpoint tensors outside the "
            "encoder not used"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the fractions, the counts and the summary line."""
        d = asdict(self)
        d["fraction_loaded"] = self.fraction_loaded
        d["fraction_unused"] = self.fraction_unused
        d["target_tensors"] = self.target_tensors
        d["checkpoint_tensors"] = self.checkpoint_tensors
        d["unused_tensors"] = self.unused_tensors
        d["skipped_stages"] = self.skipped_stages
        d["summary"] = self.summary()
        return d


@dataclass
class Transfer:
    """What :func:`load_pretrained` would do: the report and the tensors it would copy.

    Attributes:
        report: the load report (nothing checked against thresholds yet).
        tensors: model name → tensor to copy (adapted first-layer weights included,
            in the model's dtype).
    """

    report: LoadReport
    tensors: dict[str, torch.Tensor]


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


def plan_transfer(
    model: nn.Module, arch: Architecture, weights: Weights, adapt_channels: bool = True
) -> Transfer:
    """What of ``weights`` would go where in ``model``'s encoder; nothing is copied.

    The one place that matches a checkpoint to a network: training
    (:func:`load_pretrained`), ``medtl describe-model`` and :func:`check_checkpoint` all
    call it, so they report the same tensors.

    Args:
        model: the network (its head sized for the task).
        arch: its architecture description.
        weights: the checkpoint, read and renamed by :func:`medtl.models.weights.read_weights`.
        adapt_channels: adapt the first layer between 1 and N input channels.

    Returns:
        The report (with suggested settings in its notes when something did not match)
        and the tensors to copy.
    """

    own = model.state_dict()
    state = weights.state
    params = {name for name, _ in model.named_parameters()}
    report = LoadReport(
        source=str(weights.source), format=weights.format, notes=list(weights.notes)
    )
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
                report.checkpoint_values_unused += tensor.numel()
                continue
            tensor, how = adapted
            report.adapted.append(
                {"key": key, "from": state[key].shape[1], "to": value.shape[1], "how": how}
            )
        update[key] = tensor.to(value.dtype)
        report.loaded.append(key)
        if is_param:
            report.encoder_params_loaded += value.numel()
    for key, tensor in state.items():
        if arch.part_of(key) == "encoder":
            report.checkpoint_values_total += tensor.numel()
            if key not in own:
                report.unexpected.append(key)
                report.checkpoint_values_unused += tensor.numel()
        else:
            report.dropped.append(key)
    loaded = set(report.loaded)
    for stage in encoder_stages(model, arch):
        keys = [k for k in own if arch.part_of(k) == "encoder" and stage.contains(k)]
        report.stages.append(
            {"stage": stage.name, "tensors": len(keys), "loaded": sum(k in loaded for k in keys)}
        )
    report.suggestions = _suggestions(arch, weights, own, report, adapt_channels)
    return Transfer(report, update)


def refuse_mismatch(
    report: LoadReport,
    min_loaded_fraction: float = MIN_LOADED_FRACTION,
    max_unused_fraction: float = MAX_UNUSED_FRACTION,
) -> None:
    """Refuse a checkpoint that does not fit the network (the rules in the module doc).

    Args:
        report: from :func:`plan_transfer`.
        min_loaded_fraction: least share of the model encoder's parameters to initialise;
            0 also allows encoder stages left at random initialisation below loaded ones.
        max_unused_fraction: largest share of the checkpoint encoder's values that may find
            no place in the model; 1 allows any.

    Raises:
        WeightsError: naming what did not fit, the mismatches, the suggested settings and
            the config key that would allow it.
    """
    problems, keys = [], []
    if report.fraction_loaded < min_loaded_fraction:
        problems.append(
            f"only {report.fraction_loaded:.0%} of the encoder's parameters could be loaded "
            f"from this {report.format} checkpoint (need {min_loaded_fraction:.0%})"
        )
        keys.append("lower pretrain.min_loaded_fraction")
    if report.fraction_unused > max_unused_fraction:
        problems.append(
            f"{report.unused_tensors} of the {report.checkpoint_tensors} encoder tensors of this "
            f"{report.format} checkpoint ({report.fraction_unused:.0%} of their values) would "
            f"find no place in the model (allowed: {max_unused_fraction:.0%}), so the "
            "checkpoint holds another architecture"
        )
        keys.append("raise pretrain.max_unused_fraction (1 loads whatever fits)")
    skipped = report.skipped_stages
    if skipped and min_loaded_fraction > 0:
        problems.append(
            f"encoder stage{'s' if len(skipped) > 1 else ''} {', '.join(skipped)} would get "
            "nothing from this checkpoint while deeper stages get its weights, so pretrained "
            "layers would sit on random ones"
        )
        if "lower pretrain.min_loaded_fraction" not in keys:
            keys.append("set pretrain.min_loaded_fraction: 0 (load whatever fits)")
    if problems:
        raise WeightsError(_refusal(report, problems, keys))


def load_pretrained(
    model: nn.Module,
    arch: Architecture,
    source: Path,
    fmt: str = "auto",
    min_fraction: float = MIN_LOADED_FRACTION,
    adapt_channels: bool = True,
    max_unused_fraction: float = MAX_UNUSED_FRACTION,
) -> LoadReport:
    """Copy the encoder part of a pretrained source into ``model``.

    Args:
        model: the freshly built network (its head already sized for the task).
        arch: the network's architecture description.
        source: weights file, or a MONAI bundle folder.
        fmt: the source's format (:data:`medtl.models.weights.FORMATS`); ``auto`` detects it.
        min_fraction: refuse when less than this share of encoder parameters loads.
        adapt_channels: adapt the first layer between 1 and N input channels.
        max_unused_fraction: refuse when more than this share of the checkpoint encoder's
            values finds no place in the model.

    Returns:
        The load report; the model is changed only when the load is accepted.

    Raises:
        WeightsError: when the source cannot be read safely, is not in the given format,
            or does not fit the network (:func:`refuse_mismatch`, listing mismatches and
            suggestions).

    Example:
        >>> cfg = ModelConfig(name="swinunetr", features=(48,))  # doctest: +SKIP
        >>> net = build_network(cfg, 1, 3)  # doctest: +SKIP
        >>> arch = get_architecture(cfg.name)  # doctest: +SKIP
        >>> load_pretrained(net, arch, Path("model_swinvit.pt")).fraction_loaded  # doctest: +SKIP
        1.0
    """
    weights = read_weights(Path(source), fmt, model_keys=model.state_dict().keys())
    transfer = plan_transfer(model, arch, weights, adapt_channels)
    refuse_mismatch(transfer.report, min_fraction, max_unused_fraction)
    model.load_state_dict(transfer.tensors, strict=False)
    return transfer.report


def load_encoder(
    model: nn.Module,
    arch: Architecture,
    path: Path,
    min_fraction: float = MIN_LOADED_FRACTION,
    *,
    fmt: str = "auto",
    adapt_channels: bool = True,
    max_unused_fraction: float = MAX_UNUSED_FRACTION,
) -> LoadReport:
    """Copy the encoder part of a checkpoint into ``model`` (see :func:`load_pretrained`).

    Args:
        model: the freshly built network (its head already sized for the task).
        arch: the network's architecture description.
        path: the checkpoint file (or MONAI bundle folder).
        min_fraction: refuse when less than this share of encoder parameters loads.
        fmt: the checkpoint's format; ``auto`` detects it.
        adapt_channels: adapt the first layer between 1 and N input channels.
        max_unused_fraction: refuse when more of the checkpoint's encoder is unused.

    Returns:
        The load report.

    Raises:
        WeightsError: when the checkpoint does not fit, listing the mismatches.
    """
    return load_pretrained(
        model, arch, path, fmt, min_fraction, adapt_channels, max_unused_fraction
    )


def plan_checkpoint(
    path: Path,
    fmt: str,
    model_cfg: ModelConfig,
    in_channels: int,
    num_classes: int,
    adapt_channels: bool = True,
    network: nn.Module | None = None,
) -> LoadReport:
    """What training would load from ``path`` into the configured network; no thresholds.

    Builds the network as training does (or takes ``network``, built from the same
    settings) and runs :func:`plan_transfer` on it; nothing is trained or copied.
    ``medtl describe-model --pretrained`` shows this report.

    Raises:
        WeightsError: the checkpoint cannot be read (missing, unsafe, truncated, in
            another format, empty).
        medtl.config.ConfigError: the model settings cannot be built.
    """
    model = network if network is not None else build_network(model_cfg, in_channels, num_classes)
    weights = read_weights(Path(path), fmt, model_keys=model.state_dict().keys())
    return plan_transfer(model, get_architecture(model_cfg.name), weights, adapt_channels).report


def check_checkpoint(
    path: Path,
    fmt: str,
    model_cfg: ModelConfig,
    in_channels: int,
    num_classes: int,
    min_loaded_fraction: float = MIN_LOADED_FRACTION,
    max_unused_fraction: float = MAX_UNUSED_FRACTION,
) -> LoadReport:
    """Check, without training, that a checkpoint is readable and fits the network.

    The same reading, matching and refusal as training (:func:`load_pretrained`), on a
    freshly built network that is thrown away: cheap enough to run when the workflow
    starts, before any job.

    Args:
        path: the weights file or MONAI bundle folder (``pretrain.checkpoint``).
        fmt: its format (``pretrain.format``; ``auto`` detects it).
        model_cfg: the ``model`` section.
        in_channels: the images' channels.
        num_classes: output channels including background.
        min_loaded_fraction: ``pretrain.min_loaded_fraction``.
        max_unused_fraction: ``pretrain.max_unused_fraction``.

    Returns:
        The load report training would write.

    Raises:
        WeightsError: (a :class:`~medtl.kernel.errors.MedtlError`) the checkpoint cannot be
            read or does not fit, with the file and the fix.
        medtl.config.ConfigError: the model settings cannot be built.
    """
    report = plan_checkpoint(path, fmt, model_cfg, in_channels, num_classes)
    refuse_mismatch(report, min_loaded_fraction, max_unused_fraction)
    return report


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


def _resnet_name(keys: Mapping[str, Any] | set[str], prefix: str = "encoder.") -> str | None:
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
        out.append(
            f"the checkpoint's encoder looks like a {_resnet_text(state)}, the model's backbone "
            f"is {_resnet_text(own)}: set model.backbone: {resnet}"
        )
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


def _refusal(report: LoadReport, problems: list[str], keys: list[str]) -> str:
    lines = [
        f"    {m['key']}: checkpoint {m['checkpoint']}, model {m['model']}"
        for m in report.shape_mismatch[:10]
    ]
    if len(report.shape_mismatch) > 10:
        lines.append(f"    … and {len(report.shape_mismatch) - 10} more of other shape")
    for label, names in (("missing", report.missing), ("unexpected", report.unexpected)):
        if names:
            more = f", … ({len(names)} in all)" if len(names) > 5 else ""
            lines.append(f"  {label}: {', '.join(names[:5])}{more}")
    hints = "".join(f"\n  - {s}" for s in report.suggestions)
    return (
        f"{report.source}: refused: "
        + "; ".join(problems)
        + f".\n  {len(report.missing)} missing, {len(report.unexpected)} unexpected, "
        f"{len(report.shape_mismatch)} of other shape: {report.summary()}"
        + ("\n" + "\n".join(lines) if lines else "")
        + (f"\nSuggested settings:{hints}" if hints else "")
        + "\nHow to fix: choose model settings (model.name, model.features, model.backbone) "
        "that match the network the checkpoint was trained with, or, to train with only the "
        f"tensors that fit, {' and '.join(keys)}"
    )
