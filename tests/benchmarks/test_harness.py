"""The benchmark harness's own machinery: timing, the ratio table, the docs update.

The benchmark itself (``make bench``) needs nnU-Net and half an hour; these tests check
the parts that turn its measurements into the published table.
"""

from __future__ import annotations

import sys
from pathlib import Path

import compare_nnunet  # benchmarks/, on the path by pyproject.toml's pytest settings
import pytest
from measure import CommandFailed, Timing, median_timing, run_timed

from tests.benchmarks.canned import VERSIONS


def test_run_timed_measures_cpu_and_memory_of_children(tmp_path: Path) -> None:
    # a child process that burns CPU and holds ~50 MB: both must show in the parent's figures
    code = (
        "import subprocess, sys; subprocess.run([sys.executable, '-c', "
        "'b = bytearray(50 * 2**20); s = sum(range(3 * 10**6)); import time; time.sleep(0.6)'])"
    )
    t = run_timed([sys.executable, "-c", code], poll_s=0.05)
    assert t.returncode == 0
    assert t.cpu_s > 0.05
    assert t.wall_s >= 0.6
    assert t.peak_rss_mb > 50


def test_run_timed_names_the_log_of_a_failed_command(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    with pytest.raises(CommandFailed, match="x.log"):
        run_timed([sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], log=log)
    assert "boom" in log.read_text()


def test_run_timed_stops_a_command_when_asked() -> None:
    t = run_timed(
        [sys.executable, "-c", "import time; time.sleep(30)"],
        on_poll=lambda elapsed: elapsed > 0.3,
        poll_s=0.05,
    )
    assert t.wall_s < 10
    assert t.returncode != 0  # killed, and not raised: the caller asked for it


def test_median_timing() -> None:
    m = median_timing([Timing(1, 4, 10, 0), Timing(5, 2, 30, 0), Timing(2, 3, 20, 0)])
    assert (m["wall_s"], m["cpu_s"], m["peak_rss_mb"], m["repeats"]) == (2, 3, 20, 3)
    assert m["walls"] == [1, 5, 2] and m["cpus"] == [4, 2, 3]  # the min–max column's values


def _results() -> dict:
    timing = {"wall_s": 4.0, "cpu_s": 3.0, "peak_rss_mb": 100.0, "walls": [4.2, 3.9, 4.0]}
    peer = {"wall_s": 40.0, "cpu_s": 60.0, "peak_rss_mb": 1000.0, "walls": [40.0, 45.0, 38.0]}
    infer = {
        "medtl": {"s_per_case": 0.2, "s_per_case_with_startup": 1.5, "startup_s": 9, "dice": 0.8},
        "nnunet": {"s_per_case": 0.3, "s_per_case_with_startup": 3.0, "startup_s": 18, "dice": 0.7},
    }
    return {
        "versions": VERSIONS,
        "data": "demo",
        "fold": 0,
        "repeats": 3,
        "total_min": 30.0,
        "preprocess": {"medtl": timing, "nnunet": peer},
        "budgets": {
            "budgets_min": [1, 5],
            "test_cases": 7,
            "nnunet": {"dice": [0.1, 0.75], "epochs_run": 9, "epochs_planned": 10},
            "scratch": {"dice": [0.5, 0.7], "steps_run": 500, "steps_planned": 500},
            "finetune": {"dice": [0.7, 0.8], "steps_run": 500, "steps_planned": 500},
        },
        "inference": {"cases": 7, "no_tta": infer, "tta": infer, "onnx": _onnx()},
    }


def _onnx() -> dict:
    """The ONNX part of ``inference``: ONNX Runtime against eager PyTorch on the CPU."""
    masks = {"identical_voxels": 0.99999, "lowest_case": 0.9999, "voxels": 10**6}
    ort = {"s_per_case": 0.03, "startup_s": 10.5, "s_per_case_with_startup": 1.5, "dice": 0.8}
    eager = {"s_per_case": 0.2, "startup_s": 9.0, "s_per_case_with_startup": 1.5, "device": "cpu"}
    return {
        "export_s": 12.5,
        "no_tta": {"onnxruntime": ort, "torch": eager, "masks": masks},
        "tta": {"onnxruntime": {**ort, "s_per_case": 0.9}, "torch": eager, "masks": masks},
    }


def test_ratio_rows_check_the_targets() -> None:
    rows = {r["measure"]: r for r in compare_nnunet.ratio_rows(_results())}
    pre = rows["preprocessing wall (s)"]
    assert pre["ratio"] == pytest.approx(0.1) and pre["met"] is True
    # the target of equal budgets is judged on the best arm at the largest budget only
    assert rows["Dice after 5 min of training: medtl finetune"]["met"] is True
    assert rows["Dice after 5 min of training: medtl scratch"]["met"] is None
    assert rows["Dice after 1 min of training: medtl finetune"]["met"] is None
    # 0.2 / 0.3 s per case is not 2x faster: the table must say the target was missed
    assert rows["inference s/case after start-up, TTA off"]["met"] is False


def test_write_doc_replaces_only_between_the_markers(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(
        "# Benchmarks\n\nhand-written\n\n"
        "<!-- bench:start -->\nstale table\n<!-- bench:end -->\n\nmore\n"
    )
    body = compare_nnunet.markdown(_results())
    compare_nnunet.write_doc(doc, body)
    text = doc.read_text()
    assert "stale table" not in text and "hand-written" in text and text.endswith("more\n")
    assert "| preprocessing wall (s) | 4.00 | nnU-Net 40.00 | 0.10 |" in text
    assert "**no**" in text  # the missed inference target is visible


ORT_ROW = "inference s/case after start-up, ONNX Runtime vs eager PyTorch (CPU), {}"


def test_onnx_rows_give_the_ratio_without_a_target() -> None:
    rows = {r["measure"]: r for r in compare_nnunet.ratio_rows(_results())}
    tta = rows[ORT_ROW.format("TTA on (8 mirrors)")]
    assert tta["ratio"] == pytest.approx(0.9 / 0.2)
    assert (tta["name"], tta["peer_name"], tta["better"]) == ("ONNX Runtime", "PyTorch", "lower")
    assert tta["target"] == "" and tta["met"] is None  # a measure, not a promise
    assert rows[ORT_ROW.format("TTA off")]["ratio"] == pytest.approx(0.03 / 0.2)


def test_onnx_rows_in_the_markdown() -> None:
    text = compare_nnunet.markdown(_results())
    assert (
        f"| {ORT_ROW.format('TTA on (8 mirrors)')} | 0.90 | PyTorch 0.20 | 4.50 | lower |  |  |"
        in text
    )
    # 0.03 s per case is below the noise of (all − one) / (n − 1): no figure, no ratio
    off = ORT_ROW.format("TTA off") + " (ONNX Runtime: below 0.05 s, the noise of the estimate)"
    assert f"| {off} | – | PyTorch 0.20 | – | lower |  |  |" in text
    assert "exported once by `medtl export-onnx` (12.5 s, not in the rows)" in text
    assert "masks identical to PyTorch's in 99.999 % of voxels (lowest case 99.990 %)" in text


def test_a_peer_below_the_noise_is_blanked_too() -> None:
    res = _results()
    res["inference"]["onnx"]["tta"]["torch"] = {**res["inference"]["onnx"]["tta"]["torch"],
                                                "s_per_case": 0.01}  # fmt: skip
    text = compare_nnunet.markdown(res)
    row = (
        ORT_ROW.format("TTA on (8 mirrors)") + " (PyTorch: below 0.05 s, the noise of the estimate)"
    )
    assert f"| {row} | 0.90 | PyTorch – | – | lower |  |  |" in text


def test_results_of_earlier_runs_have_no_onnx_rows() -> None:
    res = _results()
    del res["inference"]["onnx"]  # results.json of a run before the ONNX rows (--from-json)
    measures = [r["measure"] for r in compare_nnunet.ratio_rows(res)]
    assert not [m for m in measures if "ONNX" in m]
    assert "ONNX Runtime" not in compare_nnunet.markdown(res)


def test_per_case_separates_the_start_up() -> None:
    from bench_medtl import per_case

    # 7 cases take 13 s, one takes 10 s: 0.5 s per further case, 9.5 s of start-up
    t = per_case([Timing(13, 1, 1, 0), Timing(14, 1, 1, 0)], [Timing(10, 1, 1, 0)], 7)
    assert t["s_per_case"] == pytest.approx((13.5 - 10) / 6)
    assert t["startup_s"] == pytest.approx(10 - (13.5 - 10) / 6)
    assert t["s_per_case_with_startup"] == pytest.approx(13.5 / 7)
    # the min–max column: each repeat's own estimate, as far as both kinds of run go
    assert t["s_per_case_runs"] == pytest.approx([(13 - 10) / 6])
    assert t["startup_runs"] == pytest.approx([10 - 3 / 6])


def test_identical_voxels_over_the_cases(tmp_path: Path) -> None:
    import nibabel as nib
    import numpy as np
    from bench_medtl import identical_voxels

    for engine, flip in (("torch", 0), ("ort", 3)):
        (tmp_path / engine).mkdir()
        for case in ("a", "b"):
            mask = np.zeros((4, 5, 5), np.uint8)
            if case == "b":
                mask.flat[:flip] = 1  # 3 of b's 100 voxels differ
            nib.save(nib.Nifti1Image(mask, np.eye(4)), tmp_path / engine / f"{case}.nii.gz")
    agree = identical_voxels(tmp_path / "torch", tmp_path / "ort", ["a", "b"])
    assert agree == {"identical_voxels": 197 / 200, "lowest_case": 0.97, "voxels": 200}


def test_onnx_runtime_is_compared_with_pytorch_on_the_cpu(tmp_path: Path) -> None:
    """On a GPU run, PyTorch also runs on the CPU: ONNX Runtime's baseline, same cores."""
    from argparse import Namespace

    from bench_common import Bench
    from bench_medtl import medtl_tools

    b = Bench(Namespace(work=tmp_path, nnunet_venv=tmp_path, threads=2))
    sheets, model, onnx = {1: tmp_path / "s.tsv"}, tmp_path / "m", tmp_path / "o"
    assert list(medtl_tools(b, sheets, model, onnx, "scratch", False, "cpu")) == [
        "medtl",
        "onnxruntime",
    ]
    assert list(medtl_tools(b, sheets, model, onnx, "scratch", True, "cuda")) == [
        "medtl",
        "medtl_cpu",
        "onnxruntime",
    ]


def test_timed_rows_give_min_and_max_over_repeats() -> None:
    text = compare_nnunet.markdown(_results())
    spread = "min–max over repeats (medtl; peer)"
    assert f"| measure | medtl | peer | medtl / peer | better | target | met | {spread} |" in text
    wall = "| preprocessing wall (s) | 4.00 | nnU-Net 40.00 | 0.10 | lower |"
    assert f"{wall} ≤ 0.33 (≥ 3× faster) | yes | 3.90–4.20; 38.00–45.00 |" in text
    # the canned CPU times have no per-repeat values (a run before they were kept)
    assert "| preprocessing CPU (s) | 3.00 | nnU-Net 60.00 | 0.05 | lower |  |  | –; – |" in text
    # a Dice is not a timing: no spread
    assert "| Dice after 5 min of training: medtl finetune | 0.800 | nnU-Net 0.750 " in text
    assert "| ≥ 1 (best arm, largest budget) | yes |  |" in text
