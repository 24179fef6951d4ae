"""Running the project as its tests do: the Snakefile on a config, and the commands the
docs print, in a copy of the project as a user has it.

Every test that starts Snakemake goes through :func:`run_snakemake`; every test that runs
a documented command, through :func:`copy_project` and :func:`run_documented`.

Example:
    >>> result = run_snakemake(tmp, "-n", configfile=MICRO)  # doctest: +SKIP
    >>> planned_rules(result)["train"]  # doctest: +SKIP
    2
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: The micro config (tests/pipeline/config_micro.yaml): the smallest whole run.
MICRO = REPO / "tests" / "pipeline" / "config_micro.yaml"
#: The environment these tests run in, and its programs.
VENV = Path(sys.prefix)
BIN = Path(sys.executable).parent
# A micro run takes 1-3 minutes on 2 cores; these limits only catch a hung run.
LOCAL_TIMEOUT_S = 900
INTERRUPT_GRACE_S = 60
DOCUMENTED_TIMEOUT_S = 600


def run_snakemake(
    workdir: Path,
    *args: str,
    configfile: Path = MICRO,
    env: Mapping[str, str] | None = None,
    path: str | None = None,
    timeout: float = LOCAL_TIMEOUT_S,
) -> subprocess.CompletedProcess:
    """Run the project's Snakefile in ``workdir`` on ``configfile`` with ``args``.

    Snakemake and its jobs get ``env`` (default: this process's environment) with PATH
    ``path``, or by default the venv's programs first on its PATH. On timeout Snakemake
    gets SIGINT (it then cancels its jobs, locally or with scancel) and a minute to stop;
    only then is it killed. The result's returncode is then negative and its stderr ends
    with a note.
    """
    environ = dict(os.environ if env is None else env)
    environ["PATH"] = path if path is not None else f"{BIN}{os.pathsep}{environ.get('PATH', '')}"
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
    cmd += ["--directory", str(workdir), "--configfile", str(configfile), *args]
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


def planned_rules(result: subprocess.CompletedProcess) -> dict[str, int]:
    """Rule → job count from a dry run's job-stats table.

    Example:
        >>> table = "Job stats:\\njob  count\\n---  -----\\ntrain  4\\nall  1\\ntotal  5\\n"
        >>> planned_rules(subprocess.CompletedProcess([], 0, table, ""))
        {'train': 4, 'all': 1}
    """
    text = result.stdout + result.stderr
    table = text.split("Job stats:", 1)[1] if "Job stats:" in text else ""
    return {
        m[1]: int(m[2])
        for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)
        if m[1] not in ("total", "count")
    }


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
