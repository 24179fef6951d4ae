"""nnssl (OpenMind) self-supervised checkpoints as pretrained encoders (format ``nnssl``).

Checkpoints are built in the published layout (tests/models/weight_layouts.py) with
random weights: tiny ResidualEncoderUNets where the plan can say so, and nnssl's ResEnc-L
preset at full size for its key and parameter counts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medtl.config import ModelConfig
from medtl.models.networks import build_network, get_architecture
from medtl.models.nnssl_plan import RESENC_L_BLOCKS, RESENC_L_FEATURES, read_adaptation_plan
from medtl.models.nnunet_networks import canonical_state, residual_encoder_unet
from medtl.models.transfer import (
    WeightsError,
    check_checkpoint,
    load_pretrained,
    plan_transfer,
    refuse_mismatch,
)
from medtl.models.weight_formats import from_nnssl
from medtl.models.weights import Weights, read_weights
from tests.models.weight_layouts import (
    nnssl_adaptation_plan,
    nnssl_checkpoint,
    nnssl_checkpoint_dict,
    nnssl_resenc_kwargs,
    nnunet_checkpoint,
)

FEATURES = [4, 8, 16]
RESENC = ModelConfig(name="resencunet", features=tuple(FEATURES))
ARCH = get_architecture("resencunet")


def _pretraining_net(features: list[int] = FEATURES, seed: int = 0) -> torch.nn.Module:
    """The network nnssl pretrains: a ResEnc whose head reconstructs the 1-channel image."""
    torch.manual_seed(seed)
    return residual_encoder_unet(1, 1, features)


def _tiny_plan(**kwargs) -> dict:
    return nnssl_adaptation_plan("ResidualEncoderUNet", nnssl_resenc_kwargs(FEATURES, **kwargs))


def _checkpoint(tmp_path: Path, **kwargs) -> tuple[Path, torch.nn.Module]:
    source = _pretraining_net()
    return nnssl_checkpoint(tmp_path / "ckpt", source, _tiny_plan(), **kwargs), source


def _encoder_keys(net: torch.nn.Module) -> list[str]:
    return [k for k in canonical_state(net) if ARCH.part_of(k) == "encoder"]


def test_published_file_holds_exactly_the_four_entries(tmp_path: Path) -> None:
    path, _ = _checkpoint(tmp_path)
    stored = torch.load(path, weights_only=True)
    assert set(stored) == {"network_weights", "init_args", "trainer_name", "nnssl_adaptation_plan"}
    beside = json.loads((path.parent / "adaptation_plan.json").read_text())
    assert beside["trainer_name"] == stored["trainer_name"]
    assert any(".all_modules." in k for k in stored["network_weights"])
    assert any(k.startswith("decoder.encoder.") for k in stored["network_weights"])


def test_plan_is_read_into_a_typed_record(tmp_path: Path) -> None:
    path, _ = _checkpoint(tmp_path)
    raw = torch.load(path, weights_only=True)["nnssl_adaptation_plan"]
    plan = read_adaptation_plan(raw, "here")
    assert plan.architecture == "ResidualEncoderUNet" and plan.configuration == "onemmiso"
    assert plan.pretrain_patch_size == (160, 160, 160) and plan.pretrain_spacing == (1, 1, 1)
    assert plan.normalization == ("ZScoreNormalization",) and plan.spacing_style == "onemmiso"
    assert plan.input_channels == 1 and plan.recommended_patch_size == (160, 160, 160)
    assert (plan.key_to_encoder, plan.key_to_stem) == ("encoder.stages", "encoder.stem")
    assert plan.keys_to_in_proj[0] == "encoder.stem.convs.0.conv" and plan.key_to_lpe is None


def test_whole_encoder_loads_and_the_mae_decoder_is_skipped(tmp_path: Path) -> None:
    path, source = _checkpoint(tmp_path)
    torch.manual_seed(7)
    net = build_network(RESENC, 1, 3)
    report = load_pretrained(net, ARCH, path)
    assert report.format == "nnssl" and report.fraction_loaded == 1.0
    encoder = _encoder_keys(net)
    assert sorted(report.loaded) == sorted(encoder) and not report.missing
    assert report.unused_tensors == 0 and report.adapted == [] and report.conflict == ""
    mine, theirs = net.state_dict(), source.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in encoder)
    # the MAE decoder and its reconstruction head: counted, never loaded
    decoder = [k for k in canonical_state(source) if ARCH.part_of(k) == "decoder"]
    head = [k for k in canonical_state(source) if ARCH.part_of(k) == "head"]
    assert sorted(report.dropped) == sorted(decoder + head)
    parts = {p["part"]: p for p in report.not_transferred}
    assert parts["decoder"]["tensors"] == len(decoder) and parts["head"]["tensors"] == len(head)
    assert "not a segmentation decoder" in parts["decoder"]["why"]
    assert any(line.startswith("decoder: ") for line in report.adaptations)
    assert not torch.equal(mine["decoder.stages.0.convs.0.conv.weight"],
                           theirs["decoder.stages.0.convs.0.conv.weight"])  # fmt: skip
    note = next(n for n in report.notes if n.startswith("nnssl adaptation plan"))
    assert "model.name: resencunet, model.features: [4, 8, 16]" in note
    assert "spacing [1.0, 1.0, 1.0] (onemmiso)" in note and "ZScoreNormalization" in note


def test_stem_is_repeated_over_two_channels_as_nnunet_does(tmp_path: Path) -> None:
    """nnU-Net's PretrainedTrainer repeats the stem over N channels and divides by N. By
    linearity the first convolution of a 2-channel input x then equals the 1-channel
    network's on the mean image (x0 + x1) / 2 (the bias is added once in both)."""
    path, source = _checkpoint(tmp_path)
    net = build_network(RESENC, 2, 3)
    report = load_pretrained(net, ARCH, path)
    assert report.fraction_loaded == 1.0
    assert report.adapted == [
        {"key": "encoder.stem.convs.0.conv.weight", "from": 1, "to": 2, "how": "repeat/N"}
    ]
    assert report.adaptations[0].startswith(
        "encoder.stem.convs.0.conv.weight: input channels 1 → 2"
    )
    x = torch.randn(1, 2, 8, 8, 8)
    with torch.no_grad():
        two = net.encoder.stem.convs[0].conv(x)
        one = source.encoder.stem.convs[0].conv(x.mean(dim=1, keepdim=True))
    torch.testing.assert_close(two, one, rtol=1e-5, atol=1e-6)


def test_plan_beside_the_file_when_absent_inside(tmp_path: Path) -> None:
    path, _ = _checkpoint(tmp_path, inside=False)
    assert "nnssl_adaptation_plan" not in torch.load(path, weights_only=True)
    weights = read_weights(path)  # auto: network_weights + adaptation_plan.json beside
    assert weights.format == "nnssl"
    assert any(str(path.parent / "adaptation_plan.json") in n for n in weights.notes)
    report = load_pretrained(build_network(RESENC, 1, 2), ARCH, path)
    assert report.fraction_loaded == 1.0


def test_no_plan_anywhere_is_refused_with_the_fix(tmp_path: Path) -> None:
    path, _ = _checkpoint(tmp_path, inside=False, beside=False)
    with pytest.raises(WeightsError, match="format 'nnssl' expects an nnssl checkpoint"):
        read_weights(path, "nnssl")  # it is read as (and looks like) an nnU-Net file


def test_nnssl_file_for_another_network_is_refused(tmp_path: Path) -> None:
    path, _ = _checkpoint(tmp_path)
    basic = ModelConfig(name="basicunet", features=(4, 4, 8, 8, 16, 4))
    with pytest.raises(WeightsError) as info:
        check_checkpoint(path, "auto", basic, 1, 2, 0.0, 1.0)  # even when anything may load
    msg = str(info.value)
    assert "this nnssl checkpoint holds nnssl ResidualEncoderUNet" in msg
    assert "the configured network is model.name: basicunet" in msg
    assert msg.endswith("How to fix: set model.name: resencunet, model.features: [4, 8, 16]")
    other = ModelConfig(name="resencunet", features=(4, 8, 16, 32))
    with pytest.raises(WeightsError, match=r"model.features: \[4, 8, 16, 32\]"):
        check_checkpoint(path, "auto", other, 1, 2)


def test_nnunet_file_where_nnssl_is_expected_is_refused(tmp_path: Path) -> None:
    net = build_network(RESENC, 1, 2)
    path = nnunet_checkpoint(tmp_path / "checkpoint_final.pth", net)
    with pytest.raises(WeightsError) as info:
        read_weights(path, "nnssl")
    msg = str(info.value)
    assert "format 'nnssl' expects an nnssl checkpoint" in msg
    assert "looks like 'nnunet'" in msg and "set format: nnunet (or auto)" in msg
    nnssl_path, _ = _checkpoint(tmp_path)
    with pytest.raises(WeightsError, match="looks like 'nnssl'.*set format: nnssl"):
        read_weights(nnssl_path, "nnunet")


def test_encoder_medtl_does_not_build_is_refused_naming_both(tmp_path: Path) -> None:
    plan = _tiny_plan(blocks=[1, 3, 6])
    path = nnssl_checkpoint(tmp_path, _pretraining_net(), plan)
    with pytest.raises(WeightsError) as info:
        read_weights(path)
    assert "its encoder has [1, 3, 6] residual blocks per stage; resencunet has [1, 3, 4]" in str(
        info.value
    )


def test_plan_of_another_checkpoint_is_refused(tmp_path: Path) -> None:
    plan = _tiny_plan()
    plan["key_to_encoder"] = "backbone.stages"
    path = nnssl_checkpoint(tmp_path, _pretraining_net(), plan)
    with pytest.raises(WeightsError, match=r"key_to_encoder \(backbone.stages\), which no tensor"):
        read_weights(path)


def test_resenc_l_at_full_size_keys_and_parameters() -> None:
    """nnssl's ResEnc-L preset (architecture_registry.get_res_enc_l): 6 stages, 956 state-dict
    keys with DNA's aliases, 102.3 M parameters with the 1-channel reconstruction head."""
    torch.manual_seed(0)
    source = residual_encoder_unet(1, 1, list(RESENC_L_FEATURES))
    assert [len(s.blocks) for s in source.encoder.stages] == list(RESENC_L_BLOCKS)
    checkpoint = nnssl_checkpoint_dict(source, nnssl_adaptation_plan("ResEncL"))
    assert len(checkpoint["network_weights"]) == 956
    assert sum(p.numel() for p in source.parameters()) == 102_348_965
    notes: list[str] = []
    state, plan, net = from_nnssl(checkpoint, Path("checkpoint_final.pth"), notes)
    assert plan.architecture == "ResEncL" and net.features == list(RESENC_L_FEATURES)
    weights = Weights(Path("checkpoint_final.pth"), "nnssl", state, notes, "nnssl ResEncL",
                      {"name": "resencunet", "features": list(RESENC_L_FEATURES)})  # fmt: skip
    model = build_network(ModelConfig(name="resencunet"), 1, 3)  # default features: ResEnc-L's
    report = plan_transfer(model, ARCH, weights).report
    refuse_mismatch(report)
    assert report.fraction_loaded == 1.0 and len(report.loaded) == len(_encoder_keys(model))
    assert report.encoder_params_loaded == sum(
        p.numel() for k, p in model.named_parameters() if k.startswith("encoder.")
    )
