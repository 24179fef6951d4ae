"""Fault tolerance: full-state checkpoints, and runs killed mid-way that resume exactly.

A training run is killed with SIGKILL between two checkpoints, started again, and must
end with the very weights and curves of an uninterrupted run; so must supervised and
self-supervised pretraining interrupted in-process.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from medtl.config import PretrainConfig
from medtl.preprocess.plan import Plan
from medtl.train import run as run_module
from medtl.train.loop import train_run
from medtl.train.ssl import SSLConfig, pretrain_ssl
from tests.train import tiny_run

HERE = Path(__file__).resolve().parent

ROOT = HERE.parents[1]
CPU = torch.device("cpu")
COLUMNS = ("step", "loss", "val_dice", "lr", "event")
#: the schedule of the killed run: checkpoints at 3, 4 (validation), 6, 8, 9, 10
STEPS, EVERY, VAL_EVERY = 10, 3, 4


class _Interrupt(Exception):
    pass


def _stop_at(step_to_stop: int):
    def on_step(step: int, model: torch.nn.Module) -> None:
        if step == step_to_stop:
            raise _Interrupt

    return on_step


def _items() -> list[dict]:
    return [tiny_run.item(0), tiny_run.item(1), tiny_run.item(2)]


def _train(out: Path, on_step=None) -> dict:
    items = _items()
    return train_run(
        tiny_run.spec(STEPS, EVERY, VAL_EVERY),
        items,
        items[:1],
        out,
        CPU,
        progress=False,
        fingerprint="tiny",
        on_step=on_step,
    )


def _curves(path: Path, columns=COLUMNS) -> list[list[str]]:
    with path.open() as f:
        return [[r[c] for c in columns] for r in csv.DictReader(f)]


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _assert_same_run(whole: Path, split: Path) -> None:
    """Identical best checkpoint, final weights, curves and summary."""
    best_a, best_b = _load(whole / "best.pt"), _load(split / "best.pt")
    assert best_a["step"] == best_b["step"] and best_a["val_dice"] == best_b["val_dice"]
    _assert_same_weights(best_a["state_dict"], best_b["state_dict"])
    _assert_same_weights(_load(whole / "last.pt")["model"], _load(split / "last.pt")["model"])
    assert _curves(whole / "curves.csv") == _curves(split / "curves.csv")
    sa = json.loads((whole / "summary.json").read_text())
    sb = json.loads((split / "summary.json").read_text())
    assert (sa["best_step"], sa["best_val_dice"], sa["steps"]) == (
        sb["best_step"],
        sb["best_val_dice"],
        sb["steps"],
    )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("whole") / "run"
    _train(out)
    return out


# ------------------------------------------------------------------ checkpoint contents


def test_last_pt_holds_the_full_state_every_n_steps(tmp_path: Path) -> None:
    saved_at: list[int | None] = []

    def watch(step: int, model: torch.nn.Module) -> None:
        last = tmp_path / "run" / "last.pt"
        saved_at.append(_load(last)["step"] if last.exists() else None)

    _train(tmp_path / "run", on_step=watch)
    # after step k, the newest state on disk: every 3 steps, at validations (4, 8), at the end
    assert saved_at == [None, None, 3, 4, 4, 6, 6, 8, 9, 10]
    state = _load(tmp_path / "run" / "last.pt")  # weights_only: no pickled objects
    assert {
        "fingerprint",
        "model",
        "optimizer",
        "scheduler",
        "step",
        "best",
        "best_step",
        "bad_validations",
        "stopped_early",
        "best_checkpoint",
        "curves",
        "stream",
        "rng",
    } <= set(state)
    assert {"torch", "numpy", "python"} <= set(state["rng"])
    assert state["stream"] == {"seed": 3, "index": STEPS}
    assert [int(r["step"]) for r in state["curves"]] == list(range(1, STEPS + 1))
    assert state["best_checkpoint"]["step"] == state["best_step"]
    assert state["optimizer"]["state"]  # AdamW moments
    assert state["scheduler"]["last_epoch"] == STEPS


def test_first_steps_checkpointed(tmp_path: Path) -> None:
    with pytest.raises(_Interrupt):
        _train(tmp_path / "run", on_step=_stop_at(2))
    assert not (tmp_path / "run" / "last.pt").exists()  # nothing saved before step 3
    with pytest.raises(_Interrupt):
        _train(tmp_path / "run", on_step=_stop_at(3))
    assert _load(tmp_path / "run" / "last.pt")["step"] == 3


# ------------------------------------------------------------------ resume, in-process


@pytest.mark.parametrize("stop", [5, 7])
def test_interrupted_run_resumes_exactly(uninterrupted: Path, tmp_path: Path, stop: int) -> None:
    out = tmp_path / "run"
    with pytest.raises(_Interrupt):
        _train(out, on_step=_stop_at(stop))
    assert _load(out / "last.pt")["step"] == stop - 1  # a step past the last checkpoint
    # a workflow deletes a failed job's outputs; a kill may leave a temporary behind
    (out / "best.pt").unlink()
    (out / "curves.csv").unlink()
    stale = out / ".best.pt.abc123.tmp.pt"
    stale.write_bytes(b"partial")
    _train(out)
    assert not stale.exists()
    _assert_same_run(uninterrupted, out)


def test_resume_with_dropout_restores_the_global_generators(tmp_path: Path) -> None:
    # dropout draws from torch's global generator: its state must be resumed too
    items = _items()
    base = tiny_run.spec(6, EVERY, VAL_EVERY)
    spec = dataclasses.replace(base, model=dataclasses.replace(base.model, dropout=0.3))

    def run(out: Path, on_step=None) -> None:
        train_run(
            spec, items, items[:1], out, CPU, progress=False, fingerprint="d", on_step=on_step
        )

    run(tmp_path / "whole")
    with pytest.raises(_Interrupt):
        run(tmp_path / "split", on_step=_stop_at(5))
    run(tmp_path / "split")
    _assert_same_run(tmp_path / "whole", tmp_path / "split")


def test_resume_of_a_finished_run_restores_its_outputs(uninterrupted: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    _train(out)
    for name in ("best.pt", "curves.csv", "summary.json"):
        (out / name).unlink()
    _train(out)  # nothing left to train: the outputs come back from last.pt
    _assert_same_run(uninterrupted, out)


def test_last_pt_of_other_settings_is_ignored_with_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    items = _items()
    spec = tiny_run.spec(3, EVERY, VAL_EVERY)
    train_run(spec, items, items[:1], out, CPU, progress=False, fingerprint="old")
    capsys.readouterr()
    train_run(spec, items, items[:1], out, CPU, progress=False, fingerprint="new")
    assert "saved by a run of other settings; starting over" in capsys.readouterr().out


# ------------------------------------------------------------------ SIGKILL, subprocess


def _lines(proc: subprocess.Popen) -> queue.Queue:
    """The child's stdout lines, read by a thread (so that waiting can time out)."""
    q: queue.Queue = queue.Queue()

    def read() -> None:
        for line in proc.stdout:
            q.put(line.strip())
        q.put(None)

    threading.Thread(target=read, daemon=True).start()
    return q


def _wait_for(q: queue.Queue, text: str, timeout: float = 120.0) -> list[str]:
    seen = []
    while True:
        line = q.get(timeout=timeout)
        if line is None:
            raise AssertionError(f"the child ended before printing {text!r}: {seen[-20:]}")
        seen.append(line)
        if line == text:
            return seen


def test_training_killed_with_sigkill_resumes_exactly(uninterrupted: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    cmd = [sys.executable, str(HERE / "tiny_run.py"), str(out)]
    args = ["--steps", str(STEPS), "--checkpoint-every", str(EVERY), "--val-every", str(VAL_EVERY)]
    # the child stops after step 7 (saved: step 6) and is killed there, mid-way between
    # two checkpoints, with everything of step 7 lost
    child = subprocess.Popen(
        [*cmd, *args, "--hang-at", "7"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        seen = _wait_for(_lines(child), "hanging")
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    assert "step 7" in seen
    assert _load(out / "last.pt")["step"] == 6
    assert not (out / "summary.json").exists()
    assert [int(r[0]) for r in _curves(out / "curves.csv")] == list(range(1, 7))

    done = subprocess.run(
        [*cmd, *args], cwd=ROOT, capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "resuming from" in done.stdout and "at step 6 of 10" in done.stdout
    assert "step 7" in done.stdout and "step 6\n" not in done.stdout
    _assert_same_run(uninterrupted, out)


# ------------------------------------------------------------------ pretraining


SSL = SSLConfig(steps=5, batch_size=2, patch_size=(32, 32, 16), checkpoint_every=2)


def _ssl(out: Path, on_step=None) -> dict:
    return pretrain_ssl(
        tiny_run.ssl_images(),
        tiny_run.MODEL,
        SSL,
        out,
        seed=5,
        device=CPU,
        progress=False,
        on_step=on_step,
    )


def test_interrupted_ssl_pretraining_resumes_exactly(tmp_path: Path) -> None:
    _ssl(tmp_path / "whole")
    with pytest.raises(_Interrupt):
        _ssl(tmp_path / "split", on_step=_stop_at(3))
    state = _load(tmp_path / "split" / "last.pt")
    assert state["step"] == 2
    assert {"model", "rotation_head", "optimizer", "scheduler", "rng", "stream"} <= set(state)
    (tmp_path / "split" / "curves.csv").unlink()
    _ssl(tmp_path / "split")
    a = _load(tmp_path / "whole" / "checkpoint.pt")
    b = _load(tmp_path / "split" / "checkpoint.pt")
    _assert_same_weights(a["state_dict"], b["state_dict"])
    cols = ("step", "loss", "inpaint", "rotation", "lr")
    assert _curves(tmp_path / "whole" / "curves.csv", cols) == _curves(
        tmp_path / "split" / "curves.csv", cols
    )


def _source_set(folder: Path) -> tuple[Path, Path]:
    """Three labelled NIfTI cases, their manifest, and a plan that keeps their grid."""
    rows = []
    for i in range(3):
        case = tiny_run.item(i)
        image = nib.Nifti1Image(case["image"][0].numpy(), np.eye(4))
        label = nib.Nifti1Image(case["label"][0].numpy().astype(np.uint8), np.eye(4))
        nib.save(image, str(folder / f"img{i}.nii.gz"))
        nib.save(label, str(folder / f"lab{i}.nii.gz"))
        rows.append(
            {
                "case_id": f"src{i}",
                "image": str(folder / f"img{i}.nii.gz"),
                "label": str(folder / f"lab{i}.nii.gz"),
            }
        )
    manifest = folder / "manifest.tsv"
    pd.DataFrame(rows).to_csv(manifest, sep="\t", index=False)
    plan = folder / "plan.json"
    Plan(
        modality="MR",
        target_spacing=(1.0, 1.0, 1.0),
        normalization="zscore",
        intensity={},
        crop_foreground=False,
        median_shape=tiny_run.SHAPE,
        n_cases=3,
        classes={"1": "box"},
    ).save(plan)
    return manifest, plan


def test_interrupted_supervised_pretraining_resumes_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest, plan = _source_set(tmp_path)
    cfg = PretrainConfig(
        steps=5, batch_size=2, val_every=2, patch_size=tiny_run.PATCH, checkpoint_every=2
    )

    def pretrain(out: Path) -> dict:
        return run_module.pretrain(
            manifest, plan, out, tiny_run.MODEL, cfg, seed=1, device_name="cpu", progress=False
        )

    pretrain(tmp_path / "whole")
    with monkeypatch.context() as m:
        m.setattr(run_module, "train_run", functools.partial(train_run, on_step=_stop_at(3)))
        with pytest.raises(_Interrupt):
            pretrain(tmp_path / "split")
    assert _load(tmp_path / "split" / "last.pt")["step"] == 2
    assert not (tmp_path / "split" / "checkpoint.pt").exists()
    pretrain(tmp_path / "split")
    for name in ("checkpoint.pt", "best.pt"):
        a, b = _load(tmp_path / "whole" / name), _load(tmp_path / "split" / name)
        assert a["step"] == b["step"]
        _assert_same_weights(a["state_dict"], b["state_dict"])
    assert _curves(tmp_path / "whole" / "curves.csv") == _curves(tmp_path / "split" / "curves.csv")
    assert not (tmp_path / "split" / "cases").exists()  # source cases stay in memory
