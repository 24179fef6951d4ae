"""``like_pretrained``: the plan takes the spacing and normalisation of the pretrained
checkpoint (nnssl adaptation plan, nnU-Net plans, a medtl checkpoint's plan.json), says
where they came from, and warns when the data's voxels are much finer."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from medtl.cli.main import app
from medtl.config import ModelConfig, PreprocessConfig
from medtl.kernel.errors import ConfigError
from medtl.models.networks import build_network
from medtl.models.pretraining import read_pretraining
from medtl.preprocess.plan import Plan, make_plan
from tests.models.weight_layouts import (
    nnssl_adaptation_plan,
    nnssl_checkpoint,
    nnunet_checkpoint,
    nnunet_plans,
)
from tests.preprocess.test_plan_and_case import manifest  # noqa: F401 (fixture)

LIKE = PreprocessConfig(target_spacing="like_pretrained", normalization="like_pretrained")
CLASSES = {1: "a", 2: "b"}
# The fixture's data: median spacing (1, 1, 2) mm in (x, y, z).


def _nnssl(folder: Path, spacing: list | None, style: str = "onemmiso") -> Path:
    plan = nnssl_adaptation_plan()
    config = plan["pretrain_plan"]["configurations"]["onemmiso"]
    config["spacing"], config["spacing_style"] = spacing, style
    return nnssl_checkpoint(folder, torch.nn.Conv3d(1, 2, 3), plan)


def _nnunet(path: Path, spacing: list, schemes: list[str]) -> Path:
    net = build_network(ModelConfig(name="plainconvunet", features=(4, 8, 16)), 1, 2)
    plans = nnunet_plans(3, features=[4, 8, 16])
    plans["configurations"]["3d_fullres"].update(spacing=spacing, normalization_schemes=schemes)
    return nnunet_checkpoint(path, net, plans=plans)


def test_nnssl_plan_gives_spacing_and_zscore(manifest: pd.DataFrame, tmp_path: Path) -> None:  # noqa: F811
    grid = read_pretraining(_nnssl(tmp_path / "ckpt", [1, 1, 1]))
    plan = make_plan(manifest, LIKE, CLASSES, pretrained=grid)
    assert plan.target_spacing == (1.0, 1.0, 1.0)
    assert plan.normalization == "zscore"
    assert plan.spacing_source == "like_pretrained: checkpoint_final.pth, nnssl plan"
    assert plan.normalization_source == plan.spacing_source
    assert plan.pretraining_spacing == (1.0, 1.0, 1.0)
    assert plan.data_spacing == (1.0, 1.0, 2.0)
    assert plan.warnings == []  # the pretraining is finer than the data, not coarser


def test_nnssl_without_resampling_keeps_the_median(
    manifest: pd.DataFrame,  # noqa: F811
    tmp_path: Path,
) -> None:
    grid = read_pretraining(_nnssl(tmp_path / "ckpt", None, "noresample"), "nnssl")
    plan = make_plan(manifest, LIKE, CLASSES, pretrained=grid)
    assert plan.target_spacing == (1.0, 1.0, 2.0)
    assert "did not resample" in plan.spacing_source


def test_nnunet_plans_spacing_is_reversed_ct_and_warned(
    manifest: pd.DataFrame,  # noqa: F811
    tmp_path: Path,
) -> None:
    # nnU-Net writes (z, y, x): 5 mm slices, 3 mm rows, 1 mm columns.
    path = _nnunet(tmp_path / "checkpoint_final.pth", [5.0, 3.0, 1.0], ["CTNormalization"])
    grid = read_pretraining(path, "nnunet")
    plan = make_plan(manifest, LIKE, CLASSES, pretrained=grid)
    assert plan.target_spacing == (1.0, 3.0, 5.0)
    assert plan.normalization == "ct"
    assert plan.spacing_source.endswith("nnU-Net plans (3d_fullres)")
    (warning,) = plan.warnings
    # y: 3 > 2 x 1; z: 5 > 2 x 2; x: 1 is not
    assert "along y 1 mm vs 3 mm, z 2 mm vs 5 mm" in warning


def test_only_the_spacing_like_pretrained(manifest: pd.DataFrame, tmp_path: Path) -> None:  # noqa: F811
    path = _nnunet(tmp_path / "checkpoint_final.pth", [1.0, 1.0, 1.0], ["NoNormalization"])
    cfg = PreprocessConfig(target_spacing="like_pretrained")
    plan = make_plan(manifest, cfg, CLASSES, pretrained=read_pretraining(path))
    assert (plan.normalization, plan.normalization_source) == ("zscore", "auto (by modality)")
    with pytest.raises(ConfigError, match="normalised with NoNormalization.*How to fix"):
        make_plan(manifest, LIKE, CLASSES, pretrained=read_pretraining(path))


def test_formats_that_do_not_say_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(torch.nn.Conv3d(1, 2, 3).state_dict(), path)
    with pytest.raises(ConfigError, match="does not record them.*three numbers"):
        read_pretraining(path)


def test_medtl_checkpoint_reads_the_plan_json_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "best.pt"
    torch.save({"format": "medtl", "state_dict": torch.nn.Conv3d(1, 2, 3).state_dict()}, path)
    with pytest.raises(ConfigError, match="no plan.json lies beside it"):
        read_pretraining(path)
    (tmp_path / "plan.json").write_text(
        json.dumps({"target_spacing": [0.8, 0.8, 2.5], "normalization": "ct"})
    )
    grid = read_pretraining(path, "medtl")
    assert (grid.spacing, grid.medtl_normalization()) == ((0.8, 0.8, 2.5), "ct")
    assert grid.label == "best.pt, medtl plan.json"


def test_like_pretrained_without_a_checkpoint(manifest: pd.DataFrame) -> None:  # noqa: F811
    with pytest.raises(ConfigError, match="preprocess.target_spacing.*pretrain.checkpoint"):
        make_plan(manifest, LIKE, CLASSES)


def test_sources_recorded_and_old_plans_load(manifest: pd.DataFrame, tmp_path: Path) -> None:  # noqa: F811
    plan = make_plan(manifest, PreprocessConfig(target_spacing=(1.0, 1.0, 1.0)), CLASSES)
    assert (plan.spacing_source, plan.normalization_source) == ("fixed", "auto (by modality)")
    plan.save(tmp_path / "plan.json")
    assert Plan.load(tmp_path / "plan.json") == plan
    old = {k: v for k, v in json.loads((tmp_path / "plan.json").read_text()).items()}
    for key in ("spacing_source", "normalization_source", "data_spacing", "warnings"):
        old.pop(key)
    old.pop("pretraining_spacing")
    loaded = Plan.from_dict(old)
    assert (loaded.spacing_source, loaded.warnings, loaded.data_spacing) == ("", [], None)


def test_plan_command_logs_the_warning(manifest: pd.DataFrame, tmp_path: Path) -> None:  # noqa: F811
    path = _nnunet(tmp_path / "checkpoint_final.pth", [5.0, 3.0, 1.0], ["ZScoreNormalization"])
    manifest.to_csv(tmp_path / "manifest.tsv", sep="\t", index=False)
    settings = json.dumps({"target_spacing": "like_pretrained", "normalization": "auto"})
    args = ["plan", "--manifest", str(tmp_path / "manifest.tsv"), "--out"]
    args += [str(tmp_path / "plan.json"), "--settings", settings, "--classes", '{"1": "a"}']
    result = CliRunner().invoke(app, [*args, "--pretrained", str(path)])
    assert result.exit_code == 0, result.output
    assert "warning: the data's median spacing is more than 2x finer" in result.output
    written = json.loads((tmp_path / "plan.json").read_text())
    assert written["pretraining_spacing"] == [1.0, 3.0, 5.0]
    assert len(written["warnings"]) == 1
