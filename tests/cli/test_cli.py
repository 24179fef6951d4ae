"""Tests for the command-line interface (medtl.cli.main)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medtl import __version__
from medtl.cli.main import app

# subcommand → words its --help must contain
SUBCOMMANDS = {
    "demo-data": "Generate the built-in demo",
    "ingest": "convert them to NIfTI",
    "plan": "preprocessing plan",
    "preprocess": "Reorient, crop, resample and normalise one case",
    "split": "grouped by patient",
    "pretrain": "Supervised pretraining",
    "train": "Train one transfer arm on one fold",
    "predict-fold": "held-out cases",
    "predict": "Segment new cases",
    "export-onnx": "Write every model of an arm (each fold × seed) as ONNX",
    "evaluate": "normalised surface Dice",
    "evaluate-merge": "Join the per-arm",
    "postprocess": "Choose post-processing per class",
    "report": "HTML report",
    "power": "How many seeds a comparison of two arms needs",
}

runner = CliRunner()


def _plain(text: str) -> str:
    """Help text without rich's box drawing and line wrapping."""
    return " ".join(re.sub(r"[│╭╮╰╯─┃━]", " ", text).split())


def _stderr(result) -> str:
    """The error stream (older Click runners mix it into the output)."""
    try:
        return result.stderr
    except ValueError:
        return result.output


def test_help_lists_every_subcommand() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    listed = set()
    for line in re.sub(r"[│╭╮╰╯─┃━]", " ", result.output).splitlines():
        m = re.match(r"\s*([a-z][a-z-]+)\s{2,}\S", line)
        if m:
            listed.add(m.group(1))
    assert set(SUBCOMMANDS) <= listed
    assert "transfer learning" in _plain(result.output)


def test_no_arguments_shows_help() -> None:
    result = runner.invoke(app, [])
    assert "Usage" in result.output
    assert "demo-data" in result.output


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_subcommand_help(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    text = _plain(result.output)
    assert f"medtl {command}" in text
    assert SUBCOMMANDS[command] in text
    assert "--help" in text


def test_ingest_missing_path_is_a_one_line_error(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_folder"
    result = runner.invoke(app, ["ingest", str(missing), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    lines = _stderr(result).strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("medtl: error:")
    assert str(missing) in lines[0]
    assert "does not exist" in lines[0]
    assert "How to fix" in lines[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"medtl {__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", __version__)


def test_unknown_subcommand_fails() -> None:
    result = runner.invoke(app, ["trian"])
    assert result.exit_code != 0
    assert "trian" in result.output


def test_check_device_refuses_missing_cuda_at_once(tmp_path) -> None:
    import torch

    if torch.cuda.is_available():  # pragma: no cover - this check is for CPU machines
        pytest.skip("this machine has CUDA")
    result = runner.invoke(app, ["check-device", "--gpus", "1"])
    assert result.exit_code != 0
    assert "asks for 1 GPU(s) but PyTorch sees no CUDA device" in _plain(_stderr(result))
    out = tmp_path / "device.json"
    ok = runner.invoke(app, ["check-device", "--out", str(out)])
    assert ok.exit_code == 0, ok.output
    record = json.loads(out.read_text())
    assert record["gpus_found"] == 0 and record["name"] == "CPU"


def _help_sources(command) -> str:
    """The text a command's --help is rendered from: its docstring and option helps."""
    return " ".join([command.help or ""] + [getattr(p, "help", None) or "" for p in command.params])


def test_help_keeps_every_placeholder() -> None:
    """`<arm>`-style placeholders are not swallowed as HTML by the markdown help renderer
    (`medtl predict --help` once printed `results/postprocess/.json`)."""
    import typer.main

    group = typer.main.get_command(app)
    checked = 0
    for name, command in group.commands.items():
        result = runner.invoke(app, [name, "--help"], terminal_width=200)
        assert result.exit_code == 0, name
        shown = _plain(result.output)
        for placeholder in re.findall(r"<[a-z_]+>", _help_sources(command)):
            assert placeholder in shown, f"medtl {name} --help drops {placeholder}"
            checked += 1
        assert "/.json" not in shown and "//" not in shown.replace("://", ""), name
    assert checked >= 4  # predict, evaluate, postprocess, export-nnunet have some
