"""Out of GPU memory: training, validation, pretraining and prediction fail with a
message naming the settings to lower and their current values (simulated on the CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medtl.config import PredictConfig
from medtl.kernel.device import DeviceMemoryError, is_out_of_memory, out_of_memory_hint
from medtl.kernel.errors import MedtlError
from medtl.models.networks import build_network
from medtl.predict.inference import predict_probabilities
from medtl.preprocess.case import PreprocessedCase
from medtl.train import pretext as pretext_module
from medtl.train.loop import train_run
from medtl.train.ssl import SSLConfig, pretrain_ssl
from tests.train import tiny_run

CPU = torch.device("cpu")
OOM = "CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 15.7 GiB total capacity)"


def _failing(net: torch.nn.Module, when: str, error: Exception) -> torch.nn.Module:
    """Make ``net`` raise ``error`` in ``train`` or ``eval`` mode (the other works)."""
    forward = net.forward

    def maybe_fail(x):
        if net.training == (when == "train"):
            raise error
        return forward(x)

    net.forward = maybe_fail
    return net


def _train(tmp_path: Path, net: torch.nn.Module) -> None:
    items = [tiny_run.item(0), tiny_run.item(1)]
    train_run(
        tiny_run.spec(4, 2, 2), items, items[:1], tmp_path / "run", CPU, init=net, progress=False
    )


def test_training_step_out_of_memory_names_batch_and_patch(tmp_path: Path) -> None:
    net = _failing(build_network(tiny_run.MODEL, 1, 2), "train", torch.cuda.OutOfMemoryError(OOM))
    with pytest.raises(DeviceMemoryError) as info:
        _train(tmp_path, net)
    text = str(info.value)
    assert text.startswith("train step 1 ran out of device memory (CUDA out of memory.")
    assert "train.batch_size = 2, train.patch_size = [16, 16, 32]" in text
    assert "How to fix: lower train.batch_size (e.g. to 1) or train.patch_size" in text
    assert isinstance(info.value, MedtlError)  # the CLI prints it as one line, exit code 1
    assert isinstance(info.value.__cause__, torch.cuda.OutOfMemoryError)


def test_validation_out_of_memory_names_sw_batch_size(tmp_path: Path) -> None:
    error = RuntimeError(f"{OOM}\nIf reserved but unallocated memory is large ...")
    net = _failing(build_network(tiny_run.MODEL, 1, 2), "eval", error)
    with pytest.raises(DeviceMemoryError) as info:
        _train(tmp_path, net)
    text = str(info.value)
    assert text.startswith("validation at train step 2 ran out of device memory")
    assert "predict.sw_batch_size = 4, train.patch_size = [16, 16, 32]" in text
    assert "How to fix: lower predict.sw_batch_size" in text
    assert "If reserved" not in text  # the first line of torch's message only


def test_ssl_pretraining_out_of_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def build(cfg, cin, cout, patch_size=None):
        net = build_network(cfg, cin, cout, patch_size)
        return _failing(net, "train", torch.cuda.OutOfMemoryError(OOM))

    monkeypatch.setattr(pretext_module, "build_network", build)
    with pytest.raises(DeviceMemoryError, match=r"pretrain_ssl\.batch_size = 2, pretrain_ssl"):
        pretrain_ssl(
            tiny_run.ssl_images(),
            tiny_run.MODEL,
            SSLConfig(steps=2, batch_size=2, patch_size=(32, 32, 16)),
            tmp_path,
            seed=0,
            device=CPU,
            progress=False,
        )


def test_prediction_out_of_memory_names_sw_batch_size() -> None:
    net = _failing(build_network(tiny_run.MODEL, 1, 2).eval(), "eval", RuntimeError(OOM))
    image = np.zeros((1, 20, 20, 36), np.float32)
    case = PreprocessedCase(image, None, {})
    cfg = PredictConfig(sw_batch_size=8, tta=True)
    with pytest.raises(DeviceMemoryError) as info:
        predict_probabilities([net], case, tiny_run.PATCH, cfg, CPU)
    text = str(info.value)
    assert "predict.sw_batch_size = 8" in text and "predict.tta = True" in text
    assert "How to fix: lower predict.sw_batch_size (windows run at once, e.g. to 4)" in text


def test_other_errors_pass_unchanged(tmp_path: Path) -> None:
    net = _failing(build_network(tiny_run.MODEL, 1, 2), "train", RuntimeError("shape mismatch"))
    with pytest.raises(RuntimeError, match="^shape mismatch$"):
        _train(tmp_path, net)
    assert not is_out_of_memory(ValueError("out of memory"))  # not a RuntimeError
    with pytest.raises(KeyError), out_of_memory_hint("x", {}, "y"):
        raise KeyError("out of memory")
