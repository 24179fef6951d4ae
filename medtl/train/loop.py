"""The training loop shared by the pretrain stage and every transfer arm."""

from __future__ import annotations

import csv
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.utils import set_determinism
from tqdm.auto import tqdm

from medtl.config import ConfigError, ModelConfig, PredictConfig, TrainConfig, to_dict
from medtl.io.files import atomic_write, atomic_write_text
from medtl.models.networks import (
    Architecture,
    build_network,
    check_patch_size,
    count_parameters,
    get_architecture,
)
from medtl.train.data import infinite_batches
from medtl.train.strategies import StageSchedule, StrategySpec

CURVE_COLUMNS = ["step", "loss", "val_dice", "lr", "elapsed_s", "event"]


@dataclass
class RunSpec:
    """Everything that defines one training run.

    Attributes:
        model: the network settings.
        train: the schedule (steps, batch, patch, lr, augmentation).
        num_classes: output channels including background.
        in_channels: input channels (image modalities / sequences).
        classes: label value → name, stored in the checkpoint.
        seed: the run's seed.
        freeze_encoder: feature extraction (encoder fixed); shorthand for
            ``strategy=StrategySpec("frozen")`` when ``strategy`` is None.
        encoder_lr_scale: the encoder's share of the base learning rate (used when
            ``strategy`` is None).
        predict: sliding-window settings of the validation.
        tags: free-form provenance (arm, fold, ...), stored in the checkpoint.
        strategy: which encoder stages train and when (:mod:`medtl.train.strategies`);
            None: ``frozen`` or ``finetune`` from ``freeze_encoder`` and
            ``encoder_lr_scale``.
    """

    model: ModelConfig
    train: TrainConfig
    num_classes: int
    classes: dict[str, str]
    seed: int
    in_channels: int = 1
    freeze_encoder: bool = False
    encoder_lr_scale: float = 1.0
    predict: PredictConfig = field(default_factory=PredictConfig)
    tags: dict[str, Any] = field(default_factory=dict)
    strategy: StrategySpec | None = None

    def resolved_strategy(self) -> StrategySpec:
        """The strategy to train with (from the old fields when ``strategy`` is None).

        Raises:
            ConfigError: ``freeze_encoder`` is set together with another strategy.
        """
        if self.strategy is None:
            name = "frozen" if self.freeze_encoder else "finetune"
            return StrategySpec(name=name, encoder_lr_scale=self.encoder_lr_scale)
        if self.freeze_encoder and self.strategy.name != "frozen":
            raise ConfigError(
                f"RunSpec: freeze_encoder=True with strategy {self.strategy.name!r}; expected "
                "one of the two. How to fix: drop freeze_encoder or use strategy 'frozen'"
            )
        return self.strategy


def lr_factor(step: int, steps: int, warmup_steps: int = 0) -> float:
    """The learning rate's share of the base rate after ``step`` optimiser steps.

    A linear warm-up over the first ``warmup_steps`` steps (the n-th step runs at
    ``n / warmup_steps``), then a cosine decay from 1 to 0 over the remaining steps.

    Example:
        >>> [round(lr_factor(s, 6, warmup_steps=2), 3) for s in range(7)]
        [0.5, 1.0, 1.0, 0.854, 0.5, 0.146, 0.0]
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = steps - warmup_steps
    if span <= 0:
        return 0.0
    return 0.5 * (1 + math.cos(math.pi * min(step - warmup_steps, span) / span))


def checkpoint_payload(model: torch.nn.Module, spec: RunSpec, step: int, val: float) -> dict:
    """A checkpoint holding only tensors and plain data (loadable with weights_only=True)."""
    return {
        "format": "medtl",
        "state_dict": model.state_dict(),
        "model": to_dict(spec.model),
        "num_classes": spec.num_classes,
        "in_channels": spec.in_channels,
        "classes": spec.classes,
        "patch_size": list(spec.train.patch_size),
        "step": step,
        "val_dice": val,
        "tags": spec.tags,
    }


def validate(
    model: torch.nn.Module,
    cases: list[dict],
    patch_size,
    num_classes: int,
    device: torch.device,
    predict: PredictConfig,
) -> float:
    """Mean foreground Dice over validation cases (sliding window, whole volumes)."""
    model.eval()
    scores = []
    with torch.no_grad():
        for item in cases:
            logits = sliding_window_inference(
                item["image"][None].to(device),
                roi_size=list(patch_size),
                sw_batch_size=predict.sw_batch_size,
                predictor=model,
                overlap=predict.overlap,
                mode=predict.mode,
            )
            pred = logits.argmax(1)[0].cpu()
            ref = item["label"][0]
            for c in range(1, num_classes):
                p, r = pred == c, ref == c
                denom = int(p.sum() + r.sum())
                scores.append(1.0 if denom == 0 else 2.0 * int((p & r).sum()) / denom)
    model.train()
    return float(np.mean(scores)) if scores else float("nan")


def _save_state(
    path: Path,
    model,
    optimizer,
    scheduler,
    step: int,
    best: float,
    best_step: int,
    fingerprint: str,
    bad_validations: int = 0,
    stopped_early: bool = False,
) -> None:
    state = {
        "fingerprint": fingerprint,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": step,
        "best": best,
        "best_step": best_step,
        "bad_validations": bad_validations,
        "stopped_early": stopped_early,
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def _check_schedule(train: TrainConfig) -> None:
    if not 0 <= train.warmup_steps < train.steps:
        raise ConfigError(
            f"config key 'train.warmup_steps': got {train.warmup_steps}; expected 0 to "
            f"{train.steps - 1} (fewer than train.steps = {train.steps}). How to fix: "
            "lower warmup_steps, e.g. to a tenth of the steps"
        )
    if train.patience < 0:
        raise ConfigError(
            f"config key 'train.patience': got {train.patience}; expected 0 (off) or more "
            "validations. How to fix: set e.g. patience: 4"
        )


def _reseed(seed: int) -> None:
    """Seed every global generator, so that a resumed run repeats an uninterrupted one."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train_run(
    spec: RunSpec,
    train_items: list[dict],
    val_items: list[dict],
    out_dir: Path,
    device: torch.device,
    init: torch.nn.Module | None = None,
    progress: bool = True,
    fingerprint: str = "",
    on_step: Callable[[int, torch.nn.Module], None] | None = None,
) -> dict[str, Any]:
    """Train one network and keep its best checkpoint.

    Writes ``best.pt`` (weights of the best validation Dice), ``last.pt`` (resumable
    state, saved at every validation), ``curves.csv`` (step, loss, val_dice, lr — the
    rate of the next step —, elapsed_s, event: stages unfrozen, early stop) and
    ``summary.json`` into ``out_dir``. A run whose ``last.pt`` has the same fingerprint
    resumes from it. The patch stream and the global random generators are reseeded
    from ``seed + step`` at the start and after every saved state, so a run split in
    two repeats an uninterrupted one.

    The strategy (:meth:`RunSpec.resolved_strategy`) decides which encoder stages train
    from which step; frozen stages keep their modules in eval mode. With
    ``train.patience`` > 0 the run stops once that many validations in a row have not
    improved the best validation Dice.

    Args:
        spec: the run's definition.
        train_items: training cases from :func:`medtl.train.data.load_training_cases`.
        val_items: validation cases (whole volumes) for checkpoint selection.
        out_dir: output folder.
        device: torch device.
        init: a network already initialised (e.g. with pretrained encoder weights);
            built fresh from ``spec`` when None.
        progress: show a progress bar.
        fingerprint: identifies the settings; a ``last.pt`` of other settings is ignored.
        on_step: called as ``on_step(step, model)`` after each optimiser step (and its
            validation and saving, if any), e.g. to watch or interrupt the run.

    Returns:
        A summary (best step, best validation Dice, steps run, whether it stopped early,
        parameter counts, trainable parameters at the start and at most, seconds).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_schedule(spec.train)
    strategy = spec.resolved_strategy()
    set_determinism(seed=spec.seed)
    arch: Architecture = get_architecture(spec.model.name)
    check_patch_size(spec.model, spec.train.patch_size)
    model = (
        init if init is not None else build_network(spec.model, spec.in_channels, spec.num_classes)
    )
    schedule = StageSchedule(model, arch, strategy)
    schedule.apply(0)
    model.to(device)
    optimizer = torch.optim.AdamW(
        schedule.param_groups(spec.train.lr),
        lr=spec.train.lr,
        weight_decay=spec.train.weight_decay,
    )
    steps, warmup, patience = spec.train.steps, spec.train.warmup_steps, spec.train.patience
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps, warmup))
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    step, best, best_step, bad, stopped = 0, -1.0, 0, 0, False
    last = out_dir / "last.pt"
    curves_path = out_dir / "curves.csv"
    rows: list[dict[str, Any]] = []
    state = torch.load(last, map_location=device, weights_only=True) if last.exists() else None
    if state is not None and state.get("fingerprint") == fingerprint:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, best = int(state["step"]), float(state["best"])
        best_step = int(state.get("best_step", 0))
        bad = int(state.get("bad_validations", 0))
        stopped = bool(state.get("stopped_early", False))
        if curves_path.exists():
            with curves_path.open() as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]

    def new_batches():
        _reseed(spec.seed + step)
        return infinite_batches(
            train_items,
            spec.train.patch_size,
            spec.train.batch_size,
            spec.train.augment,
            spec.train.pos_fraction,
            seed=spec.seed + step,
        )

    batches = new_batches()
    start = time.perf_counter()
    schedule.apply(step)
    schedule.train_mode()
    bar = tqdm(
        total=steps,
        initial=step,
        disable=not progress,
        desc="train",
        unit="step",
        mininterval=2.0,
    )
    while step < steps and not stopped:
        events = []
        unfrozen = schedule.unfrozen_at(step)
        if schedule.apply(step):
            schedule.train_mode()
        if unfrozen:
            events.append(f"unfrozen: {', '.join(unfrozen)}")
            tqdm.write(f"step {step}: unfreezing encoder stage(s) {', '.join(unfrozen)}")
        batch = next(batches)
        image, label = batch["image"].to(device), batch["label"].to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(image), label)
        loss.backward()
        loss_value = loss.item()
        optimizer.step()
        scheduler.step()
        step += 1
        row = {
            "step": step,
            "loss": loss_value,
            "val_dice": "",
            "lr": scheduler.get_last_lr()[0],
            "elapsed_s": time.perf_counter() - start,
            "event": "",
        }
        validated = step % spec.train.val_every == 0 or step == steps
        if validated:
            val = validate(
                model, val_items, spec.train.patch_size, spec.num_classes, device, spec.predict
            )
            schedule.train_mode()  # validate() ends with model.train(): refreeze frozen stages
            row["val_dice"] = val
            if val > best:
                best, best_step, bad = val, step, 0
                payload = checkpoint_payload(model, spec, step, val)
                atomic_write(
                    out_dir / "best.pt", lambda tmp, payload=payload: torch.save(payload, tmp)
                )
            else:
                bad += 1
            if patience and bad >= patience and step < steps:
                stopped = True
                events.append(
                    f"early stop: no better validation Dice in {bad} validations "
                    f"(best {best:.4f} at step {best_step})"
                )
            _save_state(
                last, model, optimizer, scheduler, step, best, best_step, fingerprint, bad, stopped
            )
            bar.set_postfix(loss=f"{loss_value:.3f}", val_dice=f"{val:.3f}")
            tqdm.write(
                f"step {step}/{steps}: loss {loss_value:.4f}, validation Dice "
                f"{val:.4f} (best {best:.4f} at step {best_step}), "
                f"{time.perf_counter() - start:.0f} s"
            )
            if stopped:
                tqdm.write(f"step {step}/{steps}: {events[-1]}; stopping")
        row["event"] = "; ".join(events)
        rows.append(row)
        bar.update(1)
        if validated:
            _write_curves(curves_path, rows)
            batches = new_batches()
        if on_step is not None:
            on_step(step, model)
    bar.close()
    counts = count_parameters(model, arch)
    total = sum(counts.values())
    at_start = schedule.trainable_parameters(0)
    summary = {
        "best_step": best_step,
        "best_val_dice": best,
        "steps": step,
        "planned_steps": steps,
        "stopped_early": stopped,
        "stop_reason": (
            f"validation Dice did not improve for {patience} validations "
            f"(best {best:.4f} at step {best_step})"
            if stopped
            else None
        ),
        "strategy": strategy.name,
        "stages": {
            s.name: start_step
            for s, start_step in zip(schedule.stages, schedule.starts, strict=True)
        },
        "parameters": counts,
        "frozen_parameters": total - at_start,
        "trainable_parameters": {
            "start": at_start,
            "max": schedule.trainable_parameters(max(step - 1, 0)),
        },
        "seconds": time.perf_counter() - start,
    }
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _write_curves(path: Path, rows: list[dict[str, Any]]) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CURVE_COLUMNS, restval="", extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write)
