"""Warnings about the shift, each naming what to change.

Each check is one function of the measures that returns a warning or None; :func:`warn`
runs them all. The thresholds come from the ``shift`` config section.
"""

from __future__ import annotations

from dataclasses import dataclass

from medtl.config import ShiftConfig


@dataclass(frozen=True)
class Facts:
    """What the warnings look at (None: not known or not measured).

    Attributes:
        pretrained_normalization: the normalisation the checkpoint was pretrained with.
        target_normalization: the plan's normalisation (what the target gets).
        network_to_pretraining: the plan's spacing / the pretraining spacing, per axis.
        outside_fraction: share of target voxels outside the source's range.
        target_modalities: the target's modalities; source_modalities: the source's.
        p_value: the permutation p-value of the encoder-feature MMD.
        flagged_cases: target cases farther than ``case_z`` source spreads.
    """

    pretrained_normalization: str | None = None
    target_normalization: str | None = None
    network_to_pretraining: list[float] | None = None
    outside_fraction: float | None = None
    target_modalities: tuple[str, ...] = ()
    source_modalities: tuple[str, ...] = ()
    p_value: float | None = None
    flagged_cases: int = 0


def _normalisation(f: Facts, cfg: ShiftConfig) -> str | None:
    if not f.pretrained_normalization or f.pretrained_normalization == f.target_normalization:
        return None
    return (
        f"the checkpoint was pretrained with {f.pretrained_normalization} normalisation; the "
        f"target is normalised with {f.target_normalization}: set preprocess.normalization: "
        "like_pretrained"
    )


def _spacing(f: Facts, cfg: ShiftConfig) -> str | None:
    ratios = f.network_to_pretraining
    if not ratios:
        return None
    far = [r for r in ratios if r > cfg.spacing_factor or r < 1 / cfg.spacing_factor]
    if not far:
        return None
    shown = ", ".join(f"{r:.2f}" for r in ratios)
    return (
        f"the network sees the target at {shown}× the pretraining spacing per axis (more than "
        f"{cfg.spacing_factor:g}× finer or coarser): the encoder's filters meet structures at "
        "another scale. Set preprocess.target_spacing: like_pretrained"
    )


def _outside(f: Facts, cfg: ShiftConfig) -> str | None:
    if f.outside_fraction is None or f.outside_fraction <= cfg.outside_fraction:
        return None
    return (
        f"{100 * f.outside_fraction:.1f} % of the target's voxels (normalised) lie outside the "
        f"source's 0.5-99.5 percentile range (warning above {100 * cfg.outside_fraction:g} %): "
        "values the encoder never saw. Check the target's intensity scaling (units, rescale "
        f"slope and intercept), {_outside_fix(f)}"
    )


def _outside_fix(f: Facts) -> str:
    """What to change for out-of-range intensities, given the target's normalisation."""
    if f.target_normalization != "zscore":
        return "or normalise per image: preprocess.normalization: zscore"
    return (
        "and since each image is already z-scored, the difference is contrast, not scale: "
        "let the encoder adapt (an arm with strategy: finetune or gradual)"
    )


def _modality(f: Facts, cfg: ShiftConfig) -> str | None:
    if not f.source_modalities or set(f.target_modalities) == set(f.source_modalities):
        return None
    return (
        f"the target is {', '.join(sorted(set(f.target_modalities)))}, the source "
        f"{', '.join(sorted(set(f.source_modalities)))}: the encoder learnt another "
        "modality's contrasts. Use a checkpoint pretrained on the target's modality, or "
        "let the encoder adapt (an arm with strategy: finetune)"
    )


def _encoder(f: Facts, cfg: ShiftConfig) -> str | None:
    if f.p_value is None or f.p_value >= cfg.alpha:
        return None
    return (
        f"the encoder tells the target from its source (feature MMD permutation p = "
        f"{f.p_value:.3g} < alpha {cfg.alpha:g}; {f.flagged_cases} target case(s) beyond "
        f"{cfg.case_z:g} source spreads): expect the frozen encoder to transfer less; prefer "
        "arms that fine-tune it (strategy: finetune or gradual), and look at the flagged cases "
        "in per_case.tsv"
    )


CHECKS = (_normalisation, _spacing, _outside, _modality, _encoder)


def warn(facts: Facts, cfg: ShiftConfig) -> list[str]:
    """Every warning the facts call for, in the order of :data:`CHECKS`.

    Example:
        >>> warn(Facts(pretrained_normalization="ct", target_normalization="zscore"),
        ...      ShiftConfig())[0]  # doctest: +ELLIPSIS
        'the checkpoint was pretrained with ct normalisation; ... like_pretrained'
    """
    return [w for check in CHECKS if (w := check(facts, cfg))]
