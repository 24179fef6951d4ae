"""The workflow fine-tunes a tiny ResEnc from an nnssl (OpenMind) checkpoint (issue #16)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medtl.layout import run_dir
from medtl.models.nnunet_networks import residual_encoder_unet
from tests.models.weight_layouts import (
    nnssl_adaptation_plan,
    nnssl_checkpoint,
    nnssl_resenc_kwargs,
)
from tests.support.workflow import planned_rules, run_snakemake

CONFIG = Path(__file__).with_name("config_nnssl.yaml")
FEATURES = [4, 8, 16]


def _weights(work: Path) -> Path:
    """weights/nnssl/checkpoint_final.pth (+ adaptation_plan.json), as nnssl publishes them."""
    torch.manual_seed(0)
    net = residual_encoder_unet(1, 1, FEATURES)  # the MAE network: 1-channel reconstruction
    plan = nnssl_adaptation_plan("ResidualEncoderUNet", nnssl_resenc_kwargs(FEATURES))
    return nnssl_checkpoint(work / "weights" / "nnssl", net, plan)


@pytest.mark.slow
def test_workflow_finetunes_resenc_from_an_nnssl_checkpoint(tmp_path: Path) -> None:
    work = tmp_path / "run"
    checkpoint = _weights(work)
    dry = run_snakemake(work, "-n", "--cores", "2", configfile=CONFIG)
    assert dry.returncode == 0, dry.stderr[-4000:]
    assert "pretrain" not in planned_rules(dry)  # the checkpoint is the pretrained encoder
    result = run_snakemake(work, "--cores", "2", configfile=CONFIG)
    assert result.returncode == 0, result.stderr[-4000:]
    res = work / "results"
    assert (res / "report" / "report.html").is_file()
    for fold in (0, 1):
        report = json.loads((run_dir(res, "finetune", 1, fold) / "load_report.json").read_text())
        assert report["format"] == "nnssl" and report["fraction_loaded"] == 1.0
        assert report["source"].endswith("checkpoint_final.pth") and report["conflict"] == ""
        assert {p["part"] for p in report["not_transferred"]} == {"decoder", "head"}
        assert any(n.startswith("nnssl adaptation plan") for n in report["notes"])
        assert not (run_dir(res, "scratch", 1, fold) / "load_report.json").exists()
    record = json.loads((run_dir(res, "finetune", 1, 0) / "run.json").read_text())
    files = record["sha256"]["pretrained_weights"]["files"]
    assert set(files) == {checkpoint.name}
