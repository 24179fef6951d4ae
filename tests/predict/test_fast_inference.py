"""Faster prediction (medtl.predict.inference): stacked mirrored copies, GPU-only settings.

Mirrored copies of a small case run through the sliding window together; the
probabilities must equal those of one sliding window per mirror (the former code) up to
float rounding. The CUDA-only settings (``predict.amp``, ``predict.channels_last``) must
change nothing on the CPU.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from monai.data.utils import dense_patch_slices
from monai.inferers import sliding_window_inference
from monai.inferers.utils import _get_scan_interval

from medtl.config import ModelConfig, PredictConfig
from medtl.kernel.device import autocast, channels_last, gpu_predictor
from medtl.models.networks import build_network
from medtl.predict.inference import (
    _total_device,
    mirror_axes,
    mirror_batch,
    predict_probabilities,
    window_count,
)
from medtl.preprocess.case import PreprocessedCase

CPU = torch.device("cpu")
CUDA = torch.device("cuda")  # only as an argument: no test here needs a GPU


def _case(shape: tuple[int, int, int], seed: int = 0) -> PreprocessedCase:
    rng = np.random.default_rng(seed)
    return PreprocessedCase(rng.normal(size=(1, *shape)).astype(np.float32), None, {})


def _unet(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network(ModelConfig(features=(4, 4, 8, 8, 16, 4)), 1, 3).eval()


def _per_mirror(models, case, patch, cfg: PredictConfig) -> torch.Tensor:
    """The former prediction: one sliding window per model and mirror, summed on the CPU."""
    image = torch.from_numpy(case.image)[None]
    flips = mirror_axes(cfg.tta)
    total = None
    with torch.no_grad():
        for model in models:
            for dims in flips:
                logits = sliding_window_inference(
                    image.flip(dims) if dims else image,
                    roi_size=list(patch),
                    sw_batch_size=cfg.sw_batch_size,
                    predictor=model,
                    overlap=cfg.overlap,
                    mode=cfg.mode,
                )
                probs = torch.softmax(logits.float(), 1)
                probs = (probs.flip(dims) if dims else probs)[0]
                total = probs if total is None else total.add_(probs)
    return total / (len(models) * len(flips))


class _Counting(torch.nn.Module):
    """A network that records the batch size of every call."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.batches = net, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return self.net(x)


@pytest.mark.parametrize(
    ("shape", "sw_batch_size", "n_models", "calls"),
    [
        ((16, 16, 32), 4, 1, [4, 4]),  # 1 window: 4 mirrored copies per call
        ((16, 16, 32), 8, 2, [8]),  # all 8 copies in one call, per model
        ((24, 16, 32), 4, 1, [4] * 4),  # 2 windows: 2 copies per call
        ((32, 16, 32), 4, 1, [3] * 8),  # 3 windows: one copy at a time, as before
        ((20, 16, 32), 1, 1, [1] * 16),  # 1 window per call: nothing stacked
    ],
)
def test_stacked_tta_equals_one_sliding_window_per_mirror(
    shape, sw_batch_size: int, n_models: int, calls: list[int]
) -> None:
    patch = (16, 16, 32)
    case = _case(shape)
    models = [_Counting(_unet(seed)) for seed in range(n_models)]
    cfg = PredictConfig(tta=True, sw_batch_size=sw_batch_size)
    got = predict_probabilities(models, case, patch, cfg, CPU)
    assert models[0].batches == calls
    expected = _per_mirror([m.net for m in models], case, patch, cfg)
    assert got.shape == expected.shape == (3, *shape) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_without_tta_the_result_is_bit_identical() -> None:
    case, patch = _case((24, 20, 40)), (16, 16, 32)
    models = [_unet(0), _unet(1)]
    cfg = PredictConfig(sw_batch_size=2)
    got = predict_probabilities(models, case, patch, cfg, CPU)
    assert torch.equal(got, _per_mirror(models, case, patch, cfg))


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.75])
def test_window_count_is_monais(overlap: float) -> None:
    roi = (16, 16, 32)
    for size in itertools.product((8, 16, 17, 31, 40), (16, 33), (32, 50, 97)):
        image = tuple(max(s, r) for s, r in zip(size, roi, strict=True))  # padded as MONAI
        interval = _get_scan_interval(image, roi, 3, (overlap,) * 3)
        assert window_count(size, roi, overlap) == len(dense_patch_slices(image, roi, interval))


def test_mirror_batch_fills_one_batch_of_windows_at_most() -> None:
    for mirrors, windows, sw in itertools.product((1, 8), range(1, 10), (1, 2, 4, 8, 16)):
        stack = mirror_batch(mirrors, windows, sw)
        assert 1 <= stack <= mirrors
        assert stack == 1 or stack * windows <= sw


def test_the_sum_stays_on_the_gpu_only_when_it_fits() -> None:
    assert _total_device(CPU, 1).type == "cpu"
    assert _total_device(CUDA, 100, free_bytes=400).type == "cuda"
    assert _total_device(CUDA, 101, free_bytes=400).type == "cpu"


# ------------------------------------------------------------------ CUDA-only settings


def test_amp_and_channels_last_do_nothing_on_the_cpu() -> None:
    net = _unet(0)
    seen: list[tuple[bool, bool]] = []

    def watch(module: torch.nn.Module, args: tuple) -> None:
        seen.append((torch.is_autocast_enabled(), args[0].is_contiguous()))

    handles = [m.register_forward_pre_hook(watch) for m in net.modules() if m is not net]
    case, patch = _case((16, 16, 32)), (16, 16, 32)
    on = PredictConfig(tta=True, amp=True, channels_last=True)
    off = PredictConfig(tta=True, amp=False, channels_last=False)
    try:
        a = predict_probabilities([net], case, patch, on, CPU)
    finally:
        for h in handles:
            h.remove()
    assert seen and set(seen) == {(False, True)}
    assert all(p.is_contiguous() for p in net.parameters())  # not converted
    assert gpu_predictor(net, CPU, amp=on.amp, layout=on.channels_last) is net
    assert torch.equal(a, predict_probabilities([net], case, patch, off, CPU))


@pytest.mark.filterwarnings("ignore:.*CUDA is not available.*:UserWarning")
def test_autocast_is_entered_only_on_cuda() -> None:
    assert isinstance(autocast(CUDA, True), torch.autocast)
    for device, enabled in ((CPU, True), (CPU, False), (CUDA, False)):
        with autocast(device, enabled):
            assert not torch.is_autocast_enabled()


def test_channels_last_is_skipped_off_cuda() -> None:
    x = torch.randn(1, 2, 3, 4, 5)
    assert channels_last(x, CPU) is x and channels_last(x, CUDA, enabled=False) is x
    assert channels_last(x, CUDA).is_contiguous(memory_format=torch.channels_last_3d)


@pytest.mark.filterwarnings("ignore:.*CUDA is not available.*:UserWarning")
def test_the_cuda_predictor_converts_the_network_and_its_input() -> None:
    # the CUDA branch, run on CPU tensors: autocast is disabled (with a warning) without a
    # GPU, but the memory format and the wiring can be checked
    net = _unet(0)
    expected = net(torch.randn(2, 1, 16, 16, 32, generator=torch.Generator().manual_seed(1)))
    layouts: list[bool] = []
    net.register_forward_pre_hook(
        lambda m, a: layouts.append(a[0].is_contiguous(memory_format=torch.channels_last_3d))
    )
    predict = gpu_predictor(net, CUDA, amp=True, layout=True)
    assert predict is not net
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv3d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    x = torch.randn(2, 1, 16, 16, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(predict(x), expected.detach(), atol=1e-5, rtol=1e-5)
    assert layouts == [True]


@pytest.mark.filterwarnings("ignore:.*CUDA is not available.*:UserWarning")
def test_amp_alone_leaves_the_networks_memory_format() -> None:
    # the training's validation runs so: its network keeps the training's memory format
    net = _unet(0)
    predict = gpu_predictor(net, CUDA, amp=True, layout=False)
    assert predict is not net  # wrapped for autocast
    assert all(p.is_contiguous() for p in net.parameters())
