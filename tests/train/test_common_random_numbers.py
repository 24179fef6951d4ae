"""Common random numbers: seed s gives every arm the same stream of batches and the same
start for the layers no checkpoint fills, so arm differences are paired within a seed."""

from __future__ import annotations

import pytest
import torch

from medtl.config import ModelConfig
from medtl.models.networks import build_network, get_architecture
from medtl.train import run as train_run_module
from medtl.train.run import TrainingJob, train_arm
from tests.train.test_run_pretrained import MODEL, _inputs


def _capture(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Replace the training loop: record the run's seed and its network's first weights."""
    seen: list[dict] = []

    def fake(spec, train_items, val_items, out, device, init, **kw):
        seen.append(
            {"seed": spec.seed, "state": {k: v.clone() for k, v in init.state_dict().items()}}
        )
        return {}

    monkeypatch.setattr(train_run_module, "train_run", fake)
    return seen


def _arm(init: str, seed: int) -> TrainingJob:
    return TrainingJob.from_dict(
        {
            "model": MODEL,
            "train": {"steps": 1, "batch_size": 1, "patch_size": [16, 16, 32], "val_every": 1},
            "arm": {"init": init},
            "device": "cpu",
            "seed": seed,
        }
    )


def test_arms_of_one_seed_share_the_stream_and_the_decoder_start(tmp_path, monkeypatch):
    folds, cases = _inputs(tmp_path)
    weights = tmp_path / "pretrained.pt"
    torch.manual_seed(99)
    torch.save(
        build_network(ModelConfig(features=tuple(MODEL["features"])), 1, 2).state_dict(), weights
    )
    seen = _capture(monkeypatch)
    for name, init, seed in (
        ("scratch", "random", 2),
        ("finetune", "pretrained", 2),
        ("scratch", "random", 3),
    ):
        out = tmp_path / f"{name}{seed}"
        train_arm(
            _arm(init, seed),
            name,
            0,
            folds,
            cases,
            out,
            weights if init != "random" else None,
            progress=False,
        )
    scratch2, finetune2, scratch3 = seen
    # the batch stream is seeded by the run's seed alone (medtl.train.data.PatchStream)
    assert scratch2["seed"] == finetune2["seed"] != scratch3["seed"]
    encoder = get_architecture("basicunet").encoder_prefixes
    for key, value in scratch2["state"].items():
        if key.startswith(tuple(encoder)):
            continue  # the checkpoint fills finetune's encoder
        assert torch.equal(value, finetune2["state"][key]), key
    assert any(not torch.equal(v, scratch3["state"][k]) for k, v in scratch2["state"].items())
