"""The workflow as users start it: config on the command line, checks before any job,
the Python the jobs run, and what a failed job's retry does.

Dry runs (a few seconds each) and two cheap real jobs; the whole workflow runs in
``test_workflow.py``.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.support.workflow import planned_rules, run_snakemake

REPO = Path(__file__).resolve().parents[2]
PYTHON = shlex.quote(sys.executable)
TIMEOUT_S = 300


def snakemake(
    workdir: Path, config: dict | Path, *args: str, path: str | None = None
) -> subprocess.CompletedProcess:
    """Run the project's Snakefile in ``workdir`` on ``config`` (a mapping or a file), on
    one core.

    ``path`` replaces PATH for Snakemake and its jobs (default: this environment's).
    """
    if isinstance(config, dict):
        configfile = workdir / "config.yaml"
        configfile.write_text(yaml.safe_dump(config))
    else:
        configfile = config
    path = os.environ.get("PATH", "") if path is None else path
    return run_snakemake(
        workdir, "--cores", "1", *args, configfile=configfile, path=path, timeout=TIMEOUT_S
    )


def commands(result: subprocess.CompletedProcess) -> list[str]:
    """The shell commands a ``-n -p`` run prints, one per job (rule all has none), without
    the ``medtl_job ATTEMPT LOG`` of rules with retries."""
    found = re.findall(r"^Shell command: (?:medtl_job 1 \S+ )?(.*)$", result.stdout, re.M)
    return [c for c in found if c != "None"]


def own_data(workdir: Path) -> dict:
    """A config for your own data: case sheets of the target and the source set (a dry run
    never reads them), one random and one pretrained arm, no label fractions."""
    for sheet in ("cases.tsv", "source.tsv"):
        (workdir / sheet).write_text("image\tlabel\nimg.nii.gz\tlab.nii.gz\n")
    return {
        "dataset": {"kind": "path", "path": "cases.tsv"},
        "pretrain": {"source": "source.tsv"},
        "splits": {"folds": 2},
        "arms": {"scratch": {"init": "random"}, "finetune": {"init": "pretrained"}},
        "label_fractions": [],
    }


# ------------------------------------------------------------------- the config


def test_own_checkpoint_with_source_null_needs_no_source(tmp_path: Path) -> None:
    """config/config.yaml's way to use your own weights: the source set is then ignored."""
    from medtl.config import ModelConfig
    from medtl.models.networks import build_network

    # weights that fit the config's network (the start checks match them to it)
    torch.save(build_network(ModelConfig(), 1, 2).state_dict(), tmp_path / "w.pt")
    config = own_data(tmp_path)
    config["pretrain"] = {"source": None, "checkpoint": "w.pt"}
    result = snakemake(tmp_path, config, "-n")
    assert result.returncode == 0, result.stderr
    rules = planned_rules(result)
    assert "ingest" in rules
    assert "ingest_source" not in rules and "pretrain" not in rules
    # without the checkpoint, pretraining needs a source: said at start, with the fix
    del config["pretrain"]
    result = snakemake(tmp_path, config, "-n")
    assert result.returncode == 1
    said = re.search(
        r"^medtl: error: the config \(.*config\.yaml\) cannot run:$", result.stderr, re.M
    )
    assert said, result.stderr
    assert "config key 'pretrain.source': empty, but arm(s) finetune start from" in result.stderr
    assert "Traceback" not in result.stderr and 'File "' not in result.stderr


def test_config_on_the_command_line_sets_one_key_and_keeps_the_others(tmp_path: Path) -> None:
    """docs/configuration.md: `--config train='{steps: 500}'`."""
    config = own_data(tmp_path)
    config["train"] = {"steps": 7, "val_every": 3}
    result = snakemake(tmp_path, config, "-n", "-p", "--config", "train={steps: 500}")
    assert result.returncode == 0, result.stderr
    trains = [c for c in commands(result) if " -m medtl train " in c]
    assert trains
    for command in trains:
        settings = yaml.safe_load(re.search(r"--settings '([^']*)'", command)[1])
        # merged into the file's train section: steps from --config, the rest from the file
        assert settings["train"]["steps"] == 500
        assert settings["train"]["val_every"] == 3
    # a value that is not a number is still refused, naming both sources
    result = snakemake(tmp_path, config, "-n", "--config", "train={steps: many}")
    assert result.returncode == 1
    assert "config key 'train.steps': got 'many'; expected an integer" in result.stderr
    assert "config.yaml, --config)" in result.stderr


def test_a_config_file_replaces_the_projects(tmp_path: Path) -> None:
    """--configfile: keys it leaves out take the schema's defaults, not config/config.yaml's
    (whose four arms would otherwise add up with the file's)."""
    (tmp_path / "config").mkdir()
    project = {"arms": {"a": {"init": "random"}, "b": {"init": "random"}}, "splits": {"folds": 3}}
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(project))
    config = own_data(tmp_path)
    config["arms"] = {"scratch": {"init": "random"}}
    result = snakemake(tmp_path, config, "-n")
    assert result.returncode == 0, result.stderr
    assert planned_rules(result)["train"] == 2  # one arm, splits.folds 2


def test_cross_key_problems_stop_the_start(tmp_path: Path) -> None:
    config = own_data(tmp_path)
    config["arms"]["finetune_partial"] = {"init": "pretrained", "strategy": "partial"}
    config["train"] = {"patch_size": [24, 24, 24]}
    config["pretrain"] = {"checkpoint": "missing.pt"}
    result = snakemake(tmp_path, config, "-n")
    assert result.returncode == 1
    for said in (
        "config key 'arms.finetune_partial.unfreeze_stages': got 0",
        "config key 'train.patch_size': got [24, 24, 24]; basicunet needs every side to be a "
        "multiple of 16. How to fix: use e.g. [32, 32, 32]",
        "config key 'pretrain.checkpoint': got 'missing.pt', which does not exist",
    ):
        assert said in result.stderr, result.stderr
    assert not (tmp_path / "logs").exists()  # no job ran


# ------------------------------------------------------------------ the jobs' Python


def test_jobs_run_medtl_with_snakemakes_python(tmp_path: Path) -> None:
    config = own_data(tmp_path)
    one = commands(snakemake(tmp_path, config, "-n", "-p"))
    assert one
    for command in one:
        assert command.startswith(f"{PYTHON} -m medtl "), command
    config.update(gpus=2, threads=4)
    config["dataset"]["kind"] = "demo"
    two = commands(snakemake(tmp_path, config, "-n", "-p"))
    launch = f"{PYTHON} -m torch.distributed.run --standalone --nproc-per-node 2 -m medtl "
    assert any(c.startswith(launch + "pretrain ") for c in two)
    assert any(c.startswith(launch + "train ") for c in two)


def test_conda_jobs_run_the_environments_python(tmp_path: Path) -> None:
    """With --sdm conda each job runs in envs/medtl.yaml's environment: its `python`."""
    fake = tmp_path / "bin"
    fake.mkdir()
    # just enough of conda for Snakemake's checks in a dry run (which creates no env)
    stub = """#!/bin/sh
case "$*" in
  'info --json') echo '{"conda_prefix": "PREFIX", "platform": "linux-64"}';;
  '--version') echo 'conda 24.11.0';;
  'config --get channel_priority --json') echo '{"get": {"channel_priority": "strict"}}';;
  *) exit 1;;
esac
"""
    (fake / "conda").write_text(stub.replace("PREFIX", str(tmp_path)))
    (fake / "conda").chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    path = f"{fake}{os.pathsep}{os.environ.get('PATH', '')}"
    result = snakemake(work, own_data(work), "-n", "-p", "--sdm", "conda", path=path)
    assert result.returncode == 0, result.stderr
    jobs = commands(result)
    assert jobs and all(c.startswith("python -m medtl ") for c in jobs)


def test_a_job_runs_without_the_environment_on_path(tmp_path: Path) -> None:
    """README's `.venv/bin/snakemake ...` without an activated venv: no `medtl` on PATH."""
    result = snakemake(tmp_path, own_data(tmp_path), "results/device.json", path="/usr/bin:/bin")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "results" / "device.json").is_file()


def test_a_python_without_medtl_is_refused_at_start(tmp_path: Path) -> None:
    from medtl.checks import check_job_python
    from medtl.kernel.errors import MedtlError

    check_job_python([sys.executable])  # this one has it
    with pytest.raises(MedtlError, match=r"cannot import medtl \(.*No module named 'medtl'"):
        check_job_python([sys.executable, "-I", "-S"], cwd=tmp_path)  # site and path off


# ------------------------------------------------------------------------- retries


def job_prefix() -> str:
    """The shell prefix pipeline/common.smk gives every job, as Snakemake formats it."""
    text = (REPO / "pipeline" / "common.smk").read_text()
    body = re.search(r"^shell\.prefix\(\n(.*?)^\)", text, re.M | re.S)[1]
    return ast.literal_eval(f"({body})").replace("{{", "{").replace("}}", "}")


FAIL = "echo 'medtl: error: bad input. How to fix: ...' >&2; exit 1"


@pytest.mark.parametrize(
    ("first", "retried"),
    [
        (FAIL, False),  # a medtl error would only repeat
        ("echo Traceback >&2; exit 1", True),  # a crash: try again
        ("kill -9 $$", True),  # killed (e.g. for memory): the retry asks for more
    ],
)
def test_medtl_job_retries_only_what_may_pass(tmp_path: Path, first: str, retried: bool) -> None:
    log = tmp_path / "job.log"

    def attempt(n: int, command: str) -> subprocess.CompletedProcess:
        log.unlink(missing_ok=True)  # as Snakemake does before each attempt
        script = f"{job_prefix()}medtl_job {n} {shlex.quote(str(log))} sh -c {shlex.quote(command)}"
        return subprocess.run(["bash", "-c", script], capture_output=True, text=True)

    assert attempt(1, first).returncode != 0
    second = attempt(2, "echo second attempt ran")
    assert (second.returncode == 0) == retried
    if retried:
        assert log.read_text() == "second attempt ran\n"
    else:
        kept = log.read_text()
        assert kept.startswith("medtl: error: bad input.") and "[workflow] not retried" in kept
    # a later run starts afresh, whatever the last one left
    assert attempt(1, "echo fresh").returncode == 0 and log.read_text() == "fresh\n"
    assert not list(tmp_path.glob("*.first-attempt"))


def test_a_medtl_error_is_not_retried(tmp_path: Path) -> None:
    """plan has `retries: 1`; an empty manifest is a user error: medtl runs once."""
    config = own_data(tmp_path)
    ingest = tmp_path / "results" / "ingest"
    ingest.mkdir(parents=True)
    (ingest / "manifest.tsv").write_text("case_id\tpatient\timage\tlabel\n")
    (ingest / "rejected.tsv").write_text("path\treason\tfix\n")
    result = snakemake(
        tmp_path, config, "results/preprocess/plan.json", "--rerun-triggers", "mtime"
    )
    assert result.returncode == 1
    log = (tmp_path / "logs" / "plan.log").read_text()
    assert log.count("medtl: error:") == 1, log
    assert "no case has a label" in log
    assert "[workflow] not retried" in log
    # Snakemake restarted the job once (retries: 1); medtl_job stopped that attempt at once
    assert result.stderr.count("Trying to restart job") == 1
    assert not (tmp_path / "results" / "preprocess" / "plan.json").exists()
