"""The one training engine: the step loop that every training in medtl runs on.

The supervised runs (:mod:`medtl.train.loop`) and the self-supervised pretraining
(:mod:`medtl.train.ssl`) differ in what a step computes and what happens after it; all
else is here, written once:

* **resume**: the full state of a run (its modules, the optimiser, the learning-rate
  schedule, the step, the curve rows, every global random generator, the position of
  the batch stream, and what the task adds) is saved atomically to ``last.pt`` every
  ``every`` steps, when the task asks and at the end; a run whose ``last.pt`` has the
  same fingerprint and layout version continues from it and, on the CPU, ends exactly
  as an uninterrupted run;
* **the step**: batch, gradients cleared, forward and backward (the task's), the loss's
  health check, the optimiser and schedule steps, under the out-of-memory advice of the
  run's section;
* **records**: the progress bar, ``curves.csv`` (one row a step) and ``summary.json``,
  written by rank 0 alone under ``torchrun``.

A task supplies the differences (:class:`StepTask`): ``begin`` (e.g. the DDP
wrapper), ``prepare`` (the batch on the device), ``losses`` (forward and backward; the
named losses averaged over the processes, ``loss`` first), ``after_step`` (e.g.
validation and best-model selection), ``state``/``restore`` (what it adds to
``last.pt``) and ``stopped`` (early stopping).
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from medtl.kernel.device import out_of_memory_hint
from medtl.kernel.files import atomic_torch_save, atomic_write, atomic_write_text
from medtl.train import distributed
from medtl.train.health import check_finite_loss
from medtl.train.state import (
    curves_up_to,
    load_state,
    remove_stale_temporaries,
    rng_state,
    save_state,
    set_rng_state,
)


class StepTask(Protocol):
    """What a training job supplies to :class:`TrainingEngine`."""

    #: True once the job wants no more steps (early stopping).
    stopped: bool

    def begin(self, step: int) -> None:
        """Get ready to train from ``step`` (after a resume): e.g. wrap the network for DDP."""

    def prepare(self, batch: Any, step: int, run: TrainingEngine) -> Any:
        """The next batch ready for :meth:`losses` (this process's slice, on the device)."""

    def losses(self, inputs: Any, step: int) -> dict[str, float]:
        """Forward and backward pass; the losses averaged over the processes, ``loss`` first."""

    def after_step(self, step: int, row: dict[str, Any], run: TrainingEngine) -> bool:
        """Work after optimiser step ``step`` (e.g. validation); True saves ``last.pt`` now."""

    def state(self) -> dict[str, Any]:
        """The task's own part of ``last.pt`` (tensors and plain values)."""

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a ``last.pt`` (the engine has restored its own part)."""


@dataclass(frozen=True)
class Checkpoints:
    """Where and when a run saves its state, and which saved state it may continue from.

    Attributes:
        folder: the run's output folder (``last.pt``, ``curves.csv``, ``summary.json``).
        files: the names of every file the run writes there (their stale temporaries
            are removed on start).
        fingerprint: identifies the settings; a ``last.pt`` of others is ignored.
        version: the layout of ``last.pt``; a state of another layout is ignored.
        every: save ``last.pt`` every N steps (and at the end).
        other_runs: what a ``last.pt`` with another fingerprint was saved by, for the note.
    """

    folder: Path
    files: tuple[str, ...]
    fingerprint: str
    version: int
    every: int
    other_runs: str = "a run of other settings"

    @property
    def last(self) -> Path:
        """The full-state checkpoint a killed run resumes from."""
        return self.folder / "last.pt"


@dataclass
class TrainingEngine:
    """Runs a :class:`StepTask` from its saved state (if any) to ``steps`` optimiser steps.

    Attributes:
        task: what the steps compute.
        modules: the modules whose weights ``last.pt`` keeps, by state key; the first
            is the network handed to ``on_step``.
        optimizer: the optimiser (its ``step`` is taken after each backward pass).
        scheduler: the learning-rate schedule (stepped after each optimiser step).
        batches: the batch stream (``next``, ``state_dict``, ``load_state_dict`` and,
            if it holds a thread, ``close``).
        steps: the planned number of optimiser steps.
        columns: the columns of ``curves.csv``; ``step``, the task's losses, ``lr``
            (the rate of the next step) and ``elapsed_s`` are filled in, the others are
            left empty for the task.
        checkpoints: where and when the state is saved.
        section: the config section of the schedule, in messages.
        hint: the settings and advice of an out-of-memory error
            (:func:`medtl.train.memory.training_hint`).
        desc: the progress bar's label.
        progress: show a progress bar (rank 0 only).
        step: the optimiser steps taken (those of the resumed run included).
        rows: the curve rows, one a step.
    """

    task: StepTask
    modules: dict[str, torch.nn.Module]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    batches: Any
    steps: int
    columns: Sequence[str]
    checkpoints: Checkpoints
    section: str
    hint: tuple[dict[str, Any], str]
    desc: str
    progress: bool = True
    step: int = field(default=0, init=False)
    rows: list[dict[str, Any]] = field(default_factory=list, init=False)
    bar: tqdm | None = field(default=None, init=False)
    main: bool = field(default_factory=distributed.is_main, init=False)
    _elapsed_before: float = field(default=0.0, init=False)
    _start: float = field(default_factory=time.perf_counter, init=False)

    def say(self, message: str) -> None:
        """Print a message above the progress bar (rank 0 only)."""
        if self.main:
            tqdm.write(message)

    @property
    def model(self) -> torch.nn.Module:
        """The network (the first of ``modules``)."""
        return next(iter(self.modules.values()))

    def elapsed(self) -> float:
        """Seconds of training, those of the runs it resumed included."""
        return self._elapsed_before + time.perf_counter() - self._start

    def resume(self) -> None:
        """Prepare the folder and continue from ``last.pt`` where it belongs to this run."""
        folder = self.checkpoints.folder
        if self.main:
            folder.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(folder, self.checkpoints.files)
        state = self._resumable(load_state(self.checkpoints.last))
        if state is not None:
            for name, module in self.modules.items():
                module.load_state_dict(state[name])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.step = int(state["step"])
            self.rows = curves_up_to(state["curves"], self.step)
            self._elapsed_before = float(state["elapsed_s"])
            self.batches.load_state_dict(state["stream"])
            set_rng_state(state["rng"])
            self.task.restore(state)
            self.say(f"resuming from {self.checkpoints.last} at step {self.step} of {self.steps}")
        self._start = time.perf_counter()

    def _resumable(self, state: dict[str, Any] | None) -> dict[str, Any] | None:
        """The saved state if this run can continue from it; None (with a note) otherwise."""
        if state is None:
            return None
        path, expected = self.checkpoints.last, self.checkpoints.version
        if state.get("fingerprint") != self.checkpoints.fingerprint:
            self.say(f"{path}: saved by {self.checkpoints.other_runs}; starting over")
            return None
        if state.get("version") != expected:
            self.say(
                f"{path}: saved by another medtl version (state layout "
                f"{state.get('version', 1)}, expected {expected}); starting over"
            )
            return None
        return state

    def save(self) -> None:
        """Write ``curves.csv`` and the full state to ``last.pt`` (atomically)."""
        write_curves(self.checkpoints.folder / "curves.csv", self.rows, self.columns)
        save_state(
            self.checkpoints.last,
            {
                "version": self.checkpoints.version,
                "fingerprint": self.checkpoints.fingerprint,
                **{name: module.state_dict() for name, module in self.modules.items()},
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "step": self.step,
                **self.task.state(),
                "curves": self.rows,
                "stream": self.batches.state_dict(),  # the batches trained on, not prefetched
                "rng": rng_state(),
                "elapsed_s": self.elapsed(),
                "world_size": distributed.world_size(),
            },
        )

    def run(self, on_step: Callable[[int, torch.nn.Module], None] | None = None) -> None:
        """Train until ``steps`` or until the task stops; ``on_step(step, model)`` after each.

        Call :meth:`resume` first. The task's ``begin`` is called before the first step.

        The batch stream is closed at the end, also on an error or Ctrl-C.
        """
        self.task.begin(self.step)
        self.bar = tqdm(
            total=self.steps,
            initial=self.step,
            disable=not (self.progress and self.main),
            desc=self.desc,
            unit="step",
            mininterval=2.0,
        )
        try:
            while self.step < self.steps and not self.task.stopped:
                forced = self._one_step()
                every = self.checkpoints.every
                if self.main and (forced or self.step % every == 0 or self.step == self.steps):
                    self.save()
                if on_step is not None:
                    on_step(self.step, self.model)
        finally:
            close = getattr(self.batches, "close", None)
            if close is not None:
                close()  # no thread left behind
        self.bar.close()

    def _one_step(self) -> bool:
        """One optimiser step and its curve row; True if the task asks for a save."""
        inputs = self.task.prepare(next(self.batches), self.step, self)
        with out_of_memory_hint(f"{self.section} step {self.step + 1}", *self.hint):
            self.optimizer.zero_grad(set_to_none=True)
            losses = self.task.losses(inputs, self.step)
            check_finite_loss(losses["loss"], self.step + 1, self.section)
            self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        row: dict[str, Any] = dict.fromkeys(self.columns, "")
        row.update(step=self.step, **losses)
        row.update(lr=self.scheduler.get_last_lr()[0], elapsed_s=self.elapsed())
        forced = self.task.after_step(self.step, row, self)
        self.rows.append(row)
        assert self.bar is not None
        self.bar.update(1)
        return forced

    def finish(
        self, summary: dict[str, Any], write_first: Callable[[], None] | None = None
    ) -> None:
        """Rank 0 writes ``write_first``'s files, ``curves.csv`` and ``summary.json``.

        The other ranks wait until it has, so that all of them leave together.
        """
        if self.main:
            if write_first is not None:
                write_first()
            write_curves(self.checkpoints.folder / "curves.csv", self.rows, self.columns)
            text = json.dumps(summary, indent=2) + "\n"
            atomic_write_text(self.checkpoints.folder / "summary.json", text)
        distributed.barrier()


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


def write_curves(path: Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    """Write the curve rows to a CSV file (atomically); missing values stay empty.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "curves.csv"
        >>> write_curves(p, [{"step": 1, "loss": 0.5}], ["step", "loss", "lr"])
        >>> p.read_text().splitlines()
        ['step,loss,lr', '1,0.5,']
    """

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(columns), restval="", extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write)


def write_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Save a checkpoint dict with :func:`torch.save`, atomically."""
    atomic_torch_save(payload, path)
