"""Tests for the pretrained-weight formats (medtl.models.weights) and their loading
(medtl.models.transfer.load_pretrained).

Every checkpoint is written by the test (``weight_layouts.py``), in the published key
layout, with random weights: nothing is downloaded.
"""

from __future__ import annotations

import json
import pathlib
import pickle
import re
from pathlib import Path

import pytest
import torch

from medtl.config import ModelConfig
from medtl.models.networks import build_network, encoder_state_keys, get_architecture
from medtl.models.nnunet_networks import canonical_state
from medtl.models.transfer import LoadReport, WeightsError, load_encoder, load_pretrained
from medtl.models.weights import FORMATS, read_weights
from tests.models.weight_layouts import (
    medicalnet_checkpoint,
    nnunet_checkpoint,
    nnunet_plans,
    swin_ssl_checkpoint,
)

SWIN = ModelConfig(name="swinunetr", features=(12,))
RESNET10 = ModelConfig(name="flexibleunet", backbone="resnet10")
RESNET18 = ModelConfig(name="flexibleunet", backbone="resnet18")
PLAIN = ModelConfig(name="plainconvunet", features=(4, 8, 16))
BASIC = ModelConfig(features=(4, 4, 8, 8, 16, 4))


def _net(cfg: ModelConfig, in_channels: int = 1, out_channels: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    return build_network(cfg, in_channels, out_channels)


def _snapshot(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items()}


def _assert_encoder_copied(
    target: torch.nn.Module, expected: dict[str, torch.Tensor], before: dict, arch_name: str
) -> None:
    """Encoder tensors equal ``expected``; decoder and head unchanged from ``before``."""
    arch = get_architecture(arch_name)
    for key, value in canonical_state(target).items():  # decoder.encoder.* is the encoder
        if arch.part_of(key) == "encoder":
            assert torch.equal(value, expected[key]), key
        else:
            assert torch.equal(value, before[key]), key


# --------------------------------------------------------------- published layouts


def _bundle(folder: Path, net: torch.nn.Module, marker: Path) -> Path:
    """A MONAI bundle whose config holds an expression that would create ``marker`` if run."""
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    config = {
        "imports": ["$import pathlib"],
        "touch": f"$pathlib.Path({str(marker)!r}).touch()",
        "network_def": {"_target_": "BasicUNet", "spatial_dims": 3},
    }
    (folder / "configs" / "inference.json").write_text(json.dumps(config))
    (folder / "configs" / "metadata.json").write_text("{}")
    state = {f"network.{k}": v.clone() for k, v in net.state_dict().items()}
    torch.save(state, folder / "models" / "model.pt")
    return folder


# --------------------------------------------------------------- Swin UNETR (self-supervised)


def test_swin_ssl_weights_load_into_swinunetr(tmp_path: Path) -> None:
    source = _net(SWIN, seed=1)
    path = swin_ssl_checkpoint(tmp_path / "model_swinvit.pt", source)
    raw = torch.load(path, weights_only=True)["state_dict"]
    assert "module.patch_embed.proj.weight" in raw
    assert "module.layers1.0.blocks.0.mlp.fc1.weight" in raw
    # the layout is the one MONAI's own SwinUNETR.load_from reads
    from monai.networks.nets import SwinUNETR

    torch.manual_seed(5)
    reference = SwinUNETR(in_channels=1, out_channels=2, feature_size=12)
    reference.load_from({"state_dict": raw})

    target = _net(SWIN, out_channels=3, seed=2)
    before = _snapshot(target)
    report = load_pretrained(target, get_architecture("swinunetr"), path)
    assert report.format == "swinunetr_ssl"
    assert len(report.loaded) == 126  # patch embedding 2 + 8 blocks × 14 + 4 merges × 3
    assert sorted(report.loaded) == sorted(
        encoder_state_keys(target, get_architecture("swinunetr"))
    )
    assert (len(report.missing), len(report.unexpected), len(report.shape_mismatch)) == (0, 0, 0)
    assert report.dropped == [] and report.adapted == []
    assert report.fraction_loaded == 1.0
    assert report.encoder_params_loaded == report.encoder_params_total == 694_998
    _assert_encoder_copied(target, source.state_dict(), before, "swinunetr")
    for key, value in reference.state_dict().items():
        if key.startswith("swinViT."):
            assert torch.equal(target.state_dict()[key], value), key


def test_swin_disruptive_autoencoder_layout(tmp_path: Path) -> None:
    """MONAI's filter_swinunetr layout: encoder.layersN.0.0.blocks…, plus mask token and head."""
    source = _net(SWIN, seed=3)
    state = {}
    for key, value in source.state_dict().items():
        if key.startswith("swinViT."):
            rest = key.removeprefix("swinViT.")
            if rest.startswith("layers"):
                stage, rest = rest.split(".0.", 1)
                rest = f"{stage}.0.0.{rest}"
            state[f"encoder.{rest}"] = value
    state["encoder.mask_token"] = torch.zeros(1, 1, 12)
    state["encoder.norm.weight"] = torch.ones(192)
    state["encoder.norm.bias"] = torch.zeros(192)
    state["out.conv.conv.weight"] = torch.randn(1, 12, 1, 1, 1)
    state["out.conv.conv.bias"] = torch.randn(1)
    path = tmp_path / "ssl_pretrained_weights.pth"
    torch.save({"model": state}, path)
    target = _net(SWIN, seed=4)
    before = _snapshot(target)
    report = load_pretrained(target, get_architecture("swinunetr"), path)
    assert report.format == "swinunetr_ssl"
    assert (len(report.loaded), len(report.missing)) == (126, 0)
    # MONAI's Swin transformer has no final norm: honestly unexpected, not silently lost
    assert sorted(report.unexpected) == ["swinViT.norm.bias", "swinViT.norm.weight"]
    assert sorted(report.dropped) == [
        "encoder.mask_token",
        "out.conv.conv.bias",
        "out.conv.conv.weight",
    ]
    _assert_encoder_copied(target, source.state_dict(), before, "swinunetr")


def test_swin_other_feature_size_refused_with_suggestion(tmp_path: Path) -> None:
    path = swin_ssl_checkpoint(
        tmp_path / "model_swinvit.pt", _net(ModelConfig(name="swinunetr", features=(24,)))
    )
    target = _net(SWIN)
    before = _snapshot(target)
    with pytest.raises(WeightsError) as info:
        load_pretrained(target, get_architecture("swinunetr"), path)
    msg = str(info.value)
    assert (
        "swinViT.patch_embed.proj.weight: checkpoint [24, 1, 2, 2, 2], model [12, 1, 2, 2, 2]"
        in msg
    )
    assert "set model.features[0] to 24" in msg
    assert "swinunetr_ssl" in msg and "min_loaded_fraction" in msg
    for key, value in target.state_dict().items():
        assert torch.equal(value, before[key]), key


# --------------------------------------------------------------- MedicalNet


def test_medicalnet_resnet10_loads_into_flexibleunet(tmp_path: Path) -> None:
    source = _net(RESNET10, seed=1)
    path = medicalnet_checkpoint(tmp_path / "resnet_10_23dataset.pth", source)
    raw = torch.load(path, weights_only=True)["state_dict"]
    assert {
        "module.conv1.weight",
        "module.bn1.running_mean",
        "module.layer2.0.downsample.0.weight",
    } <= set(raw)
    # MONAI's MedicalNet loader would accept the same file (strict, after removing module.)
    from monai.networks.nets import resnet10

    reference = resnet10(
        pretrained=False,
        n_input_channels=1,
        feed_forward=False,
        shortcut_type="B",
        bias_downsample=False,
        conv1_t_stride=2,
    )
    reference.load_state_dict({k.removeprefix("module."): v for k, v in raw.items()}, strict=True)

    arch = get_architecture("flexibleunet")
    target = _net(RESNET10, out_channels=3, seed=2)
    before = _snapshot(target)
    report = load_encoder(target, arch, path)
    assert report.format == "medicalnet"
    assert len(report.loaded) == 72
    assert sorted(report.loaded) == sorted(encoder_state_keys(target, arch))
    assert (len(report.missing), len(report.unexpected), len(report.shape_mismatch)) == (0, 0, 0)
    assert report.dropped == []
    assert report.encoder_params_loaded == report.encoder_params_total == 14_355_520
    assert any("dilation" in note for note in report.notes)  # the honest stem/stride caveat
    _assert_encoder_copied(target, source.state_dict(), before, "flexibleunet")


def test_medicalnet_other_backbone_refused_with_suggestion(tmp_path: Path) -> None:
    path = medicalnet_checkpoint(tmp_path / "resnet_10.pth", _net(RESNET10, seed=1))
    target = _net(ModelConfig(name="flexibleunet", backbone="resnet18"), seed=3)
    with pytest.raises(WeightsError) as info:
        load_pretrained(target, get_architecture("flexibleunet"), path)
    msg = str(info.value)
    assert (
        "looks like a resnet10 (1, 1, 1, 1 basic blocks in layer1-4), the model's backbone is "
        "resnet18 (2, 2, 2, 2 basic blocks in layer1-4): set model.backbone: resnet10"
    ) in msg
    assert "18 unexpected" in msg  # resnet10's shortcut-B downsample convolutions
    assert "encoder.layer2.0.downsample.0.weight" in msg


def test_resnet18_weights_refused_for_a_resnet10_backbone(tmp_path: Path) -> None:
    """Its first blocks match a ResNet-10 by name: 98.8 % "loaded", half the file unused."""
    source = _net(RESNET18, seed=1)
    path = medicalnet_checkpoint(tmp_path / "resnet_18_23dataset.pth", source)
    arch = get_architecture("flexibleunet")
    target = _net(RESNET10, seed=2)
    before = _snapshot(target)
    with pytest.raises(WeightsError) as info:
        load_pretrained(target, arch, path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: refused: 48 of the 102 encoder tensors of this medicalnet")
    assert (
        "looks like a resnet18 (2, 2, 2, 2 basic blocks in layer1-4), the model's backbone is "
        "resnet10 (1, 1, 1, 1 basic blocks in layer1-4): set model.backbone: resnet18"
    ) in msg
    assert "18 missing, 48 unexpected, 0 of other shape: " in msg
    assert "pretrain.max_unused_fraction" in msg
    for key, value in target.state_dict().items():
        assert torch.equal(value, before[key]), key

    # allowed explicitly, it loads what fits, and the counts cover both whole encoders
    report = load_pretrained(target, arch, path, max_unused_fraction=1.0)
    ckpt = {k: v for k, v in source.state_dict().items() if k.startswith("encoder.")}
    second_blocks = {k for k in ckpt if re.match(r"encoder\.layer[1-4]\.1\.", k)}
    downsample = {k for k in target.state_dict() if ".downsample." in k}
    assert sorted(report.unexpected) == sorted(second_blocks) and len(second_blocks) == 48
    assert sorted(report.missing) == sorted(downsample) and len(downsample) == 18
    counts = (report.target_tensors, report.checkpoint_tensors, report.unused_tensors)
    assert counts == (72, 102, 48)
    assert report.checkpoint_values_total == sum(v.numel() for v in ckpt.values())
    assert report.checkpoint_values_unused == sum(ckpt[k].numel() for k in second_blocks)
    assert report.fraction_unused > 0.5  # the second blocks hold most of a ResNet-18
    assert 0.9 < report.fraction_loaded < 1.0  # what let it through before
    assert report.summary().startswith(
        f"{path} (medicalnet): loaded 54 of 72 encoder tensors of the model"
    )
    assert "48 of 102 encoder tensors of the checkpoint unused" in report.summary()
    assert report.to_dict()["unused_tensors"] == 48


def test_encoder_stage_left_random_below_loaded_ones_is_refused(tmp_path: Path) -> None:
    source = _net(BASIC, seed=1)
    path = tmp_path / "no_stem.pt"
    torch.save({k: v for k, v in source.state_dict().items() if not k.startswith("conv_0.")}, path)
    arch = get_architecture("basicunet")
    with pytest.raises(WeightsError) as info:
        load_pretrained(_net(BASIC, seed=2), arch, path)
    msg = str(info.value)
    assert "encoder stage conv_0 would get nothing from this checkpoint" in msg
    assert "of the encoder's parameters could be loaded" not in msg  # enough by share
    assert "min_loaded_fraction: 0" in msg
    report = load_pretrained(_net(BASIC, seed=2), arch, path, min_fraction=0.0)
    assert report.fraction_loaded > 0.9 and report.skipped_stages == ["conv_0"]
    assert [s["loaded"] for s in report.stages][:2] == [0, report.stages[1]["tensors"]]


def test_medicalnet_into_other_architecture_suggests_name(tmp_path: Path) -> None:
    path = medicalnet_checkpoint(tmp_path / "resnet_10.pth", _net(RESNET10, seed=1))
    with pytest.raises(WeightsError) as info:
        load_pretrained(_net(BASIC), get_architecture("basicunet"), path)
    assert "set model.name: flexibleunet and model.backbone: resnet10" in str(info.value)


# --------------------------------------------------------------- MONAI bundle


def test_monai_bundle_loads_encoder_without_running_its_config(tmp_path: Path) -> None:
    marker = tmp_path / "config_code_ran"
    source = _net(BASIC, out_channels=4, seed=1)
    folder = _bundle(tmp_path / "spleen_bundle", source, marker)
    arch = get_architecture("basicunet")
    target = _net(BASIC, seed=2)
    before = _snapshot(target)
    report = load_pretrained(target, arch, folder)
    assert not marker.exists()
    assert report.format == "monai_bundle"
    assert len(report.loaded) == 40
    assert sorted(report.loaded) == sorted(encoder_state_keys(target, arch))
    assert (len(report.missing), len(report.unexpected), len(report.shape_mismatch)) == (0, 0, 0)
    assert len(report.dropped) == 42  # decoder (upcat_*) and head (final_conv)
    assert {"final_conv.weight", "final_conv.bias"} <= set(report.dropped)
    assert any("'network.'" in note for note in report.notes)
    _assert_encoder_copied(target, source.state_dict(), before, "basicunet")


def test_monai_bundle_other_features_refused(tmp_path: Path) -> None:
    folder = _bundle(
        tmp_path / "b", _net(ModelConfig(features=(8, 8, 16, 16, 32, 8))), tmp_path / "m"
    )
    with pytest.raises(WeightsError) as info:
        load_pretrained(_net(BASIC), get_architecture("basicunet"), folder)
    msg = str(info.value)
    assert "conv_0.conv_0.conv.weight: checkpoint [8, 1, 3, 3, 3], model [4, 1, 3, 3, 3]" in msg
    assert "set model.features[0] to 8" in msg


def test_folder_that_is_not_a_bundle(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    with pytest.raises(WeightsError, match=r"configs/inference.json.*found \['models/'\]"):
        read_weights(tmp_path)


# --------------------------------------------------------------- nnU-Net v2


def test_nnunet_checkpoint_loads_into_plainconvunet(tmp_path: Path) -> None:
    source = _net(PLAIN, out_channels=3, seed=1)
    path = nnunet_checkpoint(tmp_path / "checkpoint_final.pth", source)
    # the file really holds numpy scalars, which plain weights_only loading refuses
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    arch = get_architecture("plainconvunet")
    target = _net(PLAIN, out_channels=2, seed=2)
    before = _snapshot(target)
    report = load_pretrained(target, arch, path)
    assert report.format == "nnunet"
    assert len(report.loaded) == 24 and report.fraction_loaded == 1.0
    assert sorted(report.loaded) == sorted(encoder_state_keys(target, arch))
    assert (len(report.missing), len(report.unexpected), len(report.shape_mismatch)) == (0, 0, 0)
    # decoder: 2 transposed convs + 2 stages × 2 convs × 4 tensors; heads: 2 seg layers
    assert len(report.dropped) == 4 + 16 + 4
    assert {f"decoder.seg_layers.{s}.{p}" for s in (0, 1) for p in ("weight", "bias")} <= set(
        report.dropped
    )
    # DNA's aliases: all_modules (24 encoder + 16 decoder) and decoder.encoder (24 + 24)
    assert any("ignored 88 alias keys" in note for note in report.notes)
    assert any("nnUNetTrainer" in note and "3d_fullres" in note for note in report.notes)
    _assert_encoder_copied(target, source.state_dict(), before, "plainconvunet")


def test_nnunet_checkpoint_without_plans(tmp_path: Path) -> None:
    """Plans come from the file, else from plans.json in the trainer folder above fold_N."""
    trainer = tmp_path / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (trainer / "fold_0").mkdir(parents=True)
    path = nnunet_checkpoint(trainer / "fold_0" / "checkpoint_final.pth", _net(PLAIN), plans=None)
    with pytest.raises(WeightsError) as info:
        read_weights(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: is an nnU-Net checkpoint without its plans")
    assert "How to fix: put the plans.json nnU-Net wrote" in msg
    (trainer / "plans.json").write_text(json.dumps(nnunet_plans(3)))
    weights = read_weights(path)
    assert any(
        "plans.json), configuration 3d_fullres: PlainConvUNet, 3 stages, 3×3×3 kernels, "
        "strides 1, 2, 2; 2 convolutions per stage" in note
        for note in weights.notes
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]]}, "its strides are [[1, 1, 1], [1, 2, 2]"),
        ({"kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3]]}, "its kernel sizes are [[1, 3, 3]"),
        ({"n_conv_per_stage": [1, 3, 4]}, "[1, 3, 4] convolutions per stage"),
    ],
)
def test_nnunet_plans_of_another_network_refused(tmp_path: Path, change: dict, expected: str):
    plans = nnunet_plans(3)
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"].update(change)
    path = nnunet_checkpoint(tmp_path / "checkpoint_final.pth", _net(PLAIN), plans=plans)
    with pytest.raises(WeightsError) as info:
        load_pretrained(_net(PLAIN), get_architecture("plainconvunet"), path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: the nnU-Net plans (the checkpoint's init_args) describe")
    assert expected in msg and "How to fix" in msg


def test_nnunet_older_plans_layout_and_residual_encoder(tmp_path: Path) -> None:
    old = {
        "configurations": {
            "3d_fullres": {
                "UNet_class_name": "PlainConvUNet",
                "conv_kernel_sizes": [[3, 3, 3]] * 3,
                "pool_op_kernel_sizes": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
                "n_conv_per_stage_encoder": [2, 2, 2],
            }
        }
    }
    path = nnunet_checkpoint(tmp_path / "old.pth", _net(PLAIN), plans=old)
    assert read_weights(path).format == "nnunet"
    primus = nnunet_plans(3)
    arch = primus["configurations"]["3d_fullres"]["architecture"]
    arch["network_class_name"] = "dynamic_network_architectures.architectures.primus.Primus"
    path = nnunet_checkpoint(tmp_path / "primus.pth", _net(PLAIN), plans=primus)
    with pytest.raises(WeightsError, match="its network is a Primus; medtl builds nnU-Net's"):
        read_weights(path)


def test_nnunet_other_widths_refused_with_suggestion(tmp_path: Path) -> None:
    wide = ModelConfig(name="plainconvunet", features=(8, 16, 32))
    path = nnunet_checkpoint(tmp_path / "checkpoint_final.pth", _net(wide))
    with pytest.raises(WeightsError) as info:
        load_pretrained(_net(PLAIN), get_architecture("plainconvunet"), path)
    msg = str(info.value)
    assert (
        "encoder.stages.0.0.convs.0.conv.weight: checkpoint [8, 1, 3, 3, 3], model [4, 1, 3, 3, 3]"
        in msg
    )
    assert "set model.features to [8, 16, 32]" in msg


# --------------------------------------------------------------- medtl and safetensors


def test_medtl_checkpoint_and_safetensors(tmp_path: Path) -> None:
    st = pytest.importorskip("safetensors.torch")
    arch = get_architecture("plainconvunet")
    source = _net(PLAIN, out_channels=3, seed=1)
    medtl_path = tmp_path / "best.pt"
    torch.save({"format": "medtl", "state_dict": source.state_dict(), "step": 3}, medtl_path)
    st_path = tmp_path / "weights.safetensors"
    # safetensors refuses tensors saved twice: the file holds each once (DNA's aliases out)
    st.save_file({k: v.contiguous() for k, v in canonical_state(source).items()}, str(st_path))
    for path, fmt in ((medtl_path, "medtl"), (st_path, "safetensors")):
        target = _net(PLAIN, seed=2)
        before = _snapshot(target)
        report = load_pretrained(target, arch, path)
        assert report.format == fmt
        assert (len(report.loaded), len(report.missing), len(report.unexpected)) == (24, 0, 0)
        assert len(report.dropped) == 4 + 16 + 4  # decoder and the two segmentation layers
        assert "decoder.seg_layers.1.weight" in report.dropped
        _assert_encoder_copied(target, source.state_dict(), before, "plainconvunet")


# --------------------------------------------------------------- input channels


@pytest.mark.parametrize(("have", "want", "how"), [(1, 3, "repeat/N"), (3, 1, "mean")])
def test_stem_adapted_to_input_channels(tmp_path: Path, have: int, want: int, how: str) -> None:
    arch = get_architecture("basicunet")
    source = _net(BASIC, in_channels=have, seed=1)
    path = tmp_path / "pre.pt"
    torch.save(source.state_dict(), path)
    target = _net(BASIC, in_channels=want, seed=2)
    report = load_pretrained(target, arch, path)
    stem = "conv_0.conv_0.conv.weight"
    assert report.adapted == [{"key": stem, "from": have, "to": want, "how": how}]
    assert stem in report.loaded and report.fraction_loaded == 1.0
    weight = source.state_dict()[stem]
    expected = (
        weight.repeat(1, 3, 1, 1, 1) / 3 if how == "repeat/N" else weight.mean(1, keepdim=True)
    )
    assert torch.allclose(target.state_dict()[stem], expected)
    assert report.to_dict()["adapted"][0]["how"] == how


def test_stem_adaptation_can_be_switched_off(tmp_path: Path) -> None:
    path = tmp_path / "pre.pt"
    torch.save(_net(BASIC, in_channels=1).state_dict(), path)
    report = load_pretrained(
        _net(BASIC, in_channels=2),
        get_architecture("basicunet"),
        path,
        min_fraction=0.0,
        adapt_channels=False,
    )
    assert report.adapted == []
    assert [m["key"] for m in report.shape_mismatch] == ["conv_0.conv_0.conv.weight"]
    assert any("allow input-channel adaptation" in s for s in report.suggestions)


# --------------------------------------------------------------- detection and errors


def _tiny(*keys: str) -> dict[str, torch.Tensor]:
    """Small random tensors under the given names (detection only reads names)."""
    return {key: torch.randn(2, 1, 3, 3, 3) for key in keys}


_MEDICALNET_KEYS = ("module.conv1.weight", "module.layer1.0.conv1.weight")

_DETECTION_CASES = [
    ("swin.pt", {"state_dict": _tiny("module.patch_embed.proj.weight")}, "swinunetr_ssl"),
    (
        "swin2.pt",
        {"state_dict": _tiny("module.layers1.0.blocks.0.mlp.fc1.weight")},
        "swinunetr_ssl",
    ),
    ("med.pth", {"state_dict": _tiny(*_MEDICALNET_KEYS)}, "medicalnet"),
    (
        "checkpoint_final.pth",
        {
            "network_weights": _tiny("encoder.stages.0.0.convs.0.conv.weight"),
            "trainer_name": "nnUNetTrainer",
            "init_args": {"plans": nnunet_plans(1), "configuration": "3d_fullres"},
        },
        "nnunet",
    ),
    ("own.pt", {"format": "medtl", "state_dict": _tiny("conv_0.conv_0.conv.weight")}, "medtl"),
    ("plain.pt", _tiny("conv_0.conv_0.conv.weight"), "state_dict"),
]


@pytest.mark.parametrize(("name", "obj", "expected"), _DETECTION_CASES)
def test_auto_detects_each_file_format(tmp_path: Path, name: str, obj: dict, expected: str) -> None:
    path = tmp_path / name
    torch.save(obj, path)
    assert read_weights(path).format == expected
    assert read_weights(path, expected).format == expected  # the explicit format is honoured


def test_auto_detects_safetensors_and_bundle(tmp_path: Path) -> None:
    st = pytest.importorskip("safetensors.torch")
    path = tmp_path / "w.safetensors"
    st.save_file(_tiny("a.weight"), str(path))
    assert read_weights(path).format == "safetensors"
    folder = _bundle(tmp_path / "bundle", _net(BASIC), tmp_path / "marker")
    assert read_weights(folder).format == "monai_bundle"
    assert read_weights(folder, "monai_bundle").format == "monai_bundle"


def test_explicit_wrong_format_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "resnet_10.pth"
    torch.save({"state_dict": _tiny(*_MEDICALNET_KEYS)}, path)
    with pytest.raises(WeightsError) as info:
        read_weights(path, "nnunet")
    msg = str(info.value)
    assert "format 'nnunet' expects an nnU-Net v2 checkpoint" in msg
    assert "looks like 'medicalnet'" in msg and "set format: medicalnet" in msg
    with pytest.raises(WeightsError, match="format 'swinunetr_ssl' expects Swin UNETR"):
        read_weights(path, "swinunetr_ssl")
    with pytest.raises(
        WeightsError, match="'monai_bundle' expects a MONAI bundle folder.*found a file"
    ):
        read_weights(path, "monai_bundle")
    with pytest.raises(
        WeightsError, match="format 'medicalnet' expects MedicalNet.*found a folder"
    ):
        read_weights(tmp_path, "medicalnet")
    with pytest.raises(WeightsError, match="expected a .safetensors file"):
        read_weights(path, "safetensors")
    with pytest.raises(WeightsError, match=r"'onnx' is unknown; allowed: auto, medtl"):
        read_weights(path, "onnx")
    assert FORMATS[0] == "auto"


class _Touch:
    """Unpickling this calls ``pathlib.Path.touch(marker)``: code run by merely loading."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    # the payload is real: an ordinary unpickler runs it
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_Touch(proof)))
    assert proof.exists()

    marker = tmp_path / "marker"
    path = tmp_path / "model_swinvit.pt"
    state = {"module.patch_embed.proj.weight": torch.zeros(1)}
    torch.save({"state_dict": state, "x": _Touch(marker)}, path)
    for fmt in ("auto", "swinunetr_ssl"):
        with pytest.raises(WeightsError) as info:
            load_pretrained(_net(BASIC), get_architecture("basicunet"), path, fmt)
        msg = str(info.value)
        assert "refused" in msg and "would import and call" in msg
        assert "weights_only" in msg and "never runs code" in msg
    assert not marker.exists()


def test_report_to_dict_has_format_adapted_and_fraction() -> None:
    report = LoadReport(
        source="x", format="nnunet", encoder_params_total=4, encoder_params_loaded=3
    )
    d = report.to_dict()
    assert d["format"] == "nnunet" and d["adapted"] == [] and d["fraction_loaded"] == 0.75
    json.dumps(d)


def test_check_checkpoint_reads_and_matches_without_training(tmp_path: Path) -> None:
    """The workflow's start-up check: the same report as training, and the same refusal."""
    from medtl.models.transfer import check_checkpoint

    source = _net(BASIC, seed=1)
    path = tmp_path / "pre.pt"
    torch.save(source.state_dict(), path)
    before = path.read_bytes()
    report = check_checkpoint(path, "auto", BASIC, 1, 3)
    trained = load_pretrained(_net(BASIC, out_channels=3), get_architecture("basicunet"), path)
    assert report.to_dict() == trained.to_dict()
    assert report.fraction_loaded == 1.0 and path.read_bytes() == before
    wide = tmp_path / "wide.pt"
    torch.save(_net(ModelConfig(features=(8, 8, 16, 16, 32, 8))).state_dict(), wide)
    with pytest.raises(WeightsError, match=r"wide.pt: refused: only 0%"):
        check_checkpoint(wide, "auto", BASIC, 1, 3)
    report = check_checkpoint(wide, "auto", BASIC, 1, 3, 0.0, 1.0)  # allowed explicitly
    assert report.loaded == [] and report.unused_tensors == report.checkpoint_tensors == 40
    with pytest.raises(WeightsError, match="set format: state_dict"):
        check_checkpoint(path, "medicalnet", BASIC, 1, 3)
