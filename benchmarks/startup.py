"""Start-up per command: what each `medtl` command a workflow job runs pays before its work.

Every Snakemake job starts a fresh Python that imports what its command needs; torch and
MONAI take seconds to import. This script runs the micro workflow
(``tests/pipeline/config_micro.yaml``) once in a temporary folder, takes from Snakemake's
printed shell commands the command line of one job per ``medtl`` command, and runs each of
them again ``--repeats`` times in a fresh interpreter under ``python -X importtime``::

    .venv/bin/python benchmarks/startup.py             # a table, printed
    .venv/bin/python benchmarks/startup.py --json out.json

Per command it reports the wall of the whole run, the import time (the sum of the
top-level cumulative import times, i.e. everything the process imported) and whether
torch and MONAI were imported: median and min–max over the repeats. It is also the part
``startup`` of ``make bench`` (``compare_nnunet.py --only startup``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MICRO = ROOT / "tests" / "pipeline" / "config_micro.yaml"
#: A line of ``-X importtime``: self and cumulative microseconds, indent, module.
IMPORT_LINE = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|( +)(\S+)$")
HEAVY = ("torch", "monai")


def parse_importtime(stderr: str) -> dict:
    """Import time (s, top-level cumulative times summed) and which of HEAVY were imported.

    Example:
        >>> text = "import time: 5 | 2000000 | torch\\nimport time: 1 | 9 |   torch.nn\\n"
        >>> parse_importtime(text)
        {'import_s': 2.0, 'torch': True, 'monai': False}
    """
    total_us, names = 0, set()
    for line in stderr.splitlines():
        m = IMPORT_LINE.match(line)
        if not m:
            continue
        names.add(m[4])
        if len(m[3]) == 1:  # one space: imported at the top level, not by another import
            total_us += int(m[2])
    return {"import_s": total_us / 1e6, **{h: h in names for h in HEAVY}}


def job_commands(snakemake_output: str) -> dict[str, str]:
    """The first job's shell command of each ``medtl`` command, from ``snakemake -p``'s
    output, as ``medtl ARGS`` without the interpreter, wrapper or log redirection.

    Example:
        >>> out = "Shell command: medtl_job 1 l.log /v/python -m medtl plan --out p > x 2>&1"
        >>> job_commands(out)
        {'plan': 'plan --out p'}
    """
    found: dict[str, str] = {}
    for line in snakemake_output.splitlines():
        if not line.startswith("Shell command:") or " -m medtl " not in line:
            continue
        args = line.split(" -m medtl ", 1)[1]
        args = re.split(r"\s+>\s*\S+\s+2>&1", args)[0].strip()
        name = args.split()[0]
        found.setdefault(name, args)
    return found


def run_micro(work: Path, cores: int) -> str:
    """Run the micro workflow in ``work``; Snakemake's output (with its shell commands)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]
    cmd += ["--directory", str(work), "--configfile", str(MICRO), "--cores", str(cores), "-p"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    out = done.stdout + done.stderr
    (work / "snakemake.log").write_text(out)
    if done.returncode != 0:
        sys.exit(
            f"the micro workflow failed (exit {done.returncode}); expected a finished run to "
            f"time its commands. Its output: {work / 'snakemake.log'}\n{out[-2000:]}"
        )
    return out


def time_command(work: Path, args: str) -> dict:
    """One run of ``medtl ARGS`` in a fresh interpreter in ``work``: wall, imports."""
    cmd = [sys.executable, "-X", "importtime", "-m", "medtl", *shlex.split(args)]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=dict(os.environ))
    wall = time.perf_counter() - start
    if done.returncode != 0:
        tail = [line for line in done.stderr.splitlines() if not line.startswith("import time")]
        sys.exit(f"medtl {args} failed (exit {done.returncode}):\n" + "\n".join(tail[-20:]))
    return {"wall_s": wall, **parse_importtime(done.stderr)}


def summary(runs: list[dict]) -> dict:
    """Median and min–max of wall and import time over repeats; torch/monai as imported."""
    out: dict = {"repeats": len(runs)}
    for key in ("wall_s", "import_s"):
        values = [r[key] for r in runs]
        out[key] = {
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
            "runs": values,
        }
    for heavy in HEAVY:
        out[heavy] = any(r[heavy] for r in runs)
    return out


def measure(
    work: Path, repeats: int = 3, cores: int = 2, say=print, reuse=False, only=None
) -> dict:
    """Run the micro workflow in ``work`` (with ``reuse``, take the finished one there),
    then time each command (those in ``only``, if given) ``repeats`` times."""
    work.mkdir(parents=True, exist_ok=True)
    log = work / "snakemake.log"
    if reuse and log.is_file():
        say(f"startup: the finished micro run in {work}")
        out = log.read_text()
    else:
        say(f"startup: the micro workflow in {work}")
        out = run_micro(work, cores)
    commands = job_commands(out)
    unknown = set(only or ()) - set(commands)
    if unknown:
        sys.exit(f"--only: expected commands of the micro run {sorted(commands)}, got {unknown}")
    commands = {k: v for k, v in commands.items() if not only or k in only}
    results = {}
    for name, args in commands.items():
        say(f"startup: medtl {name} × {repeats}")
        runs = [time_command(work, args) for _ in range(repeats)]
        results[name] = {"args": args, **summary(runs)}
    return results


def table(results: dict) -> str:
    """The per-command table, as Markdown.

    Example:
        >>> r = {"split": {"wall_s": {"median": 1, "min": 0.9, "max": 1.2},
        ...      "import_s": {"median": 0.5, "min": 0.4, "max": 0.6}, "torch": False,
        ...      "monai": False, "repeats": 3}}
        >>> print(table(r).splitlines()[2])
        | `medtl split` | 1.00 (0.90–1.20) | 0.50 (0.40–0.60) | no | no |
    """

    def cell(v: dict) -> str:
        return f"{v['median']:.2f} ({v['min']:.2f}–{v['max']:.2f})"

    lines = [
        "| command | wall (s), median (min–max) | imports (s), median (min–max) | torch | MONAI |",
        "|---|---|---|---|---|",
    ]
    for name, r in results.items():
        yes = {True: "yes", False: "no"}
        row = [f"`medtl {name}`", cell(r["wall_s"]), cell(r["import_s"])]
        lines.append("| " + " | ".join(row + [yes[r["torch"]], yes[r["monai"]]]) + " |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeats", type=int, default=3, help="runs of each command (default 3)")
    ap.add_argument("--cores", type=int, default=2, help="cores of the micro workflow run")
    ap.add_argument("--work", help="folder for the micro run (default: a temporary one)")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="time the commands of the finished micro run in --work (its snakemake.log) "
        "instead of running it again",
    )
    ap.add_argument("--only", help="commands to time, comma-separated (default: every one)")
    ap.add_argument("--json", help="also write the results to this JSON file")
    a = ap.parse_args(argv)
    a.only = [x.strip() for x in a.only.split(",") if x.strip()] if a.only else None
    if a.reuse and not a.work:
        ap.error("--reuse: expected --work, the folder of a finished micro run; got none")
    if a.repeats < 1:
        ap.error(f"--repeats: expected 1 or more, got {a.repeats}")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="medtl-startup-") as tmp:
        results = measure(Path(a.work or tmp), a.repeats, a.cores, reuse=a.reuse, only=a.only)
    print(table(results))
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
