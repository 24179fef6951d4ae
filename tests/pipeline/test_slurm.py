"""The workflow on SLURM: the profile's resources, and a run on a real (throw-away) cluster.

``test_profile_asks_gpus_for_gpu_rules_only`` needs no cluster: a dry run with
``profiles/slurm`` on the demo config shows which jobs ask for a GPU.

``test_documented_cluster_commands`` starts a single-node cluster on 127.0.0.1 (munged,
slurmctld and slurmd from Debian's ``slurm-wlm`` and ``munge``; ``tests/support/slurm.py``)
and runs every SLURM command of docs/cluster.md, exactly as printed, on a copy of the
finished local micro run, with the project's profile edited for this cluster. Its
``--forcerun train`` retrains every arm and fold through SLURM: every job must have gone
through SLURM, the GPU rules must have asked for a GPU (the node advertises a fake one) and
still run on the CPU, and the results must equal the local run's bit for bit. Skipped
where SLURM is not installed or this is not root; ``MEDTL_REQUIRE_SLURM=1`` (set by
``.ci/run``) makes that a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.docs.documented import documented_commands
from tests.support import slurm
from tests.support.workflow import copy_project, run_documented

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
# The rules that run networks and ask SLURM for a GPU (profiles/slurm, set-resources).
GPU_RULES = {
    "check_device",
    "pretrain",
    "pretrain_ssl",
    "train",
    "train_fraction",
    "predict_fold",
    "predict_fraction",
}
SLURM_TIMEOUT_S = 1200


def _job_resources(text: str) -> dict[str, list[dict[str, str]]]:
    """Rule → the ``resources:`` of each of its jobs, from a dry run's job listing."""
    jobs: dict[str, list[dict[str, str]]] = {}
    for block in re.split(r"\n(?=\[[^\]]+\]\n(?:rule|checkpoint|localrule) )", text):
        head = re.search(r"^(?:rule|checkpoint|localrule) (\w+):", block, re.M)
        found = re.search(r"^\s+resources: (.*)$", block, re.M)
        if head and found:
            pairs = (item.split("=", 1) for item in found[1].split(", ") if "=" in item)
            jobs.setdefault(head[1], []).append({k.strip(): v.strip() for k, v in pairs})
    return jobs


def test_profile_asks_gpus_for_gpu_rules_only(run_workflow, tmp_path: Path) -> None:
    shutil.copytree(REPO / "config", tmp_path / "config")
    result = run_workflow(
        tmp_path,
        "--profile",
        str(PROFILE.parent),
        "-n",
        configfile=tmp_path / "config" / "config.yaml",
        timeout=300,
    )
    text = result.stdout + result.stderr
    assert result.returncode == 0, text[-4000:]
    jobs = _job_resources(text)
    # The demo config plans every GPU rule (pretrain_ssl for its ssl arm, the fraction
    # rules for its label fractions), and every CPU rule.
    planned_gpu = GPU_RULES & set(jobs)
    assert planned_gpu >= GPU_RULES - {"check_device"}, sorted(jobs)
    assert {"demo_data", "ingest", "split", "evaluate_fold", "report"} <= set(jobs)
    for rule, resources in jobs.items():
        for res in resources:
            if rule in GPU_RULES:
                assert res.get("gpu") == "1", (rule, res)
                assert int(res["cpus_per_gpu"]) >= 1, (rule, res)
                assert int(res["mem_mb"]) > 0 and int(res["runtime"]) > 0, (rule, res)
            else:
                assert "gpu" not in res and "cpus_per_gpu" not in res, (rule, res)
                assert "gpu_model" not in res, (rule, res)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[slurm.SlurmCluster]:
    """A running single-node test cluster with two fake GPUs (two jobs train at once)."""
    reason = slurm.missing_reason()
    if reason is not None:
        if os.environ.get("MEDTL_REQUIRE_SLURM") == "1":
            pytest.fail(f"MEDTL_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)
    logs = tmp_path_factory.mktemp("slurm-cluster-logs")
    with slurm.slurm_cluster(gpus=2, keep=logs) as running:
        yield running


def _test_profile(folder: Path, cluster: slurm.SlurmCluster) -> Path:
    """The project's SLURM profile, edited for this cluster as docs/cluster.md asks a user to
    edit it for theirs: its partition, no account, squeue for job states (no accounting
    database); and quick status checks, so that the tests do not wait."""
    profile = yaml.safe_load(PROFILE.read_text())
    profile["default-resources"]["slurm_partition"] = cluster.partition
    profile["slurm-no-account"] = True
    profile["slurm-status-command"] = "squeue"
    profile["slurm-init-seconds-before-status-checks"] = 1
    profile["seconds-between-status-checks"] = 1
    profile["latency-wait"] = 10
    profile["jobs"] = 4
    profile["keep-going"] = False
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return folder


@pytest.fixture(scope="module")
def project(cluster: slurm.SlurmCluster, tmp_path_factory: pytest.TempPathFactory, request) -> Path:
    """A copy of the project holding the finished local micro run, its SLURM profile edited
    for the test cluster. (The local run is asked for only now, so that a missing SLURM
    skips these tests before any run.)"""
    micro_run = request.getfixturevalue("micro_run")
    root = copy_project(tmp_path_factory.mktemp("slurm-project"), micro_run.workdir)
    _test_profile(root / "profiles" / "slurm", cluster)
    return root


def _slurm_jobs(cluster: slurm.SlurmCluster) -> list[dict[str, str]]:
    """Every job the controller still knows (MinJobAge=600 keeps finished ones)."""
    shown = cluster.run("scontrol", "-o", "show", "job")
    assert shown.returncode == 0, shown.stderr
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in shown.stdout.splitlines() if line]


def _check_jobs_went_through_slurm(cluster: slurm.SlurmCluster, text: str, work: Path) -> None:
    """Every job of the run whose output is ``text`` went through sbatch and finished
    there; GPU rules asked for a GPU and CPU rules did not; training ran on the CPU."""
    jobs = _slurm_jobs(cluster)
    assert jobs, cluster.log_tails()
    by_rule: dict[str, list[dict[str, str]]] = {}
    for job in jobs:
        rule = re.match(r"rule_(.+?)(?:_wildcards_.*)?$", job.get("Comment", ""))
        assert rule, job
        by_rule.setdefault(rule[1], []).append(job)
    assert all(job["JobState"] == "COMPLETED" for job in jobs), [
        (job["JobId"], job["Comment"], job["JobState"]) for job in jobs
    ]
    assert len(by_rule["train"]) == 4 and len(by_rule["predict_fold"]) == 4
    assert {"evaluate_fold", "evaluate", "postprocess", "report"} <= set(by_rule)
    submitted = len(re.findall(r"has been submitted with SLURM jobid", text))
    assert submitted == len(jobs)
    for rule, rule_jobs in by_rule.items():
        for job in rule_jobs:
            tres = job.get("TresPerJob", "") + job.get("TresPerNode", "")
            if rule in GPU_RULES:
                assert "gpu:1" in tres, (rule, job)
            else:
                assert "gpu" not in tres, (rule, job)
    # The plugin kept each job's SLURM log.
    logs = work / ".snakemake" / "slurm_logs"
    assert len(list((logs / "rule_train").glob("*/*.log"))) == 4
    # The "GPU" was fake: training found no CUDA device and ran on the CPU (device: auto).
    for run_json in (work / "results" / "train").glob("*/seed*/fold*/run.json"):
        assert json.loads(run_json.read_text())["device"] == "cpu", run_json


def _newer(project: Path, pattern: str, than: float) -> bool:
    files = list(project.glob(pattern))
    return bool(files) and all(f.stat().st_mtime > than for f in files)


#: docs/cluster.md's SLURM commands in its order, with what each must redo (a glob under
#: the project whose files must all be newer afterwards), or None for nothing to do.
CLUSTER_COMMANDS = [
    (".venv/bin/snakemake --profile profiles/slurm -n", None),
    (".venv/bin/snakemake --profile profiles/slurm", None),
    (".venv/bin/snakemake --profile profiles/slurm --configfile my_config.yaml", None),
    ("snakemake --profile profiles/slurm --forcerun train", "results/train/*/seed*/fold*/best.pt"),
    ("snakemake --profile profiles/slurm --forcerun evaluate", "results/evaluation/metrics.csv"),
    (
        "snakemake --profile profiles/slurm --forcerun predict_fold --until predict_fold",
        "results/predictions/*/seed*/fold*/*.nii.gz",
    ),
    ("snakemake --profile profiles/slurm results/train/finetune/seed1/fold0/best.pt", None),
    ("snakemake --profile profiles/slurm results/predictions/finetune/seed1/fold0", None),
    (
        "snakemake --profile profiles/slurm results/evaluation/finetune/seed1/fold0.csv",
        "results/evaluation/finetune/seed1/fold0.csv",
    ),
    ("snakemake --profile profiles/slurm results/train/finetune/seed1/fold{0,1}/best.pt", None),
    (
        "snakemake --profile profiles/slurm --force results/train/finetune/seed1/fold1/best.pt",
        "results/train/finetune/seed1/fold1/best.pt",
    ),
    (
        "sinfo; .venv/bin/snakemake --profile profiles/slurm --slurm-status-command squeue",
        "results/report/report.html",
    ),
    ("snakemake --profile profiles/slurm", None),
]


def test_cluster_commands_are_the_documented_ones() -> None:
    documented = {d.text for d in documented_commands() if "profiles/slurm" in d.text}
    assert documented == {command for command, _ in CLUSTER_COMMANDS}


@pytest.mark.slow
def test_documented_cluster_commands(
    cluster: slurm.SlurmCluster, project: Path, request: pytest.FixtureRequest
) -> None:
    """Every SLURM command of docs/cluster.md, exactly as printed, from a shell without the
    virtual environment on PATH, in the docs' order, on a finished run: "run it" finds
    nothing to do; `--forcerun train` retrains every arm and fold through SLURM, and gives
    the local run's results bit for bit; then reruns, one arm, one fold, the test cluster."""
    shutil.copy(project / "config" / "config.yaml", project / "my_config.yaml")
    for command, redone in CLUSTER_COMMANDS:
        started = time.time()
        time.sleep(1.1)  # file times of the redone outputs must be after `started`
        status, text = run_documented(
            command, project, env=cluster.environ(), timeout=SLURM_TIMEOUT_S
        )
        assert status == 0, f"`{command}` failed:\n{text[-6000:]}\n{cluster.log_tails()}"
        assert "Traceback" not in text, text[-6000:]
        if redone is None:
            assert "Nothing to be done" in text, f"`{command}`:\n{text[-4000:]}"
        else:
            assert _newer(project, redone, started), f"`{command}` redid no {redone}"
        if command.endswith("--forcerun train"):
            _check_jobs_went_through_slurm(cluster, text, project)
            local = request.getfixturevalue("micro_run").results
            local.assert_same_as(type(local)(project / "results"))
