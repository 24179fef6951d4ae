"""The training loop shared by the pretrain stage and every transfer arm."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.losses import DiceCELoss
from monai.utils import set_determinism

from medtl.config import ModelConfig, PredictConfig, TrainConfig, to_dict
from medtl.kernel.device import autocast, channels_last, out_of_memory_hint
from medtl.kernel.errors import ConfigError
from medtl.layout import BEST_CHECKPOINT
from medtl.models.networks import (
    Architecture,
    build_network,
    check_patch_size,
    count_parameters,
    get_architecture,
)
from medtl.models.nnunet_networks import canonical_state
from medtl.models.stages import StrategySpec
from medtl.train import distributed
from medtl.train.data import PatchStream, Prefetcher
from medtl.train.engine import Checkpoints, TrainingEngine, lr_factor, write_checkpoint
from medtl.train.memory import training_hint, validation_hint
from medtl.train.strategies import StageSchedule
from medtl.train.validation import validate

#: The columns of a run's ``curves.csv``.
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


def checkpoint_payload(model: torch.nn.Module, spec: RunSpec, step: int, val: float) -> dict:
    """A checkpoint holding only tensors and plain data (loadable with weights_only=True).

    The weights are a copy on the CPU, so the payload can be kept while training goes on;
    a tensor a network names twice (dynamic-network-architectures' module aliases) is
    stored once, under its first name (copies would no longer share their storage).
    """
    state = canonical_state(model)
    return {
        "format": "medtl",
        "state_dict": {k: v.detach().cpu().clone() for k, v in state.items()},
        "model": to_dict(spec.model),
        "num_classes": spec.num_classes,
        "in_channels": spec.in_channels,
        "classes": spec.classes,
        "patch_size": list(spec.train.patch_size),
        "step": step,
        "val_dice": val,
        "tags": spec.tags,
    }


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
    BEST_CHECKPOINT,
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
    _check_schedule(spec.train)
    section = spec.section
    distributed.check_batch_size(spec.train.batch_size, f"{section}.batch_size")
    strategy = spec.resolved_strategy()
    set_determinism(seed=spec.seed)
    arch: Architecture = get_architecture(spec.model.name)
    check_patch_size(spec.model, spec.train.patch_size, f"{spec.section}.patch_size")
    model = (
        init
        if init is not None
        else build_network(spec.model, spec.in_channels, spec.num_classes, spec.train.patch_size)
    )
    model = distributed.sync_batchnorm(model, device)
    schedule = StageSchedule(model, arch, strategy)
    schedule.apply(0)
    model.to(device)
    channels_last(model, device, spec.train.channels_last and device.type == "cuda")
    optimizer = torch.optim.AdamW(
        schedule.param_groups(spec.train.lr),
        lr=spec.train.lr,
        weight_decay=spec.train.weight_decay,
    )
    steps, warmup = spec.train.steps, spec.train.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps, warmup))
    task = _Supervised(spec, model, schedule, val_items, device, out_dir / BEST_CHECKPOINT)
    stream = PatchStream(
        train_items,
        spec.train.patch_size,
        spec.train.batch_size,
        spec.train.augment,
        spec.train.pos_fraction,
        seed=spec.seed,
    )
    engine = TrainingEngine(
        task,
        modules={"model": model},
        optimizer=optimizer,
        scheduler=scheduler,
        # the next batches are cropped and augmented by a thread while the network trains
        batches=Prefetcher(stream, spec.train.prefetch, pin_memory=device.type == "cuda"),
        steps=steps,
        columns=CURVE_COLUMNS,
        checkpoints=Checkpoints(
            out_dir, RUN_FILES, fingerprint, STATE_VERSION, spec.train.checkpoint_every
        ),
        section=section,
        hint=training_hint(
            section, spec.train.batch_size, spec.train.patch_size, distributed.world_size()
        ),
        desc=section,
        progress=progress,
    )
    engine.resume()
    engine.run(on_step)
    summary = task.summary(engine, arch, strategy.name)
    engine.finish(summary)
    return summary


@dataclass
class _Supervised:
    """The supervised part of a run (a :class:`medtl.train.engine.StepTask`).

    Dice + cross-entropy on the patches; validation every ``train.val_every`` steps
    (rank 0), which keeps the best checkpoint in ``best.pt`` and counts the validations
    without improvement for early stopping; the encoder stages unfreeze on schedule.

    Attributes:
        best: the best validation Dice so far (-1 before the first validation).
        best_step: the step of ``best``.
        bad: validations in a row without a better Dice.
        stopped: stopped early (``train.patience``).
        best_payload: the checkpoint of ``best`` (kept in ``last.pt`` for ``best.pt``).
        events: the events of the current step (stages unfrozen, early stop).
    """

    spec: RunSpec
    model: torch.nn.Module
    schedule: StageSchedule
    val_items: list[dict]
    device: torch.device
    best_path: Path
    best: float = -1.0
    best_step: int = 0
    bad: int = 0
    stopped: bool = False
    best_payload: dict | None = None
    events: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.net = self.model
        cuda = self.device.type == "cuda"
        self.amp = self.spec.train.amp and cuda
        self.layout = self.spec.train.channels_last and cuda
        self.loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
        train = self.spec.train
        self.val_hint = validation_hint(
            self.spec.section, train.patch_size, self.spec.predict.sw_batch_size
        )

    def state(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_step": self.best_step,
            "bad_validations": self.bad,
            "stopped_early": self.stopped,
            "best_checkpoint": self.best_payload,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.best, self.best_step = float(state["best"]), int(state["best_step"])
        self.bad = int(state["bad_validations"])
        self.stopped = bool(state["stopped_early"])
        self.best_payload = state["best_checkpoint"]
        if distributed.is_main() and self.best_payload is not None:
            # best.pt may be gone (a workflow deletes the outputs of a failed job)
            write_checkpoint(self.best_path, self.best_payload)

    def begin(self, step: int) -> None:
        """Set the trainable stages of ``step`` and wrap the network (after a resume)."""
        self.schedule.apply(step)
        self.schedule.train_mode()
        self.net = distributed.wrap(self.model, self.device)

    def prepare(self, batch: dict, step: int, run: TrainingEngine) -> tuple:
        self.events = []
        unfrozen = self.schedule.unfrozen_at(step)
        if self.schedule.apply(step):
            self.schedule.train_mode()
            self.net = distributed.wrap(self.model, self.device)  # DDP: the new trainable set
        if unfrozen:
            self.events.append(f"unfrozen: {', '.join(unfrozen)}")
            run.say(f"step {step}: unfreezing encoder stage(s) {', '.join(unfrozen)}")
        # pinned by the prefetch thread on a GPU: the copies overlap with the CPU's work
        image = distributed.shard(batch["image"]).to(self.device, non_blocking=True)
        label = distributed.shard(batch["label"]).to(self.device, non_blocking=True)
        return channels_last(image, self.device, self.layout), label

    def losses(self, inputs: tuple, step: int) -> dict[str, float]:
        image, label = inputs
        with autocast(self.device, self.amp):
            logits = self.net(image)
        loss = self.loss_fn(logits.float(), label)  # no-op on float32 logits (the CPU)
        loss.backward()
        return {"loss": distributed.mean_over_ranks(loss.item(), self.device)}

    def after_step(self, step: int, row: dict[str, Any], run: TrainingEngine) -> bool:
        train = self.spec.train
        validated = step % train.val_every == 0 or step == train.steps
        if validated:
            val = self._validate(step)
            if distributed.is_main():
                row["val_dice"] = val
            assert run.bar is not None
            run.bar.set_postfix(loss=f"{row['loss']:.3f}", val_dice=f"{val:.3f}")
            run.say(
                f"step {step}/{train.steps}: loss {row['loss']:.4f}, validation Dice "
                f"{val:.4f} (best {self.best:.4f} at step {self.best_step}), "
                f"{run.elapsed():.0f} s"
            )
            if self.stopped:
                run.say(f"step {step}/{train.steps}: {self.events[-1]}; stopping")
        row["event"] = "; ".join(self.events)
        return validated

    def _validate(self, step: int) -> float:
        """Validate (rank 0), keep a better model, decide on early stopping (all ranks)."""
        val = float("nan")
        spec, train = self.spec, self.spec.train
        if distributed.is_main():
            where = f"validation at {spec.section} step {step}"
            with out_of_memory_hint(where, *self.val_hint):
                val = validate(
                    self.model,
                    self.val_items,
                    train.patch_size,
                    spec.num_classes,
                    self.device,
                    spec.predict,
                )
            self.schedule.train_mode()  # validate() ends with model.train(): refreeze stages
            if val > self.best:
                self.best, self.best_step, self.bad = val, step, 0
                self.best_payload = checkpoint_payload(self.model, spec, step, val)
                write_checkpoint(self.best_path, self.best_payload)
            else:
                self.bad += 1
            patience = train.patience
            self.stopped = bool(patience and self.bad >= patience and step < train.steps)
        # rank 0 decided; every rank follows, so that all of them stop together
        best, b_step, b_bad, b_stop = distributed.broadcast_floats(
            [self.best, self.best_step, self.bad, self.stopped], self.device
        )
        self.best, self.best_step, self.bad = best, int(b_step), int(b_bad)
        self.stopped = bool(b_stop)
        if self.stopped:
            self.events.append(
                f"early stop: no better validation Dice in {self.bad} validations "
                f"(best {self.best:.4f} at step {self.best_step})"
            )
        return val

    def summary(self, run: TrainingEngine, arch: Architecture, strategy: str) -> dict[str, Any]:
        """The run's ``summary.json``."""
        step, schedule = run.step, self.schedule
        counts = count_parameters(self.model, arch)
        at_start = schedule.trainable_parameters(0)
        return {
            "best_step": self.best_step,
            "best_val_dice": self.best,
            "steps": step,
            "planned_steps": run.steps,
            "stopped_early": self.stopped,
            "stop_reason": (
                f"validation Dice did not improve for {self.spec.train.patience} validations "
                f"(best {self.best:.4f} at step {self.best_step})"
                if self.stopped
                else None
            ),
            "strategy": strategy,
            "stages": {
                s.name: start_step
                for s, start_step in zip(schedule.stages, schedule.starts, strict=True)
            },
            "parameters": counts,
            "frozen_parameters": sum(counts.values()) - at_start,
            "trainable_parameters": {
                "start": at_start,
                "max": schedule.trainable_parameters(max(step - 1, 0)),
            },
            "processes": distributed.world_size(),
            "seconds": run.elapsed(),
        }
