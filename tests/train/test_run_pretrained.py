"""Pretrained weights in ``medtl train`` (medtl.train.run.train_arm): the load summary
printed in the train log, and a checkpoint of another network refused before training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medtl.config import ModelConfig
from medtl.models.networks import build_network
from medtl.models.weights import WeightsError
from medtl.preprocess.case import PreprocessedCase, save_case
from medtl.train.run import TrainingJob, train_arm

MODEL = {"features": [4, 4, 8, 8, 16, 4]}
SHAPE = (20, 20, 36)


def _inputs(tmp_path: Path) -> tuple[Path, Path]:
    """Two labelled cases (a bright box on noise) and a one-fold split of them."""
    cases = tmp_path / "cases"
    for seed in (0, 1):
        rng = np.random.default_rng(seed)
        label = np.zeros(SHAPE, np.uint8)
        label[4:12, 5:14, 6:20] = 1
        image = (2.0 * label + rng.normal(0.0, 0.5, SHAPE)).astype(np.float32)[None]
        save_case(cases / f"case{seed}.npz", PreprocessedCase(image, label, {}))
    folds = tmp_path / "folds.json"
    split = {"fold": 0, "train": ["case0"], "val": ["case1"], "test": []}
    folds.write_text(json.dumps({"k": 1, "folds": [split]}))
    return folds, cases


def _settings(**extra) -> TrainingJob:
    return TrainingJob.from_dict(
        {
            "model": MODEL,
            "train": {"steps": 1, "batch_size": 1, "patch_size": [16, 16, 32], "val_every": 1},
            "arm": {"init": "pretrained"},
            "device": "cpu",
            "min_loaded_fraction": 0.9,
            **extra,
        }
    )


def test_train_prints_the_load_summary(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folds, cases = _inputs(tmp_path)
    torch.manual_seed(3)
    weights = tmp_path / "pretrained.pt"
    torch.save(build_network(ModelConfig(features=(4, 4, 8, 8, 16, 4)), 1, 3).state_dict(), weights)
    out = tmp_path / "run"
    train_arm(_settings(), "finetune", 0, folds, cases, out, weights, progress=False)
    printed = capsys.readouterr().out
    report = json.loads((out / "load_report.json").read_text())
    assert f"pretrained weights: {report['summary']}" in printed
    assert "loaded 40 of 40 encoder tensors of the model (100.0% of its parameters)" in printed
    assert "0 of 40 encoder tensors of the checkpoint unused" in printed
    assert (report["target_tensors"], report["checkpoint_tensors"]) == (40, 40)


def test_train_refuses_weights_of_another_network(tmp_path: Path) -> None:
    folds, cases = _inputs(tmp_path)
    weights = tmp_path / "wide.pt"
    wide = ModelConfig(features=(8, 8, 16, 16, 32, 8))
    torch.save(build_network(wide, 1, 2).state_dict(), weights)
    out = tmp_path / "run"
    pattern = r"(?s)wide.pt: refused: only 0%.*features\[0\] to 8"
    with pytest.raises(WeightsError, match=pattern) as info:
        train_arm(_settings(), "finetune", 0, folds, cases, out, weights, progress=False)
    assert "would get nothing" not in str(info.value)  # no stage loaded: none skipped
    assert not (out / "best.pt").exists() and not (out / "load_report.json").exists()
    settings = _settings(max_unused_fraction=0.5)
    assert settings.max_unused_fraction == 0.5


def test_arm_settings_name_the_arm_in_their_errors() -> None:
    """`medtl train --arm NAME` run by hand: a bad arm section names NAME, not `<arm>`."""
    from medtl.kernel.errors import ConfigError

    with pytest.raises(ConfigError, match=r"'arms\.finetune_partial\.unfreeze_stages'"):
        TrainingJob.from_dict(
            {"arm": {"init": "pretrained", "strategy": "partial"}}, "finetune_partial"
        )
