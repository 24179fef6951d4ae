"""What CI runs (.ci/run): the linters first, then every test."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def commands(path: Path) -> list[str]:
    """The command lines of a shell script (comments and blank lines left out)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def test_ci_runs_lint_before_every_test() -> None:
    ci = commands(REPO / ".ci" / "run")
    assert "make lint" in ci and "make test-all" in ci, ci
    assert ci.index("make lint") < ci.index("make test-all")


def test_lint_covers_package_tests_benchmarks_and_studies() -> None:
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^lint:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe, "Makefile: no lint target"
    for tool in ("ruff check", "ruff format --check"):
        assert re.search(rf"{tool} medtl tests benchmarks studies$", recipe[1], re.M), recipe[1]
