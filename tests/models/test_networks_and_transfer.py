"""Tests for the network registry (medtl.models.networks) and encoder transfer
(medtl.models.transfer)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medtl.config import ModelConfig
from medtl.kernel.errors import ConfigError
from medtl.models.networks import (
    build_network,
    check_patch_size,
    count_parameters,
    encoder_state_keys,
    freeze_encoder,
    get_architecture,
    param_groups,
)
from medtl.models.nnunet_networks import canonical_state
from medtl.models.transfer import WeightsError, load_encoder, read_checkpoint

SMALL = ModelConfig(features=(4, 4, 8, 8, 16, 4))
OTHER = ModelConfig(features=(8, 8, 16, 16, 32, 8))
ARCH = get_architecture("basicunet")


def _net(cfg: ModelConfig = SMALL, out_channels: int = 2, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network(cfg, 1, out_channels)


def _medtl_checkpoint(path: Path, net: torch.nn.Module) -> Path:
    torch.save(
        {
            "format": "medtl",
            "state_dict": net.state_dict(),
            "model": {"name": "basicunet", "features": list(SMALL.features)},
            "num_classes": 3,
            "step": 5,
        },
        path,
    )
    return path


class _Custom:
    """A class whose pickle needs code from outside torch (refused by weights_only)."""

    def __init__(self) -> None:
        self.weights = {"conv_0.conv_0.conv.weight": torch.zeros(1)}


# ------------------------------------------------------------------ networks


def test_basicunet_forward_shape() -> None:
    net = _net(out_channels=3)
    with torch.no_grad():
        out = net(torch.zeros(2, 1, 16, 16, 32))
    assert out.shape == (2, 3, 16, 16, 32)


def test_basicunet_needs_six_features() -> None:
    with pytest.raises(ConfigError, match="model.features"):
        build_network(ModelConfig(features=(4, 8, 16)), 1, 2)


def test_unknown_architecture_lists_allowed() -> None:
    with pytest.raises(ConfigError) as info:
        get_architecture("vnet")
    assert "'vnet'" in str(info.value)
    assert "basicunet" in str(info.value) and "flexibleunet" in str(info.value)
    assert "swinunetr" in str(info.value) and "plainconvunet" in str(info.value)


def test_check_patch_size_suggests_fix() -> None:
    check_patch_size(SMALL, (16, 32, 48))  # multiples of 16 pass
    with pytest.raises(ConfigError) as info:
        check_patch_size(SMALL, (20, 32, 8))
    msg = str(info.value)
    assert "[20, 32, 8]" in msg
    assert "multiple of 16" in msg
    assert "[16, 32, 16]" in msg  # the suggested fix
    with pytest.raises(ConfigError, match=r"multiple of 32.*\[32, 64, 32\]"):
        check_patch_size(ModelConfig(name="flexibleunet"), (40, 64, 16))


def test_part_of_classifies_basicunet_parameters() -> None:
    net = _net()
    parts = {name.split(".")[0]: ARCH.part_of(name) for name, _ in net.named_parameters()}
    assert parts == {
        "conv_0": "encoder",
        "down_1": "encoder",
        "down_2": "encoder",
        "down_3": "encoder",
        "down_4": "encoder",
        "upcat_4": "decoder",
        "upcat_3": "decoder",
        "upcat_2": "decoder",
        "upcat_1": "decoder",
        "final_conv": "head",
    }
    counts = count_parameters(net, ARCH)
    assert sum(counts.values()) == sum(p.numel() for p in net.parameters())
    assert all(v > 0 for v in counts.values())


def test_freeze_encoder_exactly_encoder() -> None:
    net = _net()
    n = freeze_encoder(net, ARCH)
    frozen = {name for name, p in net.named_parameters() if not p.requires_grad}
    encoder = {name for name, _ in net.named_parameters() if ARCH.part_of(name) == "encoder"}
    assert frozen == encoder
    assert n == count_parameters(net, ARCH)["encoder"]
    # the frozen encoder gets no gradient, the rest does
    net(torch.randn(1, 1, 16, 16, 32)).sum().backward()
    for name, p in net.named_parameters():
        assert (p.grad is None) == (name in encoder), name


def test_param_groups_scale_encoder_lr() -> None:
    net = _net()
    groups = param_groups(net, ARCH, lr=0.01, encoder_lr_scale=0.2)
    by_name = {g["name"]: g for g in groups}
    assert by_name["encoder"]["lr"] == pytest.approx(0.002)
    assert by_name["decoder+head"]["lr"] == pytest.approx(0.01)
    enc_ids = {id(p) for p in by_name["encoder"]["params"]}
    expected = {id(p) for n, p in net.named_parameters() if ARCH.part_of(n) == "encoder"}
    assert enc_ids == expected
    total = sum(len(g["params"]) for g in groups)
    assert total == len(list(net.parameters()))
    torch.optim.AdamW(groups, lr=0.01)  # usable as is


def test_param_groups_skip_frozen_encoder() -> None:
    net = _net()
    freeze_encoder(net, ARCH)
    groups = param_groups(net, ARCH, lr=0.01, encoder_lr_scale=0.5)
    assert [g["name"] for g in groups] == ["decoder+head"]
    assert all(p.requires_grad for p in groups[0]["params"])


def test_flexibleunet_builds_with_encoder_prefix() -> None:
    cfg = ModelConfig(name="flexibleunet", backbone="resnet10")
    arch = get_architecture("flexibleunet")
    net = build_network(cfg, 1, 3)
    names = [n for n, _ in net.named_parameters()]
    assert any(n.startswith("encoder.") for n in names)
    for n in names:
        assert (arch.part_of(n) == "encoder") == n.startswith("encoder.")
        assert (arch.part_of(n) == "head") == n.startswith("segmentation_head.")
    counts = count_parameters(net, arch)
    assert counts["encoder"] > 0 and counts["decoder"] > 0 and counts["head"] > 0
    assert sum(counts.values()) == sum(p.numel() for p in net.parameters())
    assert all(k.startswith("encoder.") for k in encoder_state_keys(net, arch))
    assert freeze_encoder(net, arch) == counts["encoder"]


# ------------------------------------------------------------------ transfer


def test_load_encoder_from_medtl_checkpoint_with_other_head(tmp_path: Path) -> None:
    source = _net(out_channels=3, seed=1)
    path = _medtl_checkpoint(tmp_path / "pre.pt", source)
    target = _net(out_channels=2, seed=2)
    head_before = {k: v.clone() for k, v in target.state_dict().items() if k.startswith("final")}
    decoder_before = {
        k: v.clone() for k, v in target.state_dict().items() if ARCH.part_of(k) == "decoder"
    }
    report = load_encoder(target, ARCH, path)
    assert report.format == "medtl"
    assert report.fraction_loaded == 1.0
    assert not report.missing and not report.unexpected and not report.shape_mismatch
    assert sorted(report.loaded) == sorted(encoder_state_keys(target, ARCH))
    assert report.encoder_params_total == count_parameters(target, ARCH)["encoder"]
    src, tgt = source.state_dict(), target.state_dict()
    for key in encoder_state_keys(target, ARCH):
        assert torch.equal(tgt[key], src[key]), key
    # the old head and decoder are dropped, not copied
    assert {k for k in src if k.startswith("final_conv.")} <= set(report.dropped)
    assert not any(ARCH.part_of(k) == "encoder" for k in report.dropped)
    for key, value in head_before.items():
        assert torch.equal(tgt[key], value)
    for key, value in decoder_before.items():
        assert torch.equal(tgt[key], value)
    d = report.to_dict()
    assert d["fraction_loaded"] == 1.0 and d["source"] == str(path)


def test_load_encoder_module_prefix_and_state_dict_wrapper(tmp_path: Path) -> None:
    source = _net(seed=3)
    path = tmp_path / "ddp.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    target = _net(seed=4)
    report = load_encoder(target, ARCH, path)
    assert report.format == "state_dict"
    assert report.fraction_loaded == 1.0
    for key in encoder_state_keys(target, ARCH):
        assert torch.equal(target.state_dict()[key], source.state_dict()[key])


def test_load_encoder_plain_state_dict(tmp_path: Path) -> None:
    source = _net(seed=5)
    path = tmp_path / "plain.pt"
    torch.save(source.state_dict(), path)
    state, fmt = read_checkpoint(path)
    assert fmt == "state_dict"
    assert set(state) == set(source.state_dict())
    assert load_encoder(_net(seed=6), ARCH, path).fraction_loaded == 1.0


def test_load_encoder_other_features_refused(tmp_path: Path) -> None:
    path = _medtl_checkpoint(tmp_path / "big.pt", _net(OTHER))
    target = _net(seed=7)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(WeightsError) as info:
        load_encoder(target, ARCH, path)
    msg = str(info.value)
    assert "0%" in msg
    assert "of other shape" in msg
    assert "conv_0.conv_0.conv.weight: checkpoint [8, 1, 3, 3, 3], model [4, 1, 3, 3, 3]" in msg
    assert "model.features" in msg and "model.name" in msg
    assert "min_loaded_fraction" in msg
    # nothing was loaded
    for key, value in target.state_dict().items():
        assert torch.equal(value, before[key])


def test_load_encoder_partial_checkpoint_respects_min_fraction(tmp_path: Path) -> None:
    source = _net(seed=8)
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("down_4.")}
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    with pytest.raises(WeightsError, match="missing"):
        load_encoder(_net(seed=9), ARCH, path, min_fraction=0.99)
    report = load_encoder(_net(seed=9), ARCH, path, min_fraction=0.0)
    assert 0.0 < report.fraction_loaded < 1.0
    assert report.missing and all(k.startswith("down_4.") for k in report.missing)


def test_pickle_needing_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save(_Custom(), path)
    with pytest.raises(WeightsError) as info:
        load_encoder(_net(), ARCH, path)
    assert "weights_only" in str(info.value)
    assert "state_dict" in str(info.value)


def test_non_state_dict_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(WeightsError, match="expected a state dict"):
        read_checkpoint(path)


def test_missing_checkpoint_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found.*pretrain.checkpoint"):
        load_encoder(_net(), ARCH, tmp_path / "nope.pt")


def test_safetensors_checkpoint_loads(tmp_path: Path) -> None:
    st = pytest.importorskip("safetensors.torch")
    source = _net(out_channels=4, seed=10)
    path = tmp_path / "weights.safetensors"
    st.save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    target = _net(seed=11)
    report = load_encoder(target, ARCH, path)
    assert report.format == "safetensors"
    assert report.fraction_loaded == 1.0
    for key in encoder_state_keys(target, ARCH):
        assert torch.equal(target.state_dict()[key], source.state_dict()[key])


def test_plainconvunet_patch_multiple_follows_its_stages() -> None:
    # four stages halve the patch three times: multiples of 8, as nnU-Net's plans use
    four = ModelConfig(name="plainconvunet", features=(8, 16, 32, 64))
    check_patch_size(four, (48, 48, 24))
    net = build_network(four, 1, 2)
    assert net(torch.zeros(1, 1, 48, 48, 24)).shape == (1, 2, 48, 48, 24)
    with pytest.raises(ConfigError, match=r"multiple of 8.*\[48, 48, 16\]"):
        check_patch_size(four, (48, 48, 20))
    # the default six stages need multiples of 32
    with pytest.raises(ConfigError, match="multiple of 32"):
        check_patch_size(ModelConfig(name="plainconvunet"), (48, 48, 24))


def test_check_patch_size_refuses_single_voxel_bottleneck() -> None:
    with pytest.raises(ConfigError, match="32"):
        check_patch_size(SMALL, (16, 16, 16))
    check_patch_size(SMALL, (16, 16, 32))


# ------------------------------------------------------------------ swinunetr, plainconvunet


def test_stem_keys_exist_in_every_architecture() -> None:
    configs = {
        "basicunet": SMALL,
        "flexibleunet": ModelConfig(name="flexibleunet", backbone="resnet10"),
        "swinunetr": ModelConfig(name="swinunetr", features=(12,)),
        "plainconvunet": ModelConfig(name="plainconvunet", features=(4, 8)),
        "resencunet": ModelConfig(name="resencunet", features=(4, 8)),
    }
    for name, cfg in configs.items():
        arch = get_architecture(name)
        state = build_network(cfg, 2, 3).state_dict()
        assert arch.stem_keys, name
        for key in arch.stem_keys:
            assert arch.part_of(key) == "encoder", key
            assert state[key].shape[1] == 2, key  # the axis that holds the input channels


def test_swinunetr_encoder_is_the_swin_transformer() -> None:
    arch = get_architecture("swinunetr")
    net = build_network(ModelConfig(name="swinunetr", features=(12,)), 1, 3)
    assert net.swinViT.patch_embed.proj.out_channels == 12
    parts = {name.split(".")[0]: arch.part_of(name) for name, _ in net.named_parameters()}
    assert parts["swinViT"] == "encoder" and parts["out"] == "head"
    assert {k for k, v in parts.items() if v == "encoder"} == {"swinViT"}
    assert parts["encoder1"] == "decoder"  # not covered by the self-supervised weights
    counts = count_parameters(net, arch)
    assert counts["encoder"] == 694_998 and counts["head"] == 3 * 12 + 3
    check_patch_size(ModelConfig(name="swinunetr"), (64, 64, 32))
    with pytest.raises(ConfigError, match="multiple of 32"):
        check_patch_size(ModelConfig(name="swinunetr"), (48, 64, 32))


def test_swinunetr_feature_size_checked() -> None:
    with pytest.raises(ConfigError, match=r"model.features.*got 16.*multiple of 12"):
        build_network(ModelConfig(name="swinunetr", features=(16, 32)), 1, 2)


def test_swinunetr_forward() -> None:
    pytest.importorskip("einops")  # MONAI's Swin transformer rearranges with einops
    # 64 voxels a side: SwinUNETR instance-normalises its 1/32-scale features (2 voxels).
    net = build_network(ModelConfig(name="swinunetr", features=(12,)), 1, 2).eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 1, 64, 64, 64)).shape == (1, 2, 64, 64, 64)


def test_plainconvunet_is_nnunets_plainconvunet() -> None:
    """Built by dynamic-network-architectures with nnU-Net's 3d_fullres settings."""
    arch = get_architecture("plainconvunet")
    net = build_network(ModelConfig(name="plainconvunet", features=(4, 8, 16)), 1, 3).eval()
    assert type(net).__module__ == "dynamic_network_architectures.architectures.unet"
    assert type(net).__name__ == "PlainConvUNet" and not net.decoder.deep_supervision
    state = canonical_state(net)
    assert "encoder.stages.0.0.convs.0.conv.weight" in state
    assert "encoder.stages.2.0.convs.1.norm.bias" in state
    assert "decoder.transpconvs.0.weight" in state and "decoder.stages.1.convs.1.conv.bias" in state
    # DNA builds a segmentation layer per decoder stage; the last one is the output
    assert [k for k in state if k.startswith("decoder.seg_layers.")] == [
        f"decoder.seg_layers.{s}.{p}" for s in (0, 1) for p in ("weight", "bias")
    ]
    assert not any("all_modules" in k or k.startswith("decoder.encoder.") for k in state)
    assert "decoder.encoder.stages.0.0.convs.0.all_modules.0.weight" in net.state_dict()
    assert state["encoder.stages.1.0.convs.0.conv.weight"].shape == (8, 4, 3, 3, 3)
    block = net.encoder.stages[1][0].convs[0]
    assert block.conv.stride == (2, 2, 2) and net.encoder.stages[0][0].convs[0].conv.stride == (
        1,
        1,
        1,
    )
    assert block.conv.bias is not None and block.norm.affine and block.norm.eps == 1e-5
    assert isinstance(block.norm, torch.nn.InstanceNorm3d) and block.nonlin.inplace
    assert block.nonlin.negative_slope == 0.01
    assert [len(s.convs) for s in net.decoder.stages] == [2, 2]  # nnU-Net's decoder: 2 convs
    for name, _ in net.named_parameters():
        part = arch.part_of(name)
        assert (part == "encoder") == name.startswith("encoder.")
        assert (part == "head") == name.startswith("decoder.seg_layers.")
    with torch.no_grad():
        assert net(torch.zeros(1, 1, 16, 16, 8)).shape == (1, 3, 16, 16, 8)


def test_plainconvunet_features_checked() -> None:
    with pytest.raises(ConfigError, match="plainconvunet needs 2 to 7 positive stage widths"):
        build_network(ModelConfig(name="plainconvunet", features=(4,)), 1, 2)
    with pytest.raises(ConfigError, match="resencunet needs 2 to 7"):
        build_network(ModelConfig(name="resencunet", features=(4,) * 8), 1, 2)
