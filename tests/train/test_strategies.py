"""Tests for the transfer strategies (medtl.train.strategies), their config keys
(medtl.config.ArmConfig) and their effect in the training loop (medtl.train.loop)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from medtl.config import (
    ArmConfig,
    ModelConfig,
    TrainConfig,
    parse_section,
    to_dict,
    validate_config,
)
from medtl.kernel.errors import ConfigError
from medtl.models.networks import Architecture, build_network, get_architecture
from medtl.models.stages import StrategySpec, encoder_stages
from medtl.train.engine import lr_factor
from medtl.train.loop import RunSpec, train_run
from medtl.train.run import TrainingJob
from medtl.train.strategies import StageSchedule

ROOT = Path(__file__).resolve().parents[2]
MODEL = ModelConfig(features=(4, 4, 8, 8, 16, 4))
PATCH = (16, 16, 32)  # as in test_loop.py: one side of 32 for basicunet's deepest level
SHAPE = (20, 20, 36)
CPU = torch.device("cpu")
ARCH = get_architecture("basicunet")
STAGES = ["conv_0", "down_1", "down_2", "down_3", "down_4"]


def _item(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    label = np.zeros(SHAPE, np.int64)
    label[4 + seed : 12 + seed, 5:14, 6:20] = 1
    image = (2.0 * label + rng.normal(0.0, 0.5, SHAPE)).astype(np.float32)
    return {
        "image": torch.from_numpy(image[None]),
        "label": torch.from_numpy(label[None]),
        "case": f"case{seed}",
    }


@pytest.fixture(scope="module")
def items() -> list[dict]:
    return [_item(0), _item(1)]


def _spec(strategy: StrategySpec | None, steps: int = 3, val_every: int = 3, **train) -> RunSpec:
    return RunSpec(
        model=MODEL,
        train=TrainConfig(
            steps=steps, batch_size=2, patch_size=PATCH, val_every=val_every, **train
        ),
        num_classes=2,
        classes={"1": "box"},
        seed=0,
        strategy=strategy,
        tags={"arm": "test", "fold": 0},
    )


def _run(spec: RunSpec, items: list[dict], out: Path, init=None, on_step=None) -> dict:
    return train_run(
        spec, items, items[:1], out, CPU, init, progress=False, fingerprint="fp", on_step=on_step
    )


def _batchnorm_net() -> nn.Module:
    """BasicUNet with BatchNorm (running statistics), named like medtl's basicunet."""
    from monai.networks.nets import BasicUNet

    torch.manual_seed(0)
    return BasicUNet(
        spatial_dims=3, in_channels=1, out_channels=2, features=MODEL.features, norm="batch"
    )


def _snapshot(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _stage_of(key: str) -> str:
    part = ARCH.part_of(key)
    return key.split(".")[0] if part == "encoder" else part


def _changed_stages(before: dict, after: dict) -> set[str]:
    return {_stage_of(k) for k in before if not torch.equal(before[k], after[k])}


def _curves(out: Path) -> list[dict[str, str]]:
    with (out / "curves.csv").open() as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------ config


def test_old_arm_keys_keep_their_meaning() -> None:
    shipped = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["arms"]
    arms = {name: parse_section(ArmConfig, d, f"arms.{name}") for name, d in shipped.items()}
    assert arms["scratch"].strategy == "scratch" and arms["scratch"].init == "random"
    assert arms["frozen"].strategy == "frozen" and arms["frozen"].freeze_encoder
    assert arms["finetune"].strategy == "finetune" and arms["finetune"].encoder_lr_scale == 0.2
    assert ArmConfig(init="random", freeze_encoder=True).strategy == "frozen"
    # the same once the schema has filled in its defaults (as the workflow passes them)
    partial = {"init": "pretrained", "strategy": "partial", "unfreeze_stages": 2}
    raw = {"arms": {**shipped, "p": partial}}
    filled = validate_config(raw, ROOT / "pipeline" / "schemas" / "config.schema.yaml")["arms"]
    parsed = {name: parse_section(ArmConfig, d, f"arms.{name}") for name, d in filled.items()}
    assert {name: a.strategy for name, a in parsed.items()} == {
        "scratch": "scratch",
        "frozen": "frozen",
        "finetune": "finetune",
        "ssl_finetune": "finetune",  # init: ssl, all layers at the full learning rate
        "p": "partial",
    }
    assert filled["p"]["freeze_encoder"] is False and filled["p"]["unfreeze_at"] == []
    # an explicit strategy sets freeze_encoder, and the resolved arm parses to itself
    frozen = ArmConfig(init="pretrained", strategy="frozen")
    assert frozen.freeze_encoder
    assert parse_section(ArmConfig, to_dict(frozen)) == frozen


@pytest.mark.parametrize(
    ("arm", "key"),
    [
        ({"strategy": "melt"}, "strategy"),
        ({"init": "pretrained", "strategy": "partial"}, "unfreeze_stages"),
        ({"init": "pretrained", "strategy": "finetune", "unfreeze_stages": 2}, "unfreeze_stages"),
        ({"init": "pretrained", "strategy": "gradual"}, "unfreeze_every"),
        (
            {"init": "pretrained", "strategy": "gradual", "unfreeze_every": 5, "unfreeze_at": [1]},
            "unfreeze_every",
        ),
        ({"init": "pretrained", "strategy": "gradual", "unfreeze_at": [5, 2]}, "unfreeze_at"),
        ({"init": "pretrained", "unfreeze_every": 5}, "unfreeze_every"),
        ({"init": "pretrained", "strategy": "partial", "freeze_encoder": True}, "freeze_encoder"),
        ({"init": "pretrained", "strategy": "scratch"}, "init"),
    ],
)
def test_bad_arm_settings_name_key_and_fix(arm: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_section(ArmConfig, arm, "arms.a")
    msg = str(info.value)
    assert key in msg
    assert "How to fix" in msg or "allowed values" in msg


def test_arm_settings_carry_the_new_keys() -> None:
    arm = {"init": "pretrained", "strategy": "gradual", "unfreeze_at": [10, 20]}
    settings = TrainingJob.from_dict({"arm": arm, "train": {"warmup_steps": 5, "patience": 3}})
    assert settings.arm.unfreeze_at == (10, 20)
    assert (settings.train.warmup_steps, settings.train.patience) == (5, 3)
    assert StrategySpec.from_arm(settings.arm) == StrategySpec("gradual", unfreeze_at=(10, 20))


# ------------------------------------------------------------------ stages


def test_basicunet_stages_are_its_encoder_prefixes() -> None:
    net = build_network(MODEL, 1, 2)
    stages = encoder_stages(net, ARCH)
    assert [s.name for s in stages] == STAGES
    encoder = [k for k in net.state_dict() if ARCH.part_of(k) == "encoder"]
    assert all(sum(s.contains(k) for s in stages) == 1 for k in encoder)


class _ResNetLike(nn.Module):
    """Named like MONAI FlexibleUNet's ResNet encoder, but tiny."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.conv1 = nn.Conv3d(1, 2, 3)
        self.encoder.bn1 = nn.BatchNorm3d(2)
        self.encoder.act = nn.ReLU()
        self.encoder.layer1 = nn.Sequential(nn.Conv3d(2, 2, 1), nn.BatchNorm3d(2))
        self.encoder.layer2 = nn.Sequential(nn.Conv3d(2, 2, 1))
        self.decoder = nn.Conv3d(2, 2, 1)
        self.head = nn.Conv3d(2, 2, 1)


def _arch(**extra) -> Architecture:
    @dataclass(frozen=True)
    class Declared(Architecture):
        encoder_stages: tuple = ()

    fields = dict(
        build=lambda *a: _ResNetLike(),
        encoder_prefixes=("encoder.",),
        head_prefixes=("head.",),
        patch_multiple=1,
    )
    return Declared(**fields, **extra) if extra else Architecture(**fields)


def test_single_prefix_stages_merge_the_stem() -> None:
    stages = encoder_stages(_ResNetLike(), _arch())
    assert [s.name for s in stages] == ["encoder.conv1+bn1", "encoder.layer1", "encoder.layer2"]
    assert stages[0].contains("encoder.bn1.running_mean")
    assert not stages[0].contains("encoder.layer1.1.running_mean")


def test_single_prefix_looks_inside_a_lone_container() -> None:
    net = nn.Module()
    net.encoder = nn.Module()
    net.encoder.stages = nn.Sequential(
        nn.Sequential(nn.Conv3d(1, 2, 3), nn.InstanceNorm3d(2, track_running_stats=True)),
        nn.Sequential(nn.Conv3d(2, 2, 3)),
    )
    stages = encoder_stages(net, _arch())
    assert [s.name for s in stages] == ["encoder.stages.0", "encoder.stages.1"]
    assert stages[0].contains("encoder.stages.0.1.running_var")


def test_declared_stages_win_and_must_cover_the_encoder() -> None:
    arch = _arch(
        encoder_stages=(("encoder.conv1", "encoder.bn1", "encoder.layer1"), "encoder.layer2")
    )
    assert [s.name for s in encoder_stages(_ResNetLike(), arch)] == [
        "encoder.conv1+encoder.bn1+encoder.layer1",
        "encoder.layer2",
    ]
    with pytest.raises(ConfigError, match="covered by none"):
        encoder_stages(_ResNetLike(), _arch(encoder_stages=("encoder.conv1", "encoder.bn1")))


@pytest.mark.parametrize(
    ("spec", "starts"),
    [
        (StrategySpec("scratch"), [0, 0, 0, 0, 0]),
        (StrategySpec("finetune"), [0, 0, 0, 0, 0]),
        (StrategySpec("frozen"), [None] * 5),
        (StrategySpec("partial", unfreeze_stages=2), [None, None, None, 0, 0]),
        (StrategySpec("gradual", unfreeze_every=50), [250, 200, 150, 100, 50]),
        (StrategySpec("gradual", unfreeze_at=(0, 30)), [None, None, None, 30, 0]),
    ],
)
def test_unfreeze_steps(spec: StrategySpec, starts: list) -> None:
    stages = encoder_stages(build_network(MODEL, 1, 2), ARCH)
    assert spec.unfreeze_steps(stages) == starts


def test_more_stages_than_the_encoder_has_is_refused() -> None:
    stages = encoder_stages(build_network(MODEL, 1, 2), ARCH)
    with pytest.raises(ConfigError, match="expected 1 to 5"):
        StrategySpec("partial", unfreeze_stages=6).unfreeze_steps(stages)
    with pytest.raises(ConfigError, match="at most 5"):
        StrategySpec("gradual", unfreeze_at=(1, 2, 3, 4, 5, 6)).unfreeze_steps(stages)


def test_frozen_stage_modules_stay_in_eval_mode() -> None:
    net = _batchnorm_net()
    sched = StageSchedule(net, ARCH, StrategySpec("partial", unfreeze_stages=1))
    sched.apply(0)
    sched.train_mode()
    modes = {name: m.training for name, m in net.named_modules() if name}
    assert not any(v for k, v in modes.items() if k.split(".")[0] in STAGES[:4])
    assert all(v for k, v in modes.items() if k.split(".")[0] in ("down_4", "upcat_1"))


# ------------------------------------------------------------------ training


def test_frozen_keeps_encoder_and_norm_statistics(items: list[dict], tmp_path: Path) -> None:
    net = _batchnorm_net()
    before = _snapshot(net)
    # validation every step: validate() calls model.train(), which must not unfreeze norms
    summary = _run(_spec(StrategySpec("frozen"), steps=3, val_every=1), items, tmp_path, net)
    after = net.state_dict()
    for key, value in before.items():
        if ARCH.part_of(key) == "encoder":
            assert torch.equal(after[key], value), key
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.endswith("running_mean") for k in changed)  # decoder norms do learn
    assert _changed_stages(before, after) == {"decoder", "head"}
    enc = sum(p.numel() for k, p in net.named_parameters() if ARCH.part_of(k) == "encoder")
    total = sum(p.numel() for p in net.parameters())
    assert summary["strategy"] == "frozen"
    assert summary["frozen_parameters"] == enc
    assert summary["trainable_parameters"] == {"start": total - enc, "max": total - enc}


def test_partial_trains_only_the_last_stages(items: list[dict], tmp_path: Path) -> None:
    net = _batchnorm_net()
    before = _snapshot(net)
    spec = _spec(StrategySpec("partial", unfreeze_stages=2, encoder_lr_scale=0.5), steps=2)
    summary = _run(spec, items, tmp_path, net)
    after = net.state_dict()
    assert _changed_stages(before, after) == {"down_3", "down_4", "decoder", "head"}
    for key in before:
        if _stage_of(key) in STAGES[:3]:
            assert torch.equal(before[key], after[key]), key
    assert summary["stages"] == dict(zip(STAGES, [None, None, None, 0, 0], strict=True))


def test_gradual_unfreezes_on_schedule(items: list[dict], tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = build_network(MODEL, 1, 2)
    snaps = [_snapshot(net)]
    flags: list[dict[str, bool]] = []

    def watch(step: int, model: nn.Module) -> None:
        snaps.append(_snapshot(model))
        grads = {k: p.requires_grad for k, p in model.named_parameters()}
        flags.append({s: all(g for k, g in grads.items() if k.startswith(s + ".")) for s in STAGES})

    spec = _spec(StrategySpec("gradual", unfreeze_every=1), steps=4, val_every=4)
    summary = _run(spec, items, tmp_path, net, on_step=watch)
    starts = dict(zip(STAGES, [5, 4, 3, 2, 1], strict=True))  # deepest first, every step
    for step in range(1, 5):
        # the step after `start` steps is the first to train a stage
        assert flags[step - 1] == {s: starts[s] < step for s in STAGES}, step
        changed = _changed_stages(snaps[step - 1], snaps[step])
        assert changed - {"decoder", "head"} == {s for s in STAGES if starts[s] < step}, step
    for stage in STAGES:  # bit-identical up to its step
        for step in range(min(starts[stage], 4) + 1):
            keys = [k for k in snaps[0] if _stage_of(k) == stage]
            assert all(torch.equal(snaps[0][k], snaps[step][k]) for k in keys)
    events = [r["event"] for r in _curves(tmp_path)]
    assert events == ["", "unfrozen: down_4", "unfrozen: down_3", "unfrozen: down_2"]
    sizes = {k: p.numel() for k, p in net.named_parameters()}
    counts = {s: sum(n for k, n in sizes.items() if k.startswith(s + ".")) for s in STAGES}
    rest = sum(p.numel() for p in net.parameters()) - sum(counts.values())
    assert summary["trainable_parameters"] == {
        "start": rest,
        "max": rest + counts["down_4"] + counts["down_3"] + counts["down_2"],
    }


def test_warmup_rises_linearly(items: list[dict], tmp_path: Path) -> None:
    warm = 4
    _run(_spec(None, steps=6, val_every=6, warmup_steps=warm), items, tmp_path)
    # curves.csv holds the rate after each step, i.e. that of the next step
    lrs = [float(r["lr"]) for r in _curves(tmp_path)]
    assert lrs[: warm - 1] == pytest.approx([2e-3 * (n + 1) / warm for n in range(1, warm)])
    assert lrs[warm - 1] == pytest.approx(2e-3)  # the peak, then cosine to zero
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)
    assert [lr_factor(s, 6, warm) for s in range(warm)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    with pytest.raises(ConfigError, match="warmup_steps"):
        _run(_spec(None, steps=3, warmup_steps=3), items, tmp_path / "bad")


def test_early_stopping_stops_and_says_so(items: list[dict], tmp_path: Path) -> None:
    spec = _spec(None, steps=20, val_every=1, lr=0.0, patience=2)  # lr 0: Dice cannot improve
    summary = _run(spec, items, tmp_path)
    assert summary["stopped_early"] is True
    assert summary["steps"] == 3 and summary["planned_steps"] == 20
    assert summary["best_step"] == 1
    assert "did not improve" in summary["stop_reason"]
    assert json.loads((tmp_path / "summary.json").read_text())["stopped_early"] is True
    rows = _curves(tmp_path)
    assert len(rows) == 3 and "early stop" in rows[-1]["event"]
    again = _run(spec, items, tmp_path)  # a rerun does not train on
    assert again["steps"] == 3 and again["stopped_early"] is True


def test_no_early_stop_without_patience(items: list[dict], tmp_path: Path) -> None:
    summary = _run(_spec(None, steps=3, val_every=1, lr=0.0), items, tmp_path)
    assert summary["stopped_early"] is False and summary["steps"] == 3


class _Interrupt(Exception):
    pass


def test_resumed_gradual_run_equals_uninterrupted(items: list[dict], tmp_path: Path) -> None:
    spec = _spec(StrategySpec("gradual", unfreeze_every=1), steps=4, val_every=2)
    _run(spec, items, tmp_path / "whole")

    def stop_at_2(step: int, model: nn.Module) -> None:
        if step == 2:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        _run(spec, items, tmp_path / "split", on_step=stop_at_2)
    assert torch.load(tmp_path / "split" / "last.pt", weights_only=True)["step"] == 2
    _run(spec, items, tmp_path / "split")
    a = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 4
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    cols = ("step", "loss", "val_dice", "lr", "event")
    whole, split = _curves(tmp_path / "whole"), _curves(tmp_path / "split")
    assert [[r[c] for c in cols] for r in whole] == [[r[c] for c in cols] for r in split]
