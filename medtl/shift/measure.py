"""Measure the shift between a source and a target set: the stage's one public function.

:func:`measure_shift` takes sets already read (:mod:`.sets`) and an encoder already built,
so tests give it generated phantoms; :func:`run_shift` reads the manifests, the plan and
the checkpoint as the command does, and writes the record.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from torch import nn

from medtl.config import ModelConfig, ShiftConfig, to_dict
from medtl.kernel.errors import MedtlError
from medtl.models.networks import Architecture, build_network, get_architecture
from medtl.models.pretraining import read_pretraining
from medtl.models.transfer import load_encoder
from medtl.preprocess.plan import Plan
from medtl.shift.acquisition import compare_acquisition
from medtl.shift.features import case_features
from medtl.shift.intensity import compare_intensity
from medtl.shift.labels import compare_labels, label_table
from medtl.shift.record import NO_SOURCE, ShiftRecord, write_record
from medtl.shift.sets import CaseSet, load_set
from medtl.shift.two_sample import case_distances, mmd_test
from medtl.shift.warnings import Facts, warn

#: Source cases needed for per-case distances (each left out in turn leaves a spread).
MIN_SOURCE_FOR_CASES = 3


@dataclass(frozen=True)
class Encoder:
    """The pretrained network whose encoder looks at the cases, and how it was pretrained.

    Attributes:
        model: the network (its encoder loaded; the decoder never runs).
        arch: its architecture.
        name: the weights file's name.
        spacing: the pretraining spacing (mm, RAS), when the checkpoint says.
        normalization: the pretraining normalisation (medtl's name), when it says.
    """

    model: nn.Module
    arch: Architecture
    name: str
    spacing: tuple[float, float, float] | None = None
    normalization: str | None = None


def _per_case(target: CaseSet, columns: dict) -> pd.DataFrame:
    return pd.DataFrame({"case_id": list(target.case_ids), **columns})


def _encoder_view(
    encoder: Encoder, source: CaseSet, target: CaseSet, patch: tuple[int, ...], cfg: ShiftConfig
) -> tuple[dict, np.ndarray]:
    """The MMD test of the two sets' features, and each target case's distance."""
    src = case_features(
        encoder.model, encoder.arch, source.images, patch, cfg.patches_per_case, cfg.seed
    )
    tgt = case_features(
        encoder.model, encoder.arch, target.images, patch, cfg.patches_per_case, cfg.seed + 1
    )
    result = mmd_test(src, tgt, cfg.permutations, cfg.seed)
    if len(src) >= MIN_SOURCE_FOR_CASES:
        distance = case_distances(src, tgt)[0]
    else:  # no spread to measure a case against: the two-sample test only
        distance = np.full(len(tgt), np.nan)
    view = {
        **asdict(result),
        "differs": result.p_value < cfg.alpha,
        "flagged_cases": int(np.sum(distance > cfg.case_z)),
        "features": int(src.shape[1]),
    }
    return view, distance


def measure_shift(
    target: CaseSet,
    source: CaseSet | None,
    encoder: Encoder | None,
    normalization: str,
    patch: tuple[int, int, int],
    cfg: ShiftConfig,
    source_name: str = "source",
) -> tuple[ShiftRecord, pd.DataFrame]:
    """Every measure of the shift, the warnings, and the per-case table.

    Args:
        target: the target set.
        source: the source set, or None (only the target's metadata and the checkpoint's).
        encoder: the pretrained network, or None.
        normalization: the plan's normalisation (what the target gets).
        patch: the encoder's patch in voxels.
        cfg: the ``shift`` section.
        source_name: what the source set is, for the record.
    """
    notes, columns = [], {}
    acquisition = compare_acquisition(target, source, encoder.spacing if encoder else None)
    intensity = view = None
    labels: list[dict] = []
    if source is None:
        notes.append(NO_SOURCE)
    else:
        cmp = compare_intensity(source, target, cfg.voxels_per_case, cfg.seed)
        intensity = cmp.summary()
        columns |= {
            "intensity_distance": cmp.case_wasserstein,
            "outside_fraction": cmp.case_outside,
        }
        labels = compare_labels(label_table(target), label_table(source), cfg.label_pairs)
        if encoder is None:
            notes.append("no pretrained encoder: the encoder-feature distance is not measured")
        else:
            view, distance = _encoder_view(encoder, source, target, patch, cfg)
            if len(source) < MIN_SOURCE_FOR_CASES:
                notes.append(
                    f"the source has {len(source)} case(s): per-case distances need "
                    f"{MIN_SOURCE_FOR_CASES} or more (a spread to measure against), so "
                    "per_case.tsv leaves feature_distance empty"
                )
            columns = {"feature_distance": distance, **columns, "flagged": distance > cfg.case_z}
    facts = Facts(
        pretrained_normalization=encoder.normalization if encoder else None,
        target_normalization=normalization,
        network_to_pretraining=acquisition["network_to_pretraining"],
        outside_fraction=intensity["outside_fraction"] if intensity else None,
        target_modalities=target.modality,
        source_modalities=source.modality if source is not None else (),
        p_value=view["p_value"] if view else None,
        flagged_cases=view["flagged_cases"] if view else 0,
    )
    record = ShiftRecord(
        source=source_name if source is not None else "none",
        checkpoint=encoder.name if encoder else None,
        pretraining=(
            {"spacing": encoder.spacing, "normalization": encoder.normalization}
            if encoder
            else None
        ),
        acquisition=acquisition,
        intensity=intensity,
        labels=labels,
        encoder=view,
        warnings=warn(facts, cfg),
        notes=notes,
        settings=to_dict(cfg),
    )
    return record, _per_case(target, columns)


def load_pretrained_encoder(
    checkpoint: Path,
    fmt: str,
    model_cfg: ModelConfig,
    in_channels: int,
    plan: Plan | None = None,
    patch: tuple[int, int, int] | None = None,
) -> tuple[Encoder, list[str]]:
    """The configured network with the checkpoint's encoder, and notes on what is unknown.

    Args:
        checkpoint: the weights file.
        fmt: its format (``pretrain.format``; ``medtl`` for medtl's own pretraining).
        model_cfg: the ``model`` section.
        in_channels: the cases' channels.
        plan: the plan the checkpoint was pretrained with, when known (medtl's own
            pretraining uses the target's plan); else read from the checkpoint.
        patch: the patch the encoder looks at (a Primus is built for its input size).
    """
    import torch

    torch.manual_seed(0)  # the head and decoder are random and never run; fixed all the same
    model = build_network(model_cfg, in_channels, 2, patch)
    arch = get_architecture(model_cfg.name)
    # No thresholds: training refuses a poor fit; here the record says how much loaded.
    report = load_encoder(model, arch, checkpoint, 0.0, fmt=fmt, max_unused_fraction=1.0)
    notes = [f"{report.fraction_loaded:.1%} of the encoder's parameters loaded from the checkpoint"]
    spacing = normalization = None
    if plan is not None:
        spacing, normalization = tuple(plan.target_spacing), plan.normalization
    else:
        try:
            how = read_pretraining(checkpoint, fmt)
            spacing, normalization = how.spacing, how.medtl_normalization()
        except MedtlError as exc:
            notes.append(f"the checkpoint does not say how it was pretrained ({exc})")
    encoder = Encoder(model.eval(), arch, Path(checkpoint).name, spacing, normalization)
    return encoder, notes


def run_shift(
    target_manifest: Path,
    plan_path: Path,
    out: Path,
    cfg: ShiftConfig,
    model_cfg: ModelConfig,
    patch: tuple[int, int, int],
    source_manifest: Path | None = None,
    checkpoint: Path | None = None,
    fmt: str = "auto",
    pretrained_with_plan: bool = False,
    source_name: str = "source",
    arms: Sequence[str] = (),
) -> ShiftRecord:
    """Read both sets and the checkpoint, measure, and write ``shift.json`` and ``per_case.tsv``.

    Args:
        target_manifest: the target's ingest manifest.
        plan_path: the target's ``plan.json`` (both sets are preprocessed with it).
        out: the folder to write into.
        cfg: the ``shift`` section.
        model_cfg: the ``model`` section (the network the checkpoint fits).
        patch: the encoder's patch in voxels.
        source_manifest: the source's ingest manifest; None: no source images.
        checkpoint: the pretrained weights; None: no encoder view.
        fmt: the checkpoint's format.
        pretrained_with_plan: the checkpoint was pretrained with this plan (medtl's own
            pretraining), so its spacing and normalisation are the plan's.
        source_name: what the source set is, for the record.
        arms: the arms that start from ``checkpoint``, for the record (the report reads
            them; the workflow decides them once, in pipeline/common.smk).
    """
    plan = Plan.load(plan_path)
    target = load_set("target", target_manifest, plan)
    source = load_set("source", source_manifest, plan) if source_manifest else None
    encoder, notes = None, []
    if checkpoint is not None:
        channels = target.cases[0].image.shape[0]
        encoder, notes = load_pretrained_encoder(
            checkpoint, fmt, model_cfg, channels, plan if pretrained_with_plan else None, patch
        )
    record, cases = measure_shift(
        target, source, encoder, plan.normalization, patch, cfg, source_name
    )
    record = dataclasses.replace(record, notes=[*notes, *record.notes], arms=list(arms))
    write_record(record, cases, out)
    return record
