"""The training loop shared by the pretrain stage and every transfer arm."""

from __future__ import annotations

import csv
import json
import math
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

from medtl.config import ModelConfig, PredictConfig, TrainConfig, to_dict
from medtl.kernel.device import autocast, channels_last, gpu_predictor, out_of_memory_hint
from medtl.kernel.errors import ConfigError
from medtl.kernel.files import atomic_write, atomic_write_text
from medtl.models.networks import (
    Architecture,
    build_network,
    check_patch_size,
    count_parameters,
    get_architecture,
)
from medtl.models.stages import StrategySpec
from medtl.train import distributed
from medtl.train.data import PatchStream, Prefetcher
from medtl.train.health import check_finite_loss
from medtl.train.memory import training_hint, validation_hint
from medtl.train.state import (
    curves_up_to,
    load_state,
    remove_stale_temporaries,
    rng_state,
    save_state,
    set_rng_state,
)
from medtl.train.strategies import StageSchedule

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
        section: the config section ``train`` comes from (``train`` or ``pretrain``),
            named in messages such as the out-of-memory advice.
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
    section: str = "train"

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
    """A checkpoint holding only tensors and plain data (loadable with weights_only=True).

    The weights are a copy on the CPU, so the payload can be kept while training goes on.
    """
    return {
        "format": "medtl",
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
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
    """Mean foreground Dice over validation cases (sliding window, whole volumes).

    On a CUDA device the network runs in bfloat16 autocast with ``predict.amp``, as in
    prediction; its memory format stays the training's (``train.channels_last``).
    """
    model.eval()
    scores = []
    predictor = gpu_predictor(model, device, amp=predict.amp, layout=False)
    with torch.no_grad():
        for item in cases:
            logits = sliding_window_inference(
                item["image"][None].to(device),
                roi_size=list(patch_size),
                sw_batch_size=predict.sw_batch_size,
                predictor=predictor,
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
    if train.prefetch < 0:
        raise ConfigError(
            f"config key 'train.prefetch': got {train.prefetch}; expected 0 (off) or more "
            "batches. How to fix: set e.g. prefetch: 2"
        )
    if train.checkpoint_every < 1:
        raise ConfigError(
            f"config key 'train.checkpoint_every': got {train.checkpoint_every}; expected 1 "
            "or more steps. How to fix: set e.g. checkpoint_every: 25"
        )


#: The files a run writes into its folder (their stale temporaries are removed on start).
RUN_FILES = (
    "best.pt",
    "last.pt",
    "curves.csv",
    "summary.json",
    "run.json",
    "load_report.json",
    "checkpoint.pt",
)

#: Version of the ``last.pt`` layout; a state of another version is not resumed.
STATE_VERSION = 2


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
    """Train one network and keep its best checkpoint; resumable, data-parallel.

    Writes into ``out_dir``: ``best.pt`` (weights of the best validation Dice),
    ``last.pt`` (the full state, see below), ``curves.csv`` (step, loss, val_dice, lr —
    the rate of the next step —, elapsed_s, event: stages unfrozen, early stop) and
    ``summary.json``. Every file is written to a temporary name and renamed.

    **Resuming.** ``last.pt`` is saved every ``train.checkpoint_every`` steps, at every
    validation and at the end. It holds the weights, the optimiser, the learning-rate
    schedule, the step, the best validation Dice (with the best weights themselves, so
    ``best.pt`` can be restored), the early-stopping counters, the curve rows, the
    fingerprint, every global random generator (torch CPU and CUDA, NumPy, Python) and
    the position of the patch stream (:class:`medtl.train.data.PatchStream`). A run
    whose ``last.pt`` has the same fingerprint continues from it and, on the CPU, ends
    with exactly the weights and curves of an uninterrupted run; a ``last.pt`` of other
    settings is ignored (with a note).

    **Several processes.** Launched by ``torchrun`` the run is data-parallel
    (:mod:`medtl.train.distributed`): every rank draws the same batch and trains on its
    slice, DDP averages the gradients, rank 0 alone validates and writes; the result is
    that of one process up to floating-point order. ``train.batch_size`` must be a
    multiple of the number of processes.

    The strategy (:meth:`RunSpec.resolved_strategy`) decides which encoder stages train
    from which step; frozen stages keep their modules in eval mode. With
    ``train.patience`` > 0 the run stops once that many validations in a row have not
    improved the best validation Dice.

    Args:
        spec: the run's definition.
        train_items: training cases from :func:`medtl.train.data.load_training_cases`.
        val_items: validation cases (whole volumes) for checkpoint selection.
        out_dir: output folder.
        device: torch device (``cuda`` becomes ``cuda:LOCAL_RANK`` under ``torchrun``).
        init: a network already initialised (e.g. with pretrained encoder weights);
            built fresh from ``spec`` when None.
        progress: show a progress bar (rank 0 only).
        fingerprint: identifies the settings; a ``last.pt`` of other settings is ignored.
        on_step: called as ``on_step(step, model)`` after each optimiser step (and its
            validation and saving, if any), e.g. to watch or interrupt the run.

    Returns:
        A summary (best step, best validation Dice, steps run, whether it stopped early,
        parameter counts, trainable parameters at the start and at most, seconds).

    Raises:
        ConfigError: a setting out of range, or a batch that the processes cannot share.
        DeviceMemoryError: the GPU ran out of memory (names the settings to lower).
    """
    with distributed.process_group(device) as rank_device:
        return _train(
            spec,
            train_items,
            val_items,
            Path(out_dir),
            rank_device,
            init,
            progress,
            fingerprint,
            on_step,
        )


def _train(
    spec: RunSpec,
    train_items: list[dict],
    val_items: list[dict],
    out_dir: Path,
    device: torch.device,
    init: torch.nn.Module | None,
    progress: bool,
    fingerprint: str,
    on_step: Callable[[int, torch.nn.Module], None] | None,
) -> dict[str, Any]:
    """The body of :func:`train_run`, in the process group (if any)."""
    main = distributed.is_main()
    say = tqdm.write if main else _quiet
    _check_schedule(spec.train)
    section = spec.section
    distributed.check_batch_size(spec.train.batch_size, f"{section}.batch_size")
    strategy = spec.resolved_strategy()
    set_determinism(seed=spec.seed)
    arch: Architecture = get_architecture(spec.model.name)
    check_patch_size(spec.model, spec.train.patch_size, f"{spec.section}.patch_size")
    model = (
        init if init is not None else build_network(spec.model, spec.in_channels, spec.num_classes)
    )
    model = distributed.sync_batchnorm(model, device)
    schedule = StageSchedule(model, arch, strategy)
    schedule.apply(0)
    model.to(device)
    amp = spec.train.amp and device.type == "cuda"
    layout = spec.train.channels_last and device.type == "cuda"
    channels_last(model, device, layout)
    optimizer = torch.optim.AdamW(
        schedule.param_groups(spec.train.lr),
        lr=spec.train.lr,
        weight_decay=spec.train.weight_decay,
    )
    steps, warmup, patience = spec.train.steps, spec.train.warmup_steps, spec.train.patience
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps, warmup))
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    stream = PatchStream(
        train_items,
        spec.train.patch_size,
        spec.train.batch_size,
        spec.train.augment,
        spec.train.pos_fraction,
        seed=spec.seed,
    )
    step, best, best_step, bad, stopped = 0, -1.0, 0, 0, False
    elapsed_before = 0.0
    best_payload: dict | None = None
    rows: list[dict[str, Any]] = []
    last, best_path = out_dir / "last.pt", out_dir / "best.pt"
    curves_path = out_dir / "curves.csv"
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out_dir, RUN_FILES)
    state = _resumable(load_state(last), fingerprint, last, say)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, best = int(state["step"]), float(state["best"])
        best_step = int(state["best_step"])
        bad = int(state["bad_validations"])
        stopped = bool(state["stopped_early"])
        elapsed_before = float(state["elapsed_s"])
        rows = curves_up_to(state["curves"], step)
        best_payload = state["best_checkpoint"]
        stream.load_state_dict(state["stream"])
        set_rng_state(state["rng"])
        if main and best_payload is not None:
            # best.pt may be gone (a workflow deletes the outputs of a failed job)
            _write_checkpoint(best_path, best_payload)
        say(f"resuming from {last} at step {step} of {steps}")

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - start

    def save() -> None:
        _write_curves(curves_path, rows)
        save_state(
            last,
            {
                "version": STATE_VERSION,
                "fingerprint": fingerprint,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": step,
                "best": best,
                "best_step": best_step,
                "bad_validations": bad,
                "stopped_early": stopped,
                "best_checkpoint": best_payload,
                "curves": rows,
                "stream": batches.state_dict(),  # the batches trained on, not prefetched
                "rng": rng_state(),
                "elapsed_s": elapsed(),
                "world_size": distributed.world_size(),
            },
        )

    train_hint = training_hint(
        section, spec.train.batch_size, spec.train.patch_size, distributed.world_size()
    )
    val_hint = validation_hint(section, spec.train.patch_size, spec.predict.sw_batch_size)
    start = time.perf_counter()
    schedule.apply(step)
    schedule.train_mode()
    net = distributed.wrap(model, device)
    # the next batches are cropped and augmented by a thread while the network trains
    batches = Prefetcher(stream, spec.train.prefetch, pin_memory=device.type == "cuda")
    bar = tqdm(
        total=steps,
        initial=step,
        disable=not (progress and main),
        desc=section,
        unit="step",
        mininterval=2.0,
    )
    try:
        while step < steps and not stopped:
            events = []
            unfrozen = schedule.unfrozen_at(step)
            if schedule.apply(step):
                schedule.train_mode()
                net = distributed.wrap(model, device)  # DDP must see the new trainable set
            if unfrozen:
                events.append(f"unfrozen: {', '.join(unfrozen)}")
                say(f"step {step}: unfreezing encoder stage(s) {', '.join(unfrozen)}")
            batch = next(batches)
            # pinned by the prefetch thread on a GPU: the copies overlap with the CPU's work
            image = distributed.shard(batch["image"]).to(device, non_blocking=True)
            label = distributed.shard(batch["label"]).to(device, non_blocking=True)
            image = channels_last(image, device, layout)
            with out_of_memory_hint(f"{section} step {step + 1}", *train_hint):
                optimizer.zero_grad(set_to_none=True)
                with autocast(device, amp):
                    logits = net(image)
                loss = loss_fn(logits.float(), label)  # no-op on float32 logits (the CPU)
                loss.backward()
                loss_value = distributed.mean_over_ranks(loss.item(), device)
                check_finite_loss(loss_value, step + 1, section)
                optimizer.step()
            scheduler.step()
            step += 1
            row = {
                "step": step,
                "loss": loss_value,
                "val_dice": "",
                "lr": scheduler.get_last_lr()[0],
                "elapsed_s": elapsed(),
                "event": "",
            }
            validated = step % spec.train.val_every == 0 or step == steps
            if validated:
                val = float("nan")
                if main:
                    with out_of_memory_hint(f"validation at {section} step {step}", *val_hint):
                        val = validate(
                            model,
                            val_items,
                            spec.train.patch_size,
                            spec.num_classes,
                            device,
                            spec.predict,
                        )
                    schedule.train_mode()  # validate() ends with model.train(): refreeze stages
                    row["val_dice"] = val
                    if val > best:
                        best, best_step, bad = val, step, 0
                        best_payload = checkpoint_payload(model, spec, step, val)
                        _write_checkpoint(best_path, best_payload)
                    else:
                        bad += 1
                    stopped = bool(patience and bad >= patience and step < steps)
                # rank 0 decided; every rank follows, so that all of them stop together
                best, b_step, b_bad, b_stop = distributed.broadcast_floats(
                    [best, best_step, bad, stopped], device
                )
                best_step, bad, stopped = int(b_step), int(b_bad), bool(b_stop)
                if stopped:
                    events.append(
                        f"early stop: no better validation Dice in {bad} validations "
                        f"(best {best:.4f} at step {best_step})"
                    )
                bar.set_postfix(loss=f"{loss_value:.3f}", val_dice=f"{val:.3f}")
                say(
                    f"step {step}/{steps}: loss {loss_value:.4f}, validation Dice "
                    f"{val:.4f} (best {best:.4f} at step {best_step}), {elapsed():.0f} s"
                )
                if stopped:
                    say(f"step {step}/{steps}: {events[-1]}; stopping")
            row["event"] = "; ".join(events)
            rows.append(row)
            bar.update(1)
            if main and (validated or step % spec.train.checkpoint_every == 0):
                save()
            if on_step is not None:
                on_step(step, model)
    finally:
        batches.close()  # also on an error or Ctrl-C: no thread left behind
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
        "processes": distributed.world_size(),
        "seconds": elapsed(),
    }
    if main:
        _write_curves(curves_path, rows)
        atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    distributed.barrier()  # the other ranks leave once rank 0 has written everything
    return summary


def _quiet(*args: Any, **kwargs: Any) -> None:
    """Messages of ranks other than 0 are dropped."""


def _resumable(
    state: dict[str, Any] | None, fingerprint: str, path: Path, say: Callable[[str], None]
) -> dict[str, Any] | None:
    """The saved state if this run can continue from it; None (with a note) otherwise."""
    if state is None:
        return None
    if state.get("fingerprint") != fingerprint:
        say(f"{path}: saved by a run of other settings; starting over")
        return None
    if state.get("version") != STATE_VERSION:
        say(
            f"{path}: saved by another medtl version (state layout {state.get('version', 1)}, "
            f"expected {STATE_VERSION}); starting over"
        )
        return None
    return state


def _write_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def _write_curves(path: Path, rows: list[dict[str, Any]]) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CURVE_COLUMNS, restval="", extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write)
