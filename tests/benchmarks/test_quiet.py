"""The benchmarks' quietness record: what other processes used, the rule, and the refusal
to write docs/benchmarks.md from a disturbed run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import compare_nnunet  # benchmarks/, on the path by pyproject.toml's pytest settings
import pytest
from bench_quiet import LOAD_PER_CORE, QuietSampler, is_quiet
from bench_table import markdown, partial_run, publish, table_head

from tests.benchmarks.canned import QUIET, VERSIONS

#: One clock tick: the unit of /proc's CPU times; each of the two readings rounds by one.
TICK = 1 / os.sysconf("SC_CLK_TCK")

# burns CPU for ~0.4 s of its own time, then prints that time as the kernel counts it
_BUSY = (
    "import os, time\n"
    "while sum(os.times()[:2]) < 0.4:\n"
    "    sum(range(10**4))\n"
    "print(sum(os.times()[:2]))\n"
)


def test_sampler_counts_a_child_as_the_benchmarks_own() -> None:
    with QuietSampler(interval_s=0.05) as s:
        out = subprocess.run([sys.executable, "-c", _BUSY], capture_output=True, text=True)
    child = float(out.stdout)
    q = s.result
    # the child's CPU is the benchmark's own, not another process's
    assert q.own_cpu_s >= child - 2 * TICK
    # nothing uses more than the machine has
    assert q.own_cpu_s <= q.wall_s * q.cores + 2 * TICK
    assert q.others_cpu_s == pytest.approx(max(0.0, q.machine_cpu_s - q.own_cpu_s))
    assert q.others_share == pytest.approx(q.others_cpu_s / (q.wall_s * q.cores))


def test_the_rule_needs_both_few_others_and_a_low_load_before() -> None:
    assert is_quiet(QUIET, 0.10)
    assert not is_quiet(QUIET, 0.02)  # others used exactly 2 %: not under 2 %
    assert not is_quiet({**QUIET, "load_before": LOAD_PER_CORE * QUIET["cores"]}, 0.10)


def _nnunet_results(others: float) -> dict:
    """A results.json of ``make bench`` with only the DICOM part, ``others`` the share of
    the CPU that other processes used."""
    runs = [{"wall_s": w} for w in (2.0, 2.5, 3.0)]
    return {
        "versions": VERSIONS,
        "data": "demo",
        "fold": 0,
        "repeats": 3,
        "total_min": 40.0,
        "quiet": {**QUIET, "others_share": others, "others_cpu_s": others * 4800},
        "dicom": {
            "n_series": 2,
            "n_files": 100,
            "total_mb": 50.0,
            "compress": False,
            "medtl": {"median": {"wall_s": 2.5}, "runs": runs},
            "dcm2niix": {"median": {"wall_s": 2.0}, "runs": runs, "version": "v1"},
            "agreement": {"agree": True},
        },
    }


def _doc(tmp_path: Path) -> Path:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n<!-- bench:start -->\nold\n<!-- bench:end -->\n")
    return doc


def test_a_disturbed_run_leaves_the_docs_unless_allowed(tmp_path: Path, capsys) -> None:
    doc, res = _doc(tmp_path), tmp_path / "results.json"
    res.write_text(json.dumps(_nnunet_results(0.25)))
    before = doc.read_text()
    assert compare_nnunet.main(["--from-json", str(res), "--out", str(doc)]) == 3
    assert doc.read_text() == before
    out = capsys.readouterr()
    assert "| DICOM → NIfTI wall (s)" in out.out  # the table is still printed
    assert "other processes used 25.0 % of its CPU" in out.err
    assert "--busy-threshold" in out.err and "--allow-disturbed" in out.err

    # a higher threshold makes the same run quiet
    assert compare_nnunet.main(["--from-json", str(res), "--out", str(doc),
                                "--busy-threshold", "0.3"]) == 0  # fmt: skip
    assert ": quiet." in doc.read_text()

    assert compare_nnunet.main(["--from-json", str(res), "--out", str(doc),
                                "--allow-disturbed"]) == 0  # fmt: skip
    text = doc.read_text()
    assert "**disturbed (others used 25.0 % of the CPU)**" in text and "\nold\n" not in text


def test_a_quiet_run_writes_the_docs(tmp_path: Path) -> None:
    doc, res = _doc(tmp_path), tmp_path / "results.json"
    res.write_text(json.dumps(_nnunet_results(0.02)))
    assert compare_nnunet.main(["--from-json", str(res), "--out", str(doc)]) == 0
    text = doc.read_text()
    assert "| DICOM → NIfTI wall (s), 2 series / 100 files | 2.50 |" in text
    assert "2.00–3.00; 2.00–3.00 |" in text and ": quiet." in text


def test_results_without_a_quietness_record_need_allow_disturbed(tmp_path: Path, capsys) -> None:
    """A results.json of a run before the sampler (only load averages) cannot show that
    the machine was quiet."""
    doc, res = _doc(tmp_path), tmp_path / "results.json"
    old = {**_nnunet_results(0.0), "load_before": 2.2, "load_after": 3.96}
    del old["quiet"]
    res.write_text(json.dumps(old))
    before = doc.read_text()
    assert compare_nnunet.main(["--from-json", str(res), "--out", str(doc)]) == 3
    assert "no record of the machine's quietness" in capsys.readouterr().err
    assert doc.read_text() == before
    assert compare_nnunet.main(["--from-json", str(res), "--out", str(doc),
                                "--allow-disturbed"]) == 0  # fmt: skip
    assert "Quietness not measured: a run before the harness sampled it (load average 2.20 " in (
        doc.read_text()
    )


def test_a_partial_run_prints_its_table_and_leaves_the_docs(tmp_path: Path, capsys) -> None:
    """The docs table is only ever the output of one full run: ``--only`` prints only,
    and so does ``--from-json`` of a partial run's results (the run recorded its parts)."""
    doc = _doc(tmp_path)
    before = doc.read_text()
    every = ["budgets", "dicom", "inference", "preprocess", "startup", "throughput"]
    partial = _nnunet_results(0.02) | {"only": ["dicom"], "all_parts": every}
    args = compare_nnunet.parse_args(["--out", str(doc)])
    assert publish(partial, markdown, args) == 0
    assert doc.read_text() == before
    out = capsys.readouterr().out
    assert "| DICOM → NIfTI wall (s)" in out
    assert "not written: a partial run (--only leaves out budgets, inference, preprocess, " in out
    saved = tmp_path / "partial.json"
    saved.write_text(json.dumps(partial))
    assert compare_nnunet.main(["--from-json", str(saved), "--out", str(doc)]) == 0
    assert doc.read_text() == before
    full = _nnunet_results(0.02) | {"only": every, "all_parts": every}
    assert partial_run(full) == "" and publish(full, markdown, args) == 0
    assert doc.read_text() != before


def test_the_head_says_how_many_repeats_each_part_had() -> None:
    res = _nnunet_results(0.02)
    assert "medians over 3 repeats; " in table_head(res)[1]
    res["inference"] = {"cases": 7, "tta": {"medtl": {"repeats": 2}, "nnunet": {"repeats": 2}}}
    assert "medians over 3 repeats (2 for inference); " in table_head(res)[1]
    assert compare_nnunet.parse_args([]).infer_repeats == 3  # every timed row: >= 3 runs
