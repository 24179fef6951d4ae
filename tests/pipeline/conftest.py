"""Shared by the workflow tests: one local run of the micro config (``config_micro.yaml``)
that the reproducibility and SLURM tests compare with, and what two runs are compared on.
Running Snakemake and documented commands: ``tests/support/workflow.py``."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from medtl.provenance import reproducibility_differences
from tests.support.workflow import run_snakemake


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
        run times (of the rules, and per case in each arm's model record), peak memory,
        and the provenance's file hashes (torch.save records the temporary file name and
        a random id in each checkpoint; the weights are compared apart)."""
        summary = json.loads((self.folder / "report" / "summary.json").read_text())
        summary.pop("runtime", None)
        measured = ("seconds_per_case_median", "seconds_per_case_max", "peak_rss_mb", "peak_gpu_mb")
        for fit in (summary.get("trust") or {}).values():
            for key in measured:
                (fit.get("model") or {}).pop(key, None)
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
