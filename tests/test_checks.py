"""Tests for medtl.checks: the checks the workflow runs when it starts.

The bad configs themselves are corpus entries (tests/reliability/corpus_config.py); these
tests pin down when each check applies.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from medtl.checks import check_workflow_config, config_problems, runs_pretraining
from medtl.config import validate_config
from medtl.kernel.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "pipeline" / "schemas" / "config.schema.yaml"


def problems(config: dict, workdir: Path = ROOT) -> list[str]:
    """The cross-key problems of ``config`` (left as it is) once completed by the schema."""
    return config_problems(validate_config(copy.deepcopy(config), SCHEMA), workdir)


def test_the_shipped_config_passes() -> None:
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    assert check_workflow_config(config, SCHEMA) is config
    assert problems({}) == []


def test_every_problem_is_listed_with_the_config_file() -> None:
    config = {
        "arms": {"p": {"init": "pretrained", "strategy": "partial"}},
        "train": {"patch_size": [24, 24, 24]},
    }
    with pytest.raises(ConfigError) as info:
        check_workflow_config(config, SCHEMA, sources=["mine.yaml"])
    lines = str(info.value).splitlines()
    assert lines[0] == "the config (mine.yaml) cannot run:"
    assert len(lines) == 4  # unfreeze_stages, the patch, the reference arm 'scratch'
    assert all(line.startswith("  - config key '") and "How to fix" in line for line in lines[1:])


def test_the_pretraining_patch_counts_only_when_pretraining_runs(tmp_path: Path) -> None:
    bad = {"pretrain": {"patch_size": [24, 24, 24]}}
    assert runs_pretraining(validate_config(copy.deepcopy(bad), SCHEMA))
    assert any("'pretrain.patch_size'" in p for p in problems(bad))
    (tmp_path / "w.pt").write_bytes(b"")
    own = {"pretrain": {"patch_size": [24, 24, 24], "checkpoint": "w.pt"}}
    found = config_problems(validate_config(own, SCHEMA), tmp_path, read_checkpoint=False)
    assert found == []  # your own weights: the pretrain stage does not run
    random_only = {**bad, "arms": {"scratch": {"init": "random"}}}
    assert problems(random_only) == []


def test_the_ssl_patch_counts_only_with_an_ssl_arm() -> None:
    bad = {"pretrain_ssl": {"patch_size": [32, 16, 16]}}
    assert problems(bad) == []
    ssl = {**bad, "arms": {"scratch": {"init": "random"}, "ssl": {"init": "ssl"}}}
    assert [p[:40] for p in problems(ssl)] == ["config key 'pretrain_ssl.patch_size': go"]


def test_the_checkpoint_is_read_only_when_asked_and_used(tmp_path: Path) -> None:
    (tmp_path / "w.pt").write_text("not weights\n")
    config = validate_config({"pretrain": {"checkpoint": "w.pt"}}, SCHEMA)
    assert config_problems(config, tmp_path, read_checkpoint=False) == []
    found = config_problems(config, tmp_path)
    assert len(found) == 1 and found[0].startswith("config key 'pretrain.checkpoint': ")
    random_only = validate_config(
        {"pretrain": {"checkpoint": "w.pt"}, "arms": {"scratch": {"init": "random"}}}, SCHEMA
    )
    assert config_problems(random_only, tmp_path) == []  # no arm starts from it


def test_like_pretrained_needs_a_checkpoint(tmp_path: Path) -> None:
    random_only = {"arms": {"scratch": {"init": "random"}}, "report": {"reference_arm": "scratch"}}
    like = {"target_spacing": "like_pretrained", "normalization": "like_pretrained"}
    config = validate_config({**copy.deepcopy(random_only), "preprocess": like}, SCHEMA)
    (found,) = config_problems(config, tmp_path, read_checkpoint=False)
    assert found.startswith(
        "config key 'preprocess.target_spacing' and 'preprocess.normalization': like_pretrained"
    )
    assert "'pretrain.checkpoint' is not set" in found and "How to fix" in found
    config["pretrain"]["checkpoint"] = "missing.pth"
    (found,) = config_problems(config, tmp_path, read_checkpoint=False)
    assert "'missing.pth', which does not exist" in found
    (tmp_path / "missing.pth").write_bytes(b"")
    assert config_problems(config, tmp_path, read_checkpoint=False) == []


def test_relative_paths_are_relative_to_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "cases.tsv").write_text("image\tlabel\n")
    config = {"dataset": {"kind": "path", "path": "cases.tsv"}, "arms": {"s": {"init": "random"}}}
    config["report"] = {"reference_arm": "s"}
    assert problems(config, tmp_path) == []
    moved = problems(config, tmp_path / "elsewhere")
    assert len(moved) == 1 and "'dataset.path': got 'cases.tsv', which does not exist" in moved[0]


def test_dicomweb_settings_are_checked_at_start() -> None:
    config = {"dataset": {"kind": "dicomweb"}, "arms": {"scratch": {"init": "random"}}}
    found = problems(config)
    assert len(found) == 1 and found[0].startswith("config key 'dataset.dicomweb.url': missing")
    config["dataset"]["dicomweb"] = {"url": "http://pacs:8042/dicom-web", "username": "me"}
    assert "password_env" in problems(config)[0]


def test_no_torch_for_a_config_without_checkpoint() -> None:
    """Every snakemake call (even --help-like dry runs) runs the checks: they stay cheap."""
    code = (
        "import sys, yaml; from medtl.checks import check_workflow_config; "
        f"check_workflow_config(yaml.safe_load(open({str(ROOT / 'config' / 'config.yaml')!r})), "
        f"{str(SCHEMA)!r}); print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


def test_seeds_and_label_fraction_arms_are_checked_at_start() -> None:
    config = {
        "seeds": [1, 2, 2],
        "arms": {"scratch": {"init": "random", "repeats": 4}},
        "label_fraction_arms": ["scratch", "finetuned"],
    }
    found = problems(config)
    assert any("'seeds': got [1, 2, 2]; seed 2 is listed twice" in p for p in found), found
    assert any("'label_fraction_arms': got 'finetuned'" in p for p in found), found
    config["seeds"] = [1, 2, 3]
    assert any("'arms.scratch.repeats': got 4, but 'seeds' lists 3" in p for p in problems(config))
