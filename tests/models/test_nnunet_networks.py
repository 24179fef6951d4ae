"""nnU-Net's networks built by dynamic-network-architectures: ``resencunet``, aliases, old
checkpoints and nnU-Net ResEnc checkpoints (medtl.models.nnunet_networks)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from medtl.cli.main import app
from medtl.config import ArmConfig, ModelConfig
from medtl.kernel.errors import ConfigError
from medtl.models.describe import describe_model, trainable_at_start
from medtl.models.networks import (
    build_network,
    check_patch_size,
    count_parameters,
    encoder_state_keys,
    get_architecture,
)
from medtl.models.nnunet_networks import alias_names, canonical_state, resenc_blocks
from medtl.models.nnunet_plans import build_planned, check_plans, network_of
from medtl.models.stages import StrategySpec, encoder_stages
from medtl.models.trained import load_model
from medtl.models.transfer import WeightsError, load_pretrained
from medtl.train.strategies import StageSchedule
from tests.models.weight_layouts import nnunet_checkpoint, nnunet_plans

RESENC = ModelConfig(name="resencunet", features=(4, 8, 16))
PLAIN = ModelConfig(name="plainconvunet", features=(4, 8, 16))
ARCH = get_architecture("resencunet")


def _net(cfg: ModelConfig, out_channels: int = 2, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network(cfg, 1, out_channels)


def test_dna_import_needs_neither_timm_nor_torchvision() -> None:
    _net(RESENC)
    assert "dynamic_network_architectures.architectures.unet" in sys.modules
    assert "timm" not in sys.modules and "torchvision" not in sys.modules


def test_resencunet_is_nnunets_residual_encoder_unet() -> None:
    net = _net(RESENC, out_channels=3).eval()
    assert type(net).__name__ == "ResidualEncoderUNet" and not net.decoder.deep_supervision
    assert [len(stage.blocks) for stage in net.encoder.stages] == [1, 3, 4]
    assert [len(stage.convs) for stage in net.decoder.stages] == [1, 1]  # ResEnc decoder
    stem = net.encoder.stem.convs[0]
    assert stem.conv.stride == (1, 1, 1) and stem.conv.bias is not None and stem.norm.affine
    assert net.encoder.stages[1].blocks[0].conv1.conv.stride == (2, 2, 2)
    with torch.no_grad():
        assert net(torch.zeros(1, 1, 16, 16, 8)).shape == (1, 3, 16, 16, 8)
    state = net.state_dict()
    for key in ARCH.stem_keys:
        assert key == "encoder.stem.convs.0.conv.weight" and state[key].shape == (4, 1, 3, 3, 3)
    parts = {ARCH.part_of(name) for name, _ in net.named_parameters()}
    assert parts == {"encoder", "decoder", "head"}
    counts = count_parameters(net, ARCH)
    assert counts["head"] == 3 * (4 + 1) + 3 * (8 + 1)  # one segmentation layer per decoder stage
    check_patch_size(RESENC, (16, 16, 8))
    with pytest.raises(ConfigError, match="resencunet needs every side to be a multiple of 4"):
        check_patch_size(RESENC, (16, 16, 6))


def test_resenc_preset_shape_and_defaults() -> None:
    """The ResEnc presets' blocks; the default widths are nnU-Net's six stages."""
    assert resenc_blocks(6) == (1, 3, 4, 6, 6, 6) and resenc_blocks(7)[-1] == 6
    net = build_network(ModelConfig(name="resencunet"), 1, 2)
    assert list(net.encoder.output_channels) == [32, 64, 128, 256, 320, 320]
    check_patch_size(ModelConfig(name="resencunet"), (64, 64, 32))


def test_aliases_are_counted_once() -> None:
    net = _net(RESENC)
    aliases = alias_names(net)
    assert aliases["encoder.stem.convs.0.all_modules.0.weight"] == (
        "encoder.stem.convs.0.conv.weight"
    )
    assert aliases["decoder.encoder.stages.2.blocks.3.conv2.norm.bias"] == (
        "encoder.stages.2.blocks.3.conv2.norm.bias"
    )
    canonical = canonical_state(net)
    assert not set(canonical) & set(aliases)
    assert len(canonical) == len({id(v) for v in net.state_dict(keep_vars=True).values()})
    assert set(encoder_state_keys(net, ARCH)) == {k for k in canonical if k.startswith("encoder.")}


def test_resencunet_stages_and_strategies() -> None:
    net = _net(RESENC)
    stages = encoder_stages(net, ARCH)
    assert [s.name for s in stages] == [
        "encoder.stem",
        "encoder.stages.0",
        "encoder.stages.1",
        "encoder.stages.2",
    ]
    arms = {
        "frozen": ArmConfig(init="pretrained", freeze_encoder=True),
        "partial": ArmConfig(init="pretrained", strategy="partial", unfreeze_stages=2),
        "gradual": ArmConfig(init="pretrained", strategy="gradual", unfreeze_every=10),
        "discriminative": ArmConfig(init="pretrained", encoder_lr_scale=0.1),
    }
    df = describe_model(RESENC, 1, 2, arms, network=net)
    assert list(df["stage"]) == [s.name for s in stages] + ["decoder", "head"]
    assert int(df["parameters"].sum()) == sum(p.numel() for p in net.parameters())
    enc = df["part"] == "encoder"
    assert list(df.loc[enc, "partial"]) == ["frozen", "frozen", "trainable", "trainable"]
    assert list(df.loc[enc, "gradual"]) == [f"unfrozen at step {s}" for s in (40, 30, 20, 10)]
    for name, arm in arms.items():
        schedule = StageSchedule(net, ARCH, StrategySpec.from_arm(arm))
        assert trainable_at_start(df, name) == schedule.trainable_parameters(0), name
    schedule = StageSchedule(net, ARCH, StrategySpec.from_arm(arms["partial"]))
    schedule.apply(0)
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert not any(n.startswith(("encoder.stem.", "encoder.stages.0.")) for n in trainable)
    assert any(n.startswith("encoder.stages.2.") for n in trainable)
    spec = StrategySpec.from_arm(arms["discriminative"])
    groups = StageSchedule(net, ARCH, spec).param_groups(lr=0.01)
    assert [(g["name"], g["lr"]) for g in groups] == [("decoder+head", 0.01), ("encoder", 0.001)]
    assert sum(p.numel() for p in groups[1]["params"]) == count_parameters(net, ARCH)["encoder"]


def test_nnunet_resenc_checkpoint_loads_key_for_key(tmp_path: Path) -> None:
    source = _net(RESENC, out_channels=3, seed=1)
    path = nnunet_checkpoint(tmp_path / "checkpoint_final.pth", source)
    target = _net(RESENC, seed=2)
    report = load_pretrained(target, ARCH, path)
    assert report.format == "nnunet" and report.fraction_loaded == 1.0
    assert sorted(report.loaded) == sorted(encoder_state_keys(target, ARCH))
    assert (len(report.missing), len(report.unexpected), len(report.shape_mismatch)) == (0, 0, 0)
    assert all(s["loaded"] == s["tensors"] for s in report.stages)
    assert any(
        "ResidualEncoderUNet, 3 stages" in n and "1, 3, 4 residual blocks" in n
        for n in report.notes
    )
    assert any("model.name: resencunet, model.features: [4, 8, 16]" in n for n in report.notes)
    expected = source.state_dict()
    for key, value in canonical_state(target).items():
        if key.startswith("encoder."):
            assert torch.equal(value, expected[key]), key
    # and the same file refused, with the fix, by a plainconvunet
    with pytest.raises(WeightsError, match="set model.name: resencunet"):
        load_pretrained(_net(PLAIN), get_architecture("plainconvunet"), path)


def test_resenc_plans_build_the_matching_network() -> None:
    plans = nnunet_plans(3, network="ResidualEncoderUNet", features=[4, 8, 16])
    planned = network_of(plans, "3d_fullres", "plans.json")
    net = build_planned(planned, 1, 2)
    assert type(net).__name__ == "ResidualEncoderUNet"
    assert list(net.encoder.output_channels) == [4, 8, 16]
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["n_blocks_per_stage"] = [
        2,
        2,
        2,
    ]
    with pytest.raises(WeightsError, match=r"\[2, 2, 2\] residual blocks per stage"):
        build_planned(network_of(plans, "3d_fullres", "plans.json"), 1, 2)


def test_medtl_checkpoint_with_aliases_loads_as_pretrained(tmp_path: Path) -> None:
    """A medtl best.pt of a DNA network holds the aliases; they are read once."""
    source = _net(RESENC, seed=1)
    path = tmp_path / "best.pt"
    torch.save({"format": "medtl", "state_dict": source.state_dict()}, path)
    report = load_pretrained(_net(RESENC, seed=2), ARCH, path)
    assert report.fraction_loaded == 1.0 and not report.unexpected
    assert any("alias keys" in note for note in report.notes)


def test_old_handwritten_plainconvunet_checkpoint_loads(tmp_path: Path) -> None:
    """best.pt of medtl's hand-written plainconvunet: same first names, no aliases, one head."""
    source = _net(PLAIN, out_channels=3, seed=1)
    old = {
        k: v.clone()
        for k, v in canonical_state(source).items()
        if not k.startswith("decoder.seg_layers.0.")  # it built only the last head
    }
    path = tmp_path / "best.pt"
    model = {"name": "plainconvunet", "features": [4, 8, 16]}
    torch.save({"format": "medtl", "state_dict": old, "model": model, "num_classes": 3}, path)
    loaded, _ = load_model(path, torch.device("cpu"))
    x = torch.randn(1, 1, 16, 16, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), source.eval()(x))


def test_describe_model_command_shows_resenc_stages(tmp_path: Path) -> None:
    source = _net(RESENC, seed=1)
    weights = nnunet_checkpoint(tmp_path / "checkpoint_final.pth", source)
    config = tmp_path / "config.yaml"
    arms = {"partial": {"init": "pretrained", "strategy": "partial", "unfreeze_stages": 1}}
    model = {"name": "resencunet", "features": [4, 8, 16]}
    config.write_text(yaml.safe_dump({"model": model, "classes": {"1": "organ"}, "arms": arms}))
    args = ["describe-model", "--config", str(config), "--pretrained", str(weights)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines() if line.startswith("encoder ")]
    assert [r[1] for r in rows] == [
        "encoder.stem",
        "encoder.stages.0",
        "encoder.stages.1",
        "encoder.stages.2",
    ]
    assert all(r[3] == "yes" for r in rows)
    assert [r[4] for r in rows] == ["frozen", "frozen", "frozen", "trainable"]
    assert "training would accept these weights" in result.output


def test_a_checkpoint_of_no_configuration_its_plans_hold_is_refused(tmp_path: Path) -> None:
    plans = nnunet_plans(3)
    plans["configurations"]["2d"] = dict(plans["configurations"]["3d_fullres"])
    checkpoint = {"init_args": {"plans": plans}}  # no configuration, in no trainer folder
    with pytest.raises(WeightsError, match=r"cannot tell which nnU-Net configuration.*2d"):
        check_plans(checkpoint, tmp_path / "fold_0" / "checkpoint_final.pth")
    checkpoint["init_args"]["configuration"] = "3d_lowres"  # not in the plans
    with pytest.raises(WeightsError, match=r"found '3d_lowres'"):
        check_plans(checkpoint, tmp_path / "fold_0" / "checkpoint_final.pth")
    checkpoint["init_args"]["configuration"] = "3d_fullres"
    assert "PlainConvUNet" in check_plans(checkpoint, tmp_path / "fold_0" / "checkpoint_final.pth")
