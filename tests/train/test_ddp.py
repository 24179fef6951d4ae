"""Data-parallel training (medtl.train.distributed): 2 gloo processes under torchrun give
the results of one process, up to the order of floating-point sums."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.utils import set_determinism

from medtl.kernel.errors import ConfigError
from medtl.models.networks import build_network
from medtl.train import distributed
from tests.train import tiny_run

HERE = Path(__file__).resolve().parent

ROOT = HERE.parents[1]

# How far apart float32 arithmetic may put two results that are equal in exact arithmetic.
# A gradient element (and the loss) is a sum over the global batch and the voxels of an
# activation map: at most N = batch x patch voxels products. Summed in float32 in any order,
# such a sum of same-sign terms is off by at most gamma_N = N u / (1 - N u), u = 2^-24 (Higham,
# Accuracy and Stability of Numerical Algorithms, 2nd ed., sec. 4.2). One process and two
# processes sum in different orders (and oneDNN blocks differently for batch 2 and 1), so
# each may sit anywhere in that band: the bound for their difference is 2 gamma_N. It is
# applied to norms over all parameters, which the large, well-conditioned gradients
# dominate: single elements whose exact gradient vanishes (conv biases ahead of an instance
# norm) are pure rounding noise and have no relative accuracy at all. A DDP that does not
# average the gradients differs by O(1), far above the band.
U32 = 2.0**-24


def gamma(n: int) -> float:
    return n * U32 / (1 - n * U32)


N_TRAIN = 2 * tiny_run.PATCH[0] * tiny_run.PATCH[1] * tiny_run.PATCH[2]  # batch 2 x 16x16x32
N_SSL = 2 * 32 * 32 * 16  # tiny_run's SSL: batch 2 x 32x32x16


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _column(path: Path, name: str) -> np.ndarray:
    with path.open() as f:
        return np.array([float(r[name]) if r[name] else np.nan for r in csv.DictReader(f)])


def _relative_distance(a: dict, b: dict, start: dict) -> float:
    """‖a − b‖ over the distance ``a`` travelled from ``start`` (all tensors together)."""
    apart = sum(float(((a[k] - b[k]) ** 2).sum()) for k in a) ** 0.5
    moved = sum(float(((a[k] - start[k]) ** 2).sum()) for k in a) ** 0.5
    return apart / moved


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tiny training and SSL pretraining, in one process and in two (torchrun)."""
    root = tmp_path_factory.mktemp("ddp")
    tiny_run.main(
        [
            str(root / "one"),
            *("--ssl-out", str(root / "ssl_one"), "--gradual-out", str(root / "gradual_one")),
            "--grads",
        ]
    )
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    done = subprocess.run(
        [
            *launch,
            "--nproc-per-node",
            "2",
            str(HERE / "tiny_run.py"),
            str(root / "two"),
            "--ssl-out",
            str(root / "ssl_two"),
            "--gradual-out",
            str(root / "gradual_two"),
            "--grads",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    # rank 0 alone reports: each step once, not twice
    assert done.stdout.count("step 3\n") == 1
    return root


def _norm(tensors: dict) -> float:
    return sum(float((t.double() ** 2).sum()) for t in tensors.values()) ** 0.5


def test_ddp_gradients_equal_the_full_batch_gradient(runs: Path) -> None:
    # each rank trains on half the batch; DDP's average is the whole batch's gradient
    for one, two, n in (("one", "two", N_TRAIN), ("ssl_one", "ssl_two", N_SSL)):
        a, b = _load(runs / one / "grads1.pt"), _load(runs / two / "grads1.pt")
        assert a.keys() == b.keys() and a
        diff = {k: a[k] - b[k] for k in a}
        total, bound = _norm(a), 2 * gamma(n)
        assert _norm(diff) <= bound * total, (one, _norm(diff) / total, bound)
        for k in a:  # no tensor holds more of the difference than the band allows
            assert _norm({k: diff[k]}) <= bound * total, (one, k)


def _assert_same_trajectory(one: np.ndarray, two: np.ndarray, n: int) -> None:
    """The first loss is computed from the same weights: equal up to the float32 band. Later
    losses follow weights that AdamW has moved by amplified rounding noise (it divides each
    update by the gradient's running magnitude, so parameters with a vanishing gradient move
    by about lr in either run): they must agree to 1 % of the loss, a trajectory bound, not
    an arithmetic one."""
    assert abs(two[0] - one[0]) <= 2 * gamma(n) * abs(one[0]), (one[0], two[0])
    np.testing.assert_allclose(two, one, rtol=1e-2)


def test_ddp_training_matches_one_process(runs: Path) -> None:
    one, two = runs / "one", runs / "two"
    loss_one, loss_two = _column(one / "curves.csv", "loss"), _column(two / "curves.csv", "loss")
    assert len(loss_one) == len(loss_two) == 10
    _assert_same_trajectory(loss_one, loss_two, N_TRAIN)
    np.testing.assert_allclose(
        _column(two / "curves.csv", "lr"), _column(one / "curves.csv", "lr"), rtol=1e-12
    )
    val_one, val_two = (
        _column(one / "curves.csv", "val_dice"),
        _column(two / "curves.csv", "val_dice"),
    )
    # Dice counts voxels on either side of argmax: a rounding-level change of the weights can
    # flip a few boundary voxels. 0.02 is a few voxels of the validation case's box.
    np.testing.assert_allclose(val_two, val_one, atol=0.02, equal_nan=True)

    # AdamW divides each update by the gradient's running magnitude, so weights whose
    # gradient is zero in exact arithmetic (the conv biases ahead of an instance norm)
    # move by rounding noise, ±lr a step, in either run: the weights agree in norm, not
    # element by element. A DDP that did not average gradients is ~0.9 apart here.
    set_determinism(seed=3)
    start = build_network(tiny_run.MODEL, 1, 2).state_dict()
    a, b = _load(one / "last.pt")["model"], _load(two / "last.pt")["model"]
    assert _relative_distance(a, b, start) < 0.1

    summary = json.loads((two / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 10
    assert _load(two / "last.pt")["world_size"] == 2
    assert sorted(p.name for p in two.iterdir()) == [
        "best.pt",
        "curves.csv",
        "grads1.pt",
        "last.pt",
        "summary.json",
    ]


def test_ddp_follows_stages_unfrozen_during_training(runs: Path) -> None:
    one, two = runs / "gradual_one", runs / "gradual_two"
    _assert_same_trajectory(
        _column(one / "curves.csv", "loss"), _column(two / "curves.csv", "loss"), N_TRAIN
    )
    with (two / "curves.csv").open() as f:
        events = [r["event"] for r in csv.DictReader(f)]
    # unfrozen once 2 (4) steps are done: the event is on the row of step 3 (5)
    assert events == ["", "", "unfrozen: down_4", "", "unfrozen: down_3", ""]
    # the encoder stages unfrozen at steps 2 and 4 trained in both runs, alike
    set_determinism(seed=3)
    start = build_network(tiny_run.MODEL, 1, 2).state_dict()
    a, b = _load(one / "last.pt")["model"], _load(two / "last.pt")["model"]
    # down_3 trains 2 steps only: each weight has moved about 2 lr, and those whose gradient
    # is rounding noise move ±lr in either run, so the two runs' updates differ by a larger
    # share than after 4 steps (0.12 seen on a loaded machine); a DDP that did not average
    # gradients is ~0.9 apart.
    for stage, bound in (("down_4.", 0.1), ("down_3.", 0.25)):
        keys = [k for k in a if k.startswith(stage) and k.endswith("conv.weight")]
        assert keys and all(not torch.equal(a[k], start[k]) for k in keys)
        assert (
            _relative_distance(
                {k: a[k] for k in keys}, {k: b[k] for k in keys}, {k: start[k] for k in keys}
            )
            < bound
        )
    assert all(torch.equal(a[k], start[k]) for k in a if k.startswith("conv_0."))


def test_ddp_ssl_pretraining_matches_one_process(runs: Path) -> None:
    one, two = runs / "ssl_one", runs / "ssl_two"
    for column in ("loss", "inpaint", "rotation"):
        _assert_same_trajectory(
            _column(one / "curves.csv", column), _column(two / "curves.csv", column), N_SSL
        )
    set_determinism(seed=5)
    start = build_network(tiny_run.MODEL, 1, 1).state_dict()
    a = _load(one / "checkpoint.pt")["state_dict"]
    b = _load(two / "checkpoint.pt")["state_dict"]
    assert _relative_distance(a, b, start) < 0.1
    assert json.loads((two / "summary.json").read_text())["processes"] == 2


# ------------------------------------------------------------------ helpers, no processes


def test_helpers_read_torchrun_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.world_size() == 2 and distributed.rank() == 1
    assert distributed.is_distributed() and not distributed.is_main()
    assert distributed.shard(torch.arange(6)).tolist() == [1, 3, 5]
    distributed.check_batch_size(4, "train.batch_size")
    with pytest.raises(ConfigError, match=r"'train.batch_size': got 3 with 2 processes.*e\.g\. 4"):
        distributed.check_batch_size(3, "train.batch_size")


def test_single_process_needs_no_group() -> None:
    cpu = torch.device("cpu")
    with distributed.process_group(cpu) as device:
        assert device == cpu
    assert distributed.mean_over_ranks(2.5, cpu) == 2.5
    assert distributed.broadcast_floats([1, 2.5], cpu) == [1.0, 2.5]
    net = torch.nn.Linear(2, 2)
    assert distributed.wrap(net, cpu) is net
    assert distributed.sync_batchnorm(net, cpu) is net
