"""The pretrain stage and one transfer arm × fold, from files to checkpoints."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from medtl.config import (
    DEFAULT_CLASSES,
    DEFAULT_DEVICE,
    DEFAULT_SEED,
    ArmConfig,
    ModelConfig,
    PredictConfig,
    PretrainConfig,
    TrainConfig,
    parse_section,
    to_dict,
)
from medtl.io.manifest import read_manifest
from medtl.kernel.classes import ClassMap
from medtl.kernel.device import torch_device
from medtl.kernel.errors import ConfigError, InputError
from medtl.kernel.files import atomic_write, atomic_write_text
from medtl.layout import BEST_CHECKPOINT
from medtl.models.networks import build_network, get_architecture
from medtl.models.stages import StrategySpec
from medtl.models.transfer import MAX_UNUSED_FRACTION, load_pretrained
from medtl.preprocess.case import preprocess_files
from medtl.preprocess.plan import Plan
from medtl.provenance import write_run_record
from medtl.split.folds import fold_cases, load_folds
from medtl.train import distributed
from medtl.train.data import load_training_cases, training_item
from medtl.train.loop import RunSpec, train_run

ARM_INITS = ("random", "pretrained", "ssl")


@dataclass(frozen=True)
class TrainingJob:
    """One training job: an arm's settings, from its ``--settings`` JSON (``medtl train``).

    Attributes:
        model: the network.
        train: the schedule.
        arm: the arm (initialisation and transfer strategy).
        predict: the sliding-window settings of the validation.
        seed: the repeat's seed (the run's seed is ``seed * 1000 + fold``).
        device: ``auto``, ``cpu``, ``cuda``, ...
        classes: label value → structure name.
        min_loaded_fraction: the least share of the encoder pretrained weights must fill.
        weights_format: the format of the pretrained weights (``auto`` detects it).
        max_unused_fraction: the most of the weights' encoder values left unplaced.
    """

    model: ModelConfig
    train: TrainConfig
    arm: ArmConfig
    predict: PredictConfig
    seed: int
    device: str
    classes: dict[str, str]
    min_loaded_fraction: float
    weights_format: str = "auto"
    max_unused_fraction: float = MAX_UNUSED_FRACTION

    @classmethod
    def from_dict(cls, d: dict[str, Any], name: str = "<arm>") -> TrainingJob:
        """The settings of the arm ``name`` (used in messages) from the rule's JSON."""
        arm = parse_section(ArmConfig, d.get("arm"), f"arms.{name}")
        if arm.init not in ARM_INITS:
            raise ConfigError(
                f"config key 'arms.{name}.init': got {arm.init!r}; allowed values: "
                f"{', '.join(ARM_INITS)}"
            )
        return cls(
            model=parse_section(ModelConfig, d.get("model"), "model"),
            train=parse_section(TrainConfig, d.get("train"), "train"),
            arm=arm,
            predict=parse_section(PredictConfig, d.get("predict"), "predict"),
            seed=int(d.get("seed", DEFAULT_SEED)),
            device=str(d.get("device", DEFAULT_DEVICE)),
            classes={str(k): str(v) for k, v in d.get("classes", DEFAULT_CLASSES).items()},
            min_loaded_fraction=float(
                d.get("min_loaded_fraction", PretrainConfig.min_loaded_fraction)
            ),
            weights_format=str(d.get("weights_format", PretrainConfig.format)),
            max_unused_fraction=float(d.get("max_unused_fraction", MAX_UNUSED_FRACTION)),
        )


def train_arm(
    job: TrainingJob,
    arm_name: str,
    fold: int,
    folds_path: Path,
    cases_dir: Path,
    out: Path,
    pretrained: Path | None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train one arm on one fold's training cases; keep the best checkpoint on its ``val`` cases.

    Writes into ``out``: ``best.pt``, ``last.pt``, ``curves.csv``, ``summary.json``,
    ``run.json`` (settings, versions, seed) and, for pretrained arms, ``load_report.json``.
    A killed job resumes from ``last.pt``; under ``torchrun`` the run is data-parallel and
    rank 0 alone writes (see :func:`medtl.train.loop.train_run`).
    """
    out = Path(out)
    folds = load_folds(folds_path)
    train_ids, val_ids = fold_cases(folds, fold, "train"), fold_cases(folds, fold, "val")
    train_items = load_training_cases([Path(cases_dir) / f"{c}.npz" for c in train_ids])
    val_items = load_training_cases([Path(cases_dir) / f"{c}.npz" for c in val_ids])
    num_classes = ClassMap.parse(job.classes).num_classes
    seed = job.seed * 1000 + fold
    torch.manual_seed(seed)
    in_channels = int(train_items[0]["image"].shape[0])
    model = build_network(job.model, in_channels, num_classes, job.train.patch_size)
    if job.arm.init in ("pretrained", "ssl"):
        _load_arm_weights(model, job, arm_name, pretrained, out)
    spec = RunSpec(
        model=job.model,
        train=job.train,
        num_classes=num_classes,
        classes=job.classes,
        seed=seed,
        in_channels=in_channels,
        freeze_encoder=job.arm.freeze_encoder,
        encoder_lr_scale=job.arm.encoder_lr_scale,
        predict=job.predict,
        tags={"arm": arm_name, "fold": fold, "strategy": job.arm.strategy},
        strategy=StrategySpec.from_arm(job.arm),
    )
    device = torch_device(job.device)
    if distributed.is_main():
        write_run_record(
            out / "run.json",
            to_dict(job),
            inputs={
                "cases": [Path(cases_dir) / f"{c}.npz" for c in [*train_ids, *val_ids]],
                "folds": [Path(folds_path)],
                "pretrained_weights": [Path(pretrained)] if pretrained else [],
            },
            arm=arm_name,
            fold=fold,
            seed=seed,
            train_cases=train_ids,
            val_cases=val_ids,
            device=str(device),
            processes=distributed.world_size(),
        )
    fingerprint = json.dumps(
        [to_dict(job), arm_name, fold, train_ids, val_ids, str(pretrained)], sort_keys=True
    )
    return train_run(
        spec,
        train_items,
        val_items,
        out,
        device,
        init=model,
        progress=progress,
        fingerprint=fingerprint,
    )


def _load_arm_weights(
    model: torch.nn.Module,
    job: TrainingJob,
    arm_name: str,
    pretrained: Path | None,
    out: Path,
) -> None:
    """Load the pretrained (or self-supervised) encoder into ``model``; rank 0 reports it.

    Writes ``out/load_report.json`` (what was loaded, and notes).

    Raises:
        ConfigError: the arm needs weights and none were given.
    """
    if pretrained is None:
        raise ConfigError(
            f"arm {arm_name!r} starts from {job.arm.init} weights but no checkpoint "
            "was given. How to fix: set pretrain.checkpoint or enable pretraining"
        )
    fmt = job.weights_format if job.arm.init == "pretrained" else "medtl"
    report = load_pretrained(
        model,
        get_architecture(job.model.name),
        pretrained,
        fmt,
        job.min_loaded_fraction,
        max_unused_fraction=job.max_unused_fraction,
    )
    if distributed.is_main():
        tqdm.write(f"pretrained weights: {report.summary()}")
        for note in report.notes:
            tqdm.write(f"  note: {note}")
        atomic_write_text(out / "load_report.json", json.dumps(report.to_dict(), indent=2) + "\n")


def pretrain(
    manifest: Path,
    plan_path: Path,
    out: Path,
    model_cfg: ModelConfig,
    cfg: PretrainConfig,
    seed: int,
    device_name: str,
    val_fraction: float = 0.15,
    progress: bool = True,
) -> dict[str, Any]:
    """Supervised pretraining of the whole network on a labelled source set.

    The source cases are preprocessed in memory with the target's plan, so the encoder
    sees the same grid and intensity scale as later. Writes ``out/checkpoint.pt`` (a
    medtl checkpoint whose encoder the arms load; a copy of ``best.pt``) with curves,
    provenance and the resumable ``last.pt`` (every ``cfg.checkpoint_every`` steps). A
    killed job resumes from ``last.pt``; under ``torchrun`` it runs data-parallel
    (see :func:`medtl.train.loop.train_run`).
    """
    out = Path(out)
    df = read_manifest(manifest)
    df = df[df["label"] != ""]
    if len(df) < 2:
        raise InputError(
            manifest,
            f"pretraining needs at least 2 labelled source cases, found {len(df)}",
            "add labelled cases to the source set, or name a checkpoint in pretrain.checkpoint",
        )
    plan = Plan.load(plan_path)
    items, max_label = [], 0
    for row in df.itertuples():
        case = preprocess_files(Path(row.image), Path(row.label), plan)
        max_label = max(max_label, int(case.label.max()))
        items.append(training_item(case, str(row.case_id)))
    n_val = max(1, int(round(val_fraction * len(items))))
    train_cfg = TrainConfig(
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        val_every=cfg.val_every,
        patch_size=cfg.patch_size,
        checkpoint_every=cfg.checkpoint_every,
    )
    spec = RunSpec(
        model=model_cfg,
        train=train_cfg,
        num_classes=max_label + 1,
        classes={str(i): f"source class {i}" for i in range(1, max_label + 1)},
        seed=seed,
        in_channels=int(items[0]["image"].shape[0]),
        tags={"stage": "pretrain"},
        section="pretrain",
    )
    device = torch_device(device_name)
    if distributed.is_main():
        write_run_record(
            out / "run.json",
            {"model": to_dict(model_cfg), "pretrain": to_dict(cfg)},
            inputs={
                "source_images": [Path(p) for p in df["image"]],
                "source_labels": [Path(p) for p in df["label"]],
                "plan": [Path(plan_path)],
            },
            seed=seed,
            source_cases=len(items),
            device=str(device),
            processes=distributed.world_size(),
        )
    fingerprint = json.dumps([to_dict(model_cfg), to_dict(cfg), seed, sorted(df["case_id"])])
    summary = train_run(
        spec, items[n_val:], items[:n_val], out, device, progress=progress, fingerprint=fingerprint
    )
    if distributed.is_main():
        # a copy, not a rename: best.pt stays beside last.pt, which a rerun resumes from
        best = out / BEST_CHECKPOINT
        atomic_write(out / "checkpoint.pt", lambda tmp: shutil.copyfile(best, tmp))
    return summary
