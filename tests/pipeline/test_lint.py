"""The workflow's own code style: snakefmt and Snakemake's linter are clean."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.workflow import run_snakemake

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run(*cmd: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)


def test_snakefmt_check() -> None:
    result = _run(str(BIN / "snakefmt"), "--check", "Snakefile", "pipeline")
    assert result.returncode == 0, result.stdout + result.stderr


def test_snakemake_lint(tmp_path: Path) -> None:
    result = run_snakemake(
        tmp_path, "--lint", configfile=REPO / "config" / "config.yaml", timeout=300
    )
    text = result.stdout + result.stderr
    assert result.returncode == 0, text
    assert "Lints for" not in text, text
