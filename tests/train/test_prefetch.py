"""Batches prepared ahead by a thread (medtl.train.data.Prefetcher) and the loop's GPU guards.

The prefetched stream must hand out exactly the batches of the plain stream, save the
consumer's position (not the thread's), resume exactly, and leave no thread behind after
a run, an error or Ctrl-C. On the CPU the CUDA-only settings (``train.amp``,
``train.channels_last``) must change nothing.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import pytest
import torch

from medtl.config import AugmentConfig
from medtl.kernel.errors import ConfigError
from medtl.train.data import PatchStream, Prefetcher
from medtl.train.loop import train_run
from tests.train import tiny_run
from tests.train.test_resume import _assert_same_run, _Interrupt, _load, _stop_at

CPU = torch.device("cpu")
STEPS, EVERY, VAL_EVERY = 10, 3, 4


def _stream(seed: int = 3) -> PatchStream:
    items = [tiny_run.item(0), tiny_run.item(1), tiny_run.item(2)]
    return PatchStream(items, tiny_run.PATCH, 2, AugmentConfig(), 0.5, seed=seed)


def _assert_same_batch(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "medtl-prefetch" and t.is_alive()]


def _no_threads_left(timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while _threads() and time.monotonic() < end:
        time.sleep(0.05)
    return not _threads()


# ------------------------------------------------------------------ the stream


@pytest.mark.parametrize("depth", [0, 1, 2, 5])
def test_prefetched_stream_yields_the_batches_of_the_plain_stream(depth: int) -> None:
    plain = _stream()
    expected = [next(plain) for _ in range(8)]  # past two passes over the 3 cases
    with Prefetcher(_stream(), depth) as batches:
        got = [next(batches) for _ in range(8)]
    for a, b in zip(got, expected, strict=True):
        _assert_same_batch(a, b)
    assert _no_threads_left()


def test_state_is_the_consumers_position_not_the_threads() -> None:
    with Prefetcher(_stream(), depth=3) as batches:
        for _ in range(2):
            next(batches)
        deadline = time.monotonic() + 30
        while batches.stream.index < 5 and time.monotonic() < deadline:
            time.sleep(0.01)  # the thread fills its queue: 3 batches ahead
        # 3 batches queued, and the thread may have drawn a 4th it waits to put
        assert batches.stream.index in (5, 6)
        state = batches.state_dict()
    assert state == {"seed": 3, "index": 2}
    plain = _stream()
    plain.load_state_dict(state)
    resumed = Prefetcher(_stream(), depth=2)
    resumed.load_state_dict(state)
    with resumed:
        for _ in range(4):
            _assert_same_batch(next(resumed), next(plain))


def test_reload_and_restart_continue_from_the_consumer() -> None:
    plain = _stream()
    expected = [next(plain) for _ in range(7)]
    batches = Prefetcher(_stream(), depth=2)
    try:
        _assert_same_batch(next(batches), expected[0])
        _assert_same_batch(next(batches), expected[1])
        batches.close()  # the batches prepared ahead are dropped ...
        assert not batches.running and _no_threads_left()
        _assert_same_batch(next(batches), expected[2])  # ... and drawn again on restart
        batches.load_state_dict({"seed": 3, "index": 5})  # a reload while running
        _assert_same_batch(next(batches), expected[5])
        _assert_same_batch(next(batches), expected[6])
        with pytest.raises(ValueError, match="seed"):
            batches.load_state_dict({"seed": 4, "index": 0})
    finally:
        batches.close()
    assert _no_threads_left()


class _FailingAt:
    """The stream's transforms, failing for batch ``index``."""

    def __init__(self, stream: PatchStream, index: int) -> None:
        self.stream, self.index, self.transform = stream, index, stream.transform

    def set_random_state(self, seed: int) -> None:
        self.transform.set_random_state(seed=seed)

    def __call__(self, data: dict) -> list[dict]:
        if self.stream.index == self.index:
            raise RuntimeError("broken case")
        return self.transform(data)


def test_an_error_in_the_thread_is_raised_where_the_batch_is_wanted() -> None:
    stream = _stream()
    stream.transform = _FailingAt(stream, 2)
    batches = Prefetcher(stream, depth=2)
    next(batches)
    next(batches)
    with pytest.raises(RuntimeError, match="broken case"):
        next(batches)
    assert not batches.running and _no_threads_left()
    assert batches.state_dict()["index"] == 2


def test_depth_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="depth"):
        Prefetcher(_stream(), depth=-1)


# ------------------------------------------------------------------ in the training loop


def _spec(prefetch: int, steps: int = STEPS, **train):
    base = tiny_run.spec(steps, EVERY, VAL_EVERY)
    return dataclasses.replace(
        base, train=dataclasses.replace(base.train, prefetch=prefetch, **train)
    )


def _train(spec, out: Path, on_step=None) -> dict:
    items = [tiny_run.item(0), tiny_run.item(1), tiny_run.item(2)]
    return train_run(
        spec, items, items[:1], out, CPU, progress=False, fingerprint="tiny", on_step=on_step
    )


@pytest.fixture(scope="module")
def unprefetched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plain") / "run"
    _train(_spec(prefetch=0), out)
    return out


def test_prefetched_run_equals_the_unprefetched_run(unprefetched: Path, tmp_path: Path) -> None:
    _train(_spec(prefetch=2), tmp_path / "run")
    _assert_same_run(unprefetched, tmp_path / "run")
    assert _no_threads_left()  # stopped after training


@pytest.mark.parametrize("stop", [5, 7])
def test_resumed_prefetched_run_equals_an_uninterrupted_one(
    unprefetched: Path, tmp_path: Path, stop: int
) -> None:
    out = tmp_path / "run"
    with pytest.raises(_Interrupt):
        _train(_spec(prefetch=3), out, on_step=_stop_at(stop))
    assert _no_threads_left()  # stopped after an error in a step
    state = _load(out / "last.pt")
    # the thread ran ahead; the state holds the batches trained on
    assert state["stream"] == {"seed": 3, "index": state["step"]}
    _train(_spec(prefetch=3), out)
    _assert_same_run(unprefetched, out)


def test_ctrl_c_in_a_step_stops_the_thread(tmp_path: Path) -> None:
    def interrupt(step: int, model: torch.nn.Module) -> None:
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(_spec(prefetch=2, steps=4), tmp_path / "run", on_step=interrupt)
    assert _no_threads_left()


def test_an_error_in_the_batch_thread_stops_the_run(tmp_path: Path) -> None:
    items = [tiny_run.item(0), tiny_run.item(1), tiny_run.item(2)]
    items[1] = {**items[1], "label": None}  # the transforms fail on this case
    with pytest.raises(Exception):  # noqa: B017 (MONAI's own error)
        train_run(_spec(prefetch=2), items, items[:1], tmp_path / "run", CPU, progress=False)
    assert _no_threads_left()


def test_negative_prefetch_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="train.prefetch"):
        _train(_spec(prefetch=-1), tmp_path / "run")


def test_cuda_settings_change_nothing_on_the_cpu(unprefetched: Path, tmp_path: Path) -> None:
    seen: list[tuple[bool, bool]] = []

    def watch(module: torch.nn.Module, args: tuple) -> None:
        seen.append(
            (
                torch.is_autocast_enabled(),
                args[0].is_contiguous(memory_format=torch.contiguous_format),
            )
        )

    handle = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda m, a: watch(m, a) if isinstance(m, torch.nn.Conv3d) else None
    )
    try:
        _train(_spec(prefetch=0, amp=True, channels_last=True), tmp_path / "run")
    finally:
        handle.remove()
    assert seen and set(seen) == {(False, True)}  # no autocast, the default memory format
    _assert_same_run(unprefetched, tmp_path / "run")
