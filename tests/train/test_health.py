"""A run whose loss turns NaN stops with a clear error (medtl.train.health), and leaves no
``best.pt`` (it used to log ``loss nan``, exit 0 and write one that predicts nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medtl.train.health import DivergedError
from medtl.train.loop import train_run
from medtl.train.ssl import SSLConfig, pretrain_ssl
from tests.train import tiny_run

CPU = torch.device("cpu")


def _poisoned(seed: int) -> dict:
    item = tiny_run.item(seed)
    item["image"][0, 10, 10, 10] = float("nan")
    return item


def test_training_on_a_nan_voxel_stops_at_the_first_step(tmp_path: Path) -> None:
    items = [_poisoned(0), _poisoned(1)]
    with pytest.raises(DivergedError, match=r"train: the loss is nan at step 1.*How to fix"):
        train_run(tiny_run.spec(4, 2, 2), items, items[:1], tmp_path, CPU, progress=False)
    assert not (tmp_path / "best.pt").exists()


def test_ssl_pretraining_on_an_infinite_voxel_stops(tmp_path: Path) -> None:
    images = tiny_run.ssl_images()
    for image in images:
        image[0, 18, 18, 9] = float("inf")
    cfg = SSLConfig(steps=2, batch_size=2, patch_size=(32, 32, 16))
    with pytest.raises(DivergedError, match=r"pretrain_ssl: the loss is (nan|inf) at step 1"):
        pretrain_ssl(images, tiny_run.MODEL, cfg, tmp_path, seed=5, device=CPU, progress=False)
    assert not (tmp_path / "checkpoint.pt").exists()
