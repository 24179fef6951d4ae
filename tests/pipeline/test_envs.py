"""envs/medtl.yaml (the conda environment of `snakemake --sdm conda`) installs the same
packages with the same version ranges as pyproject.toml's dependencies."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, before the standard library
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[2]


def pins(requirements: list[str]) -> dict[str, str]:
    """Package name (canonical) → its version specifiers, in a stable order.

    Example:
        >>> pins(["SimpleITK>=2.3", "monai<1.7,>=1.4"])
        {'simpleitk': '>=2.3', 'monai': '<1.7,>=1.4'}
    """
    out = {}
    for line in requirements:
        requirement = Requirement(line)
        specifiers = sorted(str(s) for s in requirement.specifier)
        out[canonicalize_name(requirement.name)] = ",".join(specifiers)
    return out


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return pins(project["dependencies"])


def conda_pip_lines() -> list[str]:
    """The `pip:` list of envs/medtl.yaml."""
    env = yaml.safe_load((REPO / "envs" / "medtl.yaml").read_text())
    return next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)


def conda_pins() -> dict[str, str]:
    # Options (`-e ..`: medtl itself, the repository relative to envs/) are no pins.
    return pins([line for line in conda_pip_lines() if not line.startswith("-")])


def test_conda_env_pins_agree_with_pyproject() -> None:
    expected, got = pyproject_pins(), conda_pins()
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    differ = {
        n: (expected[n], got[n]) for n in expected.keys() & got.keys() if expected[n] != got[n]
    }
    assert not (missing or extra or differ), (
        "envs/medtl.yaml must pin what pyproject.toml's [project] dependencies pin: "
        f"missing there {missing}, extra there {extra}, "
        f"different ranges (pyproject, conda) {differ}. Copy pyproject.toml's line."
    )


def test_conda_env_installs_medtl_itself() -> None:
    assert "-e .." in conda_pip_lines()
