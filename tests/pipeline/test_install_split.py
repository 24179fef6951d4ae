"""The Makefile's two installs: `make run` installs medtl's runtime dependencies only;
`make test` / `make lint` add the `dev` extra on top, and the benchmarks their `bench`
extra. Checked with `make -n` (what make would run) on a throw-away venv path.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TEST_ONLY = ("pytest", "ruff", "selenium", "pytorch-ignite", "fire", "pydicom-data")

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def planned(venv: Path, target: str) -> str:
    """The commands `make TARGET` would run with its venv at ``venv``."""
    cmd = ["make", "-n", "-C", str(REPO), target, f"VENV={venv}"]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def pip_installs(plan: str) -> list[str]:
    return [line for line in plan.splitlines() if "pip install" in line]


@pytest.mark.parametrize("target", ["run", "install", "dry-run", "study-shift"])
def test_run_installs_runtime_dependencies_only(tmp_path: Path, target: str) -> None:
    installs = pip_installs(planned(tmp_path / "venv", target))
    assert any(line.endswith("pip install -q -e .") for line in installs), installs
    assert not any("[dev]" in line or "[bench]" in line for line in installs), installs


@pytest.mark.parametrize("target", ["test", "test-all", "lint"])
def test_test_after_run_only_adds_the_dev_extra(tmp_path: Path, target: str) -> None:
    venv = tmp_path / "venv"
    fresh = pip_installs(planned(venv, target))
    assert any('-e ".[dev]"' in line for line in fresh), fresh
    venv.mkdir()
    (venv / ".installed").touch()  # as `make run` leaves it: newer than pyproject.toml
    plan = planned(venv, target)
    assert "-m venv" not in plan, plan
    assert pip_installs(plan) == [next(i for i in fresh if "[dev]" in i)], plan


def test_bench_installs_the_bench_extra(tmp_path: Path) -> None:
    installs = pip_installs(planned(tmp_path / "venv", "bench"))
    assert any('-e ".[bench]"' in line for line in installs), installs
    assert not any("[dev]" in line for line in installs), installs


def test_test_only_packages_are_not_runtime_dependencies() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = " ".join(project["dependencies"]).lower()
    dev = " ".join(project["optional-dependencies"]["dev"]).lower()
    for name in TEST_ONLY:
        assert name in dev and name not in runtime, name
