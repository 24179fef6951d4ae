"""Tests for the per-stage model description (medtl.models.describe) and its command."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from medtl.cli.main import app
from medtl.config import ArmConfig, ModelConfig
from medtl.models.describe import describe_model, format_table, trainable_at_start
from medtl.models.networks import build_network, count_parameters, get_architecture
from medtl.models.stages import StrategySpec
from medtl.models.transfer import load_pretrained
from medtl.train.strategies import StageSchedule
from tests.models.weight_layouts import medicalnet_checkpoint, swin_ssl_checkpoint

MODEL = ModelConfig(features=(4, 4, 8, 8, 16, 4))
ARCH = get_architecture("basicunet")
ARMS = {
    "scratch": ArmConfig(init="random"),
    "frozen": ArmConfig(init="pretrained", freeze_encoder=True),
    "finetune": ArmConfig(init="pretrained", encoder_lr_scale=0.2),
    "partial": ArmConfig(init="pretrained", strategy="partial", unfreeze_stages=2),
    "gradual": ArmConfig(init="pretrained", strategy="gradual", unfreeze_every=50),
    "listed": ArmConfig(init="pretrained", strategy="gradual", unfreeze_at=(0, 30)),
}


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    return build_network(MODEL, 1, 2)


def test_rows_and_totals_match_the_model(net: torch.nn.Module) -> None:
    df = describe_model(MODEL, 1, 2, ARMS)
    stages = ["conv_0", "down_1", "down_2", "down_3", "down_4", "decoder", "head"]
    assert list(df["stage"]) == stages
    assert list(df["part"]) == ["encoder"] * 5 + ["decoder", "head"]
    assert "pretrained" not in df.columns
    assert int(df["parameters"].sum()) == sum(p.numel() for p in net.parameters())
    by_part = df.groupby("part")["parameters"].sum().to_dict()
    assert by_part == count_parameters(net, ARCH)
    for stage in ("conv_0", "down_4"):
        n = sum(p.numel() for k, p in net.named_parameters() if k.startswith(stage + "."))
        assert int(df.loc[df["stage"] == stage, "parameters"].iloc[0]) == n


def test_arm_columns_match_the_strategies(net: torch.nn.Module) -> None:
    df = describe_model(MODEL, 1, 2, ARMS)
    enc = df["part"] == "encoder"
    assert set(df.loc[~enc, list(ARMS)].to_numpy().ravel()) == {"trainable"}
    assert list(df.loc[enc, "scratch"]) == ["trainable"] * 5
    assert list(df.loc[enc, "finetune"]) == ["trainable"] * 5
    assert list(df.loc[enc, "frozen"]) == ["frozen"] * 5
    assert list(df.loc[enc, "partial"]) == ["frozen"] * 3 + ["trainable"] * 2
    steps = (250, 200, 150, 100, 50)  # every 50 steps, deepest stage first
    assert list(df.loc[enc, "gradual"]) == [f"unfrozen at step {s}" for s in steps]
    assert list(df.loc[enc, "listed"]) == ["frozen"] * 3 + ["unfrozen at step 30", "trainable"]
    for name, arm in ARMS.items():  # the same count as the training loop's schedule
        schedule = StageSchedule(net, ARCH, StrategySpec.from_arm(arm))
        assert trainable_at_start(df, name) == schedule.trainable_parameters(0), name


def test_pretrained_coverage(net: torch.nn.Module) -> None:
    encoder = {k for k in net.state_dict() if ARCH.part_of(k) == "encoder"}
    df = describe_model(MODEL, 1, 2, {}, pretrained_keys=encoder)
    assert list(df["pretrained"]) == ["yes"] * 5 + ["no", "no"]
    some = {k for k in encoder if k.startswith("conv_0.")}
    some.remove(sorted(some)[0])
    df = describe_model(MODEL, 1, 2, {}, pretrained_keys=some)
    assert df["pretrained"].iloc[0] == f"partly ({len(some)}/{len(some) + 1} tensors)"
    assert df["pretrained"].iloc[1] == "no"


def test_format_table(net: torch.nn.Module) -> None:
    df = describe_model(MODEL, 1, 2, {"frozen": ARMS["frozen"], "scratch": ARMS["scratch"]})
    lines = format_table(df).splitlines()
    assert len(lines) == len(df) + 4  # header, rule, rows, rule, total
    assert lines[0].split() == ["part", "stage", "parameters", "frozen", "scratch"]
    total = sum(p.numel() for p in net.parameters())
    assert lines[-1].startswith("total") and f"{total:,}" in lines[-1]
    assert f"{total:,} trainable" in lines[-1]  # scratch trains everything
    assert f"{trainable_at_start(df, 'frozen'):,} trainable" in lines[-1]


def test_arm_named_like_a_column_is_refused() -> None:
    with pytest.raises(ValueError, match="rename"):
        describe_model(MODEL, 1, 2, {"parameters": ArmConfig()})


# ------------------------------------------------------------------ medtl describe-model


ARMS_YAML = {"init": "pretrained", "freeze_encoder": True}


def _describe_cli(
    tmp_path: Path, model: dict, weights: Path, *extra: str, train: dict | None = None
):
    config = tmp_path / "config.yaml"
    settings = {"model": model, "classes": {"1": "organ"}, "arms": {"frozen": ARMS_YAML}}
    config.write_text(yaml.safe_dump({**settings, **({"train": train} if train else {})}))
    args = ["describe-model", "--config", str(config), "--pretrained", str(weights), *extra]
    return CliRunner().invoke(app, args)


def _rows(output: str) -> dict[str, list[str]]:
    """The table's rows by stage name (the columns split on runs of spaces)."""
    lines = output.splitlines()
    end = next(i for i, line in enumerate(lines[2:], 2) if line.startswith("---"))
    return {line.split()[1]: line.split() for line in lines[2:end]}


@pytest.mark.parametrize(
    ("model", "writer", "name"),
    [
        ({"name": "swinunetr", "features": [12]}, swin_ssl_checkpoint, "model_swinvit.pt"),
        (
            {"name": "flexibleunet", "backbone": "resnet10"},
            medicalnet_checkpoint,
            "resnet_10_23dataset.pth",
        ),
    ],
)
def test_describe_model_shows_what_training_loads(
    tmp_path: Path, model: dict, writer, name: str
) -> None:
    """Published layouts: every encoder stage pretrained, and the training report's counts."""
    cfg = ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in model.items()})
    torch.manual_seed(1)
    network = build_network(cfg, 1, 2)
    path = writer(tmp_path / name, network)
    result = _describe_cli(tmp_path, model, path)
    assert result.exit_code == 0, result.output
    rows = _rows(result.output)
    encoder = [r for r in rows.values() if r[0] == "encoder"]
    assert encoder and all(r[3] == "yes" for r in encoder), result.output
    assert rows["decoder"][3] == "no" and rows["head"][3] == "no"
    trained = load_pretrained(network, get_architecture(cfg.name), path)  # as training does
    assert trained.fraction_loaded == 1.0
    assert f"pretrained: {trained.summary()}" in result.output
    assert "training would accept these weights" in result.output


def test_describe_model_refuses_what_training_refuses(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = build_network(ModelConfig(name="flexibleunet", backbone="resnet18"), 1, 2)
    path = medicalnet_checkpoint(tmp_path / "resnet_18.pth", source)
    result = _describe_cli(tmp_path, {"name": "flexibleunet", "backbone": "resnet10"}, path)
    assert result.exit_code == 1
    rows = _rows(result.output)
    assert rows["encoder.layer2"][3:5] == ["partly", "(12/18"]
    assert "medtl: error: " in result.output and "set model.backbone: resnet18" in result.output
    assert "Traceback" not in result.output


def test_describe_model_format_option(tmp_path: Path) -> None:
    torch.manual_seed(1)
    cfg = {"name": "flexibleunet", "backbone": "resnet10"}
    net = build_network(ModelConfig(**cfg), 1, 2)
    path = medicalnet_checkpoint(tmp_path / "resnet_10.pth", net)
    result = _describe_cli(tmp_path, cfg, path, "--format", "nnunet")
    assert result.exit_code == 1
    assert "format 'nnunet' expects" in result.output and "set format: medicalnet" in result.output
    assert _describe_cli(tmp_path, cfg, path, "--format", "medicalnet").exit_code == 0


def test_describe_model_shows_a_primus_and_its_nnssl_adaptations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nnssl's PrimusM (shrunk to embed_dim 48, depth 2: the plan names only the preset):
    every stage pretrained, the positional embedding resized to the training patch."""
    from medtl.models import primus_sizes
    from tests.models.weight_layouts import EvaMAELayout, nnssl_checkpoint, nnssl_primus_plan

    monkeypatch.setitem(primus_sizes.PRIMUS_PRESETS, "M", (48, 2, 2))
    torch.manual_seed(1)
    path = nnssl_checkpoint(tmp_path / "ckpt", EvaMAELayout(48, 2, 2), nnssl_primus_plan())
    model = {"name": "primus", "preset": "M"}
    result = _describe_cli(tmp_path, model, path, train={"patch_size": [96, 96, 64]})
    assert result.exit_code == 0, result.output
    rows = _rows(result.output)
    stages = ["down_projection+eva.pos_embed", "eva.blocks.0", "eva.blocks.1+eva.norm"]
    assert [s for s, r in rows.items() if r[0] == "encoder"] == stages
    assert all(rows[s][3] == "yes" for s in stages) and rows["head"][3] == "no"
    assert rows[stages[0]][4] == "frozen" and rows["head"][4] == "trainable"
    assert "adapted: eva.pos_embed: positional embedding interpolated from 20 × 20 × 20 to " \
        "12 × 12 × 8 tokens" in result.output  # fmt: skip
    assert "training would accept these weights" in result.output
