"""Shared by the workflow tests: run the project's Snakefile, and one local run of the
micro config (``config_micro.yaml``) that the reproducibility and SLURM tests compare with."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from medtl.provenance import reproducibility_differences

REPO = Path(__file__).resolve().parents[2]
MICRO = Path(__file__).with_name("config_micro.yaml")
BIN = Path(sys.executable).parent
# A micro run takes 1-3 minutes on 2 cores; these limits only catch a hung run.
LOCAL_TIMEOUT_S = 900
INTERRUPT_GRACE_S = 60


def run_snakemake(
    workdir: Path,
    *args: str,
    configfile: Path = MICRO,
    env: Mapping[str, str] | None = None,
    timeout: float = LOCAL_TIMEOUT_S,
) -> subprocess.CompletedProcess:
    """Run the project's Snakefile in ``workdir`` with the venv's tools first on PATH.

    On timeout Snakemake gets SIGINT (it then cancels its jobs, locally or with scancel)
    and a minute to stop; only then is it killed. The result's returncode is then
    negative and its stderr ends with a note.
    """
    environ = dict(os.environ if env is None else env)
    environ["PATH"] = f"{BIN}{os.pathsep}{environ.get('PATH', '')}"
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
        *args,
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=INTERRUPT_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        err += f"\n[test] snakemake interrupted after {timeout:.0f} s"
        return subprocess.CompletedProcess(cmd, -abs(proc.returncode or 1), out, err)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


class Results:
    """What two runs of the micro config are compared on."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def metrics(self) -> bytes:
        return (self.folder / "evaluation" / "metrics.csv").read_bytes()

    def state_dicts(self) -> dict[str, dict[str, torch.Tensor]]:
        """``train/<arm>/seed<s>/fold<k>/best.pt`` → its weights."""
        out = {}
        for path in sorted((self.folder / "train").glob("*/seed*/fold*/best.pt")):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            out[str(path.relative_to(self.folder))] = checkpoint["state_dict"]
        return out

    def summary_numbers(self) -> dict:
        """The report's ``summary.json`` less what legitimately differs between two runs:
        run times, and the provenance's file hashes (torch.save records the temporary
        file name and a random id in each checkpoint; the weights are compared apart)."""
        summary = json.loads((self.folder / "report" / "summary.json").read_text())
        summary.pop("runtime", None)
        provenance = summary.pop("provenance", {})
        summary["seeds"] = provenance.get("seeds")
        summary["config_sha256"] = provenance.get("config_sha256")
        return summary

    def record_differences(self, other: Results, weights: str) -> list[str]:
        """What the ``run.json`` beside ``weights`` (a path under the results folder)
        records differently in the two runs: settings, versions, hardware, inputs."""
        name = Path(weights).with_name("run.json")
        records = [json.loads((r.folder / name).read_text()) for r in (self, other)]
        return reproducibility_differences(*records)

    def assert_same_as(self, other: Results) -> None:
        """Metrics byte for byte, every trained model bit for bit, the report's numbers."""
        assert self.metrics() == other.metrics(), "metrics.csv differs"
        mine, theirs = self.state_dicts(), other.state_dicts()
        assert mine, f"no trained models under {self.folder}"
        assert mine.keys() == theirs.keys()
        for name, state in mine.items():
            assert state.keys() == theirs[name].keys(), name
            for key, tensor in state.items():
                assert tensor.dtype == theirs[name][key].dtype, f"{name}: {key}"
                assert torch.equal(tensor, theirs[name][key]), (
                    f"{name}: {key} differs; what the two runs recorded differently: "
                    f"{self.record_differences(other, name)}"
                )
        assert self.summary_numbers() == other.summary_numbers(), "summary.json differs"


@dataclass(frozen=True)
class MicroRun:
    """A finished run of the micro config: its working directory and Snakemake's output."""

    workdir: Path
    result: subprocess.CompletedProcess

    @property
    def results(self) -> Results:
        return Results(self.workdir / "results")


@pytest.fixture(scope="session")
def run_workflow():
    """``run_snakemake``: the project's Snakefile on a config (default: the micro one)."""
    return run_snakemake


@pytest.fixture(scope="session")
def micro_run(tmp_path_factory: pytest.TempPathFactory) -> MicroRun:
    """The micro workflow run once locally on 2 cores: what the other runs must equal."""
    workdir = tmp_path_factory.mktemp("micro-local")
    result = run_snakemake(workdir, "--cores", "2")
    assert result.returncode == 0, result.stderr[-4000:]
    return MicroRun(workdir, result)


# ----------------------------------------------- the project as a user has it (docs tests)

VENV = Path(sys.prefix)
DOCUMENTED_TIMEOUT_S = 600


def copy_project(target: Path, run: Path | None = None) -> Path:
    """A copy of the project in ``target`` as a user has it: the files git knows (tracked
    and new, not ignored), ``.venv`` linking to the environment these tests run in, and,
    with ``run``, that finished run's ``results/``, ``data/``, ``logs/`` and Snakemake
    records. ``config/config.yaml`` is the micro config: a run started in a folder without
    ``config/config.yaml`` (as ``micro_run``) used the micro config alone."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    (target / ".venv").symlink_to(VENV, target_is_directory=True)
    if run is not None:
        for name in ("results", "data", "logs", ".snakemake"):
            if (run / name).exists():
                shutil.copytree(run / name, target / name, symlinks=True)
    shutil.copy(MICRO, target / "config" / "config.yaml")
    return target


def run_documented(
    command: str,
    root: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = DOCUMENTED_TIMEOUT_S,
) -> tuple[int, str]:
    """Run ``command`` exactly as printed, in bash, in ``root``: (exit status, output).

    The shell's PATH lacks the virtual environment (a user who never activated it), except
    for a command printed as a bare ``snakemake``/``medtl``/``python``, which the docs
    write for an activated environment.
    """
    environ = dict(os.environ if env is None else env)
    bin_dir = str(VENV / "bin")
    path = [p for p in environ.get("PATH", "").split(os.pathsep) if p and p != bin_dir]
    if re.match(r"(snakemake|medtl|python)\b", command):
        path.insert(0, bin_dir)
        environ["VIRTUAL_ENV"] = str(VENV)
    environ["PATH"] = os.pathsep.join(path)
    environ.setdefault("MEDTL_SALT", "a-secret-of-the-site")
    environ.pop("MAKEFLAGS", None)
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=root,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr
