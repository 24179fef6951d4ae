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

import math
from pathlib import Path

import torch
from torch import nn

from medtl.config import ModelConfig
from medtl.models.load_report import LoadReport, Transfer
from medtl.models.networks import Architecture, build_network, get_architecture
from medtl.models.nnunet_networks import alias_names, canonical_state, fold_aliases
from medtl.models.stages import encoder_stages
from medtl.models.suggestions import family_conflict, suggest_settings
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

    own = canonical_state(model)
    state, n_aliases = fold_aliases(weights.state, alias_names(model))
    params = {name for name, _ in model.named_parameters()}
    report = LoadReport(
        source=str(weights.source), format=weights.format, notes=list(weights.notes)
    )
    if n_aliases:
        report.notes.append(
            f"read {n_aliases} alias keys (names the network gives a tensor a second time, "
            "such as all_modules.* and decoder.encoder.*) as the tensor's first name"
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
            adapted = _adapt(key, tensor, value, arch, adapt_channels, weights.token_grid, model)
            if adapted is None:
                report.shape_mismatch.append(
                    {"key": key, "checkpoint": list(tensor.shape), "model": list(value.shape)}
                )
                report.checkpoint_values_unused += tensor.numel()
                continue
            tensor, adaptation = adapted
            report.adapted.append({"key": key, **adaptation})
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
    report.not_transferred = _not_transferred(report.dropped, arch, weights)
    report.conflict = family_conflict(arch, weights, own)
    report.suggestions = suggest_settings(arch, weights, own, report, adapt_channels)
    return Transfer(report, update)


def _not_transferred(dropped: list[str], arch: Architecture, weights: Weights) -> list[dict]:
    """The checkpoint's decoder and head, counted, with why they are not loaded."""
    out = []
    for part in ("decoder", "head"):
        n = sum(arch.part_of(k) == part for k in dropped)
        if n:
            why = weights.skip_reason or "only encoder weights are transferred"
            if part == "head":
                why += "; the head is always built for your classes"
            out.append({"part": part, "tensors": n, "why": why})
    return out


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
            the config key that would allow it. A checkpoint whose file says it holds
            another network (``report.conflict``) is refused whatever the thresholds.
    """
    if report.conflict:
        fix = report.suggestions[0] if report.suggestions else ""
        raise WeightsError(
            f"{report.source}: refused: {report.conflict}, so its weights do not fit the "
            f"configured network. How to fix: {fix or 'set model.name to the network it holds'}"
        )
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
    """:func:`load_pretrained` with the checkpoint's path first and the options by keyword.

    ``path`` is :func:`load_pretrained`'s ``source``; the other arguments, the load report
    returned and the errors are the same.
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
    patch_size: tuple[int, ...] | None = None,
) -> LoadReport:
    """What training would load from ``path`` into the configured network; no thresholds.

    Builds the network as training does, for ``patch_size`` (or takes ``network``, built
    from the same settings) and runs :func:`plan_transfer` on it; nothing is trained or
    copied.
    ``medtl describe-model --pretrained`` shows this report.

    Raises:
        WeightsError: the checkpoint cannot be read (missing, unsafe, truncated, in
            another format, empty).
        medtl.config.ConfigError: the model settings cannot be built.
    """
    model = network
    if model is None:
        model = build_network(model_cfg, in_channels, num_classes, patch_size)
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
    patch_size: tuple[int, ...] | None = None,
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
        patch_size: ``train.patch_size`` (``primus`` is built for it).

    Returns:
        The load report training would write.

    Raises:
        WeightsError: (a :class:`~medtl.kernel.errors.MedtlError`) the checkpoint cannot be
            read or does not fit, with the file and the fix.
        medtl.config.ConfigError: the model settings cannot be built.
    """
    report = plan_checkpoint(path, fmt, model_cfg, in_channels, num_classes, patch_size=patch_size)
    refuse_mismatch(report, min_loaded_fraction, max_unused_fraction)
    return report


def _adapt(
    key: str,
    tensor: torch.Tensor,
    value: torch.Tensor,
    arch: Architecture,
    adapt_channels: bool,
    token_grid: tuple[int, ...] | None,
    model: nn.Module,
) -> tuple[torch.Tensor, dict] | None:
    """A checkpoint tensor made to fit where only what can be adapted differs: the stem's
    input channels (when ``adapt_channels``), or a learned positional embedding's token
    grid (when the checkpoint says its grid); with the report's ``from``, ``to``, ``how``."""
    if key == arch.pos_embed_key and key:
        return _resize_pos_embed(tensor, value, token_grid, getattr(model, "grid", None))
    if not adapt_channels or key not in arch.stem_keys:
        return None
    if tensor.dim() != value.dim() or tensor.dim() < 2:
        return None
    if tensor.shape[0] != value.shape[0] or tensor.shape[2:] != value.shape[2:]:
        return None
    adapted = adapt_input_channels(tensor, value.shape[1])
    if adapted is None:
        return None
    return adapted[0], {"from": tensor.shape[1], "to": value.shape[1], "how": adapted[1]}


def _resize_pos_embed(
    tensor: torch.Tensor,
    value: torch.Tensor,
    source: tuple[int, ...] | None,
    target: tuple[int, ...] | None,
) -> tuple[torch.Tensor, dict] | None:
    """The positional embedding interpolated from the checkpoint's grid to the model's."""
    from medtl.models.primus import interpolate_pos_embed

    if source is None or target is None or tensor.dim() != 3 or tensor.shape[2] != value.shape[2]:
        return None
    if tensor.shape[1] != math.prod(source) or value.shape[1] != math.prod(target):
        return None
    resized = interpolate_pos_embed(tensor, source, target)
    return resized, {"from": list(source), "to": list(target), "how": "trilinear"}


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
