"""benchmarks/startup.py: start-up per command, parsed from ``python -X importtime``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import startup
from bench_table import ratio_rows, row_lines
from compare_nnunet import parse_args

REPO = Path(__file__).resolve().parents[2]

SNAKEMAKE_OUTPUT = """\
rule split:
Shell command: /v/python -m medtl split --manifest m.tsv --out f.json --folds 2 > logs/s.log 2>&1
Shell command: medtl_job 1 logs/p.log /v/bin/python -m medtl plan --manifest m.tsv --out p.json
Shell command: medtl_job 1 logs/t.log /v/bin/python -m medtl train --arm a --settings '{"x": 1}'
Shell command: medtl_job 1 logs/t2.log /v/bin/python -m medtl train --arm b
Shell command: rm -rf somewhere
"""


def test_job_commands_takes_one_line_per_command_without_wrapper_or_log() -> None:
    found = startup.job_commands(SNAKEMAKE_OUTPUT)
    assert found == {
        "split": "split --manifest m.tsv --out f.json --folds 2",
        "plan": "plan --manifest m.tsv --out p.json",
        "train": "train --arm a --settings '{\"x\": 1}'",
    }


def test_parse_importtime_of_a_real_interpreter() -> None:
    code = "import json, email.message"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True
    )
    parsed = startup.parse_importtime(done.stderr)
    assert parsed["torch"] is False and parsed["monai"] is False
    # every import of the process is counted once: the top-level lines' cumulative times
    assert 0 < parsed["import_s"] < 60


def test_summary_median_and_range_over_repeats() -> None:
    runs = [
        {"wall_s": w, "import_s": i, "torch": t, "monai": False}
        for w, i, t in ((3.0, 1.0, False), (1.0, 2.0, True), (2.0, 3.0, False))
    ]
    s = startup.summary(runs)
    assert s["wall_s"]["median"] == 2.0 and (s["wall_s"]["min"], s["wall_s"]["max"]) == (1, 3)
    assert s["import_s"]["runs"] == [1.0, 2.0, 3.0]
    assert s["torch"] is True and s["monai"] is False and s["repeats"] == 3


def test_startup_rows_in_the_bench_table_and_part_of_make_bench() -> None:
    runs = [{"wall_s": 2.0, "import_s": 1.5, "torch": True, "monai": False}] * 3
    res = {"startup": {"train": {"args": "train", **startup.summary(runs)}}}
    (row,) = ratio_rows(res)
    assert row["measure"] == "start-up `medtl train`: imports (s; torch)"
    assert row["medtl"] == 1.5 and row["peer"] is None
    # no peer: one dash in its column, and the spread of medtl's runs alone
    assert row_lines([row]) == [
        "| start-up `medtl train`: imports (s; torch) | 1.50 | – | – | lower |  |  | 1.50–1.50 |"
    ]
    assert "startup" in parse_args([]).only


def test_help_runs_alone() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "startup.py"), "--help"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and "-X importtime" in done.stdout, done.stderr
