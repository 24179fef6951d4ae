"""``make bench-clinical``'s pure parts: the generated CT-like cases, its options, and its
table from a canned results dict (rows, spread, met / not met, the refusals).

The run itself needs nnU-Net and the better part of an hour; these tests check what
generates its data and what turns its measurements into the published table.
"""

from __future__ import annotations

from pathlib import Path

import compare_clinical  # benchmarks/, on the path by pyproject.toml's pytest settings
import nibabel as nib
import numpy as np
import pandas as pd
from clinical_data import AIR, BONE, LESION, LUNG, ClinicalSpec, phantom, write_cases
from clinical_table import END, START, clinical_markdown, clinical_rows

from tests.benchmarks.canned import QUIET, VERSIONS

SMALL = ClinicalSpec(cases=2, shape=(128, 128, 40), spacing=(3.2, 3.2, 7.5), seed=5)


def test_cases_have_the_grid_tissues_and_labelled_lesions(tmp_path: Path) -> None:
    sheet = write_cases(tmp_path, SMALL)
    rows = pd.read_csv(sheet, sep="\t")
    assert list(rows.columns) == ["image", "label", "patient", "case_id"]
    assert len(rows) == 2 and rows["patient"].nunique() == 2
    for _, row in rows.iterrows():
        image = nib.load(str(tmp_path / row["image"]))
        label = np.asanyarray(nib.load(str(tmp_path / row["label"])).dataobj)
        assert image.shape == SMALL.shape == label.shape
        assert np.allclose(image.header.get_zooms(), SMALL.spacing)
        hu = np.asanyarray(image.dataobj).astype(np.float32)
        assert set(np.unique(label)) == {0, 1}
        # lesions: 10-40 mm across, so at least one voxel each at 3.2 mm, at most a few %
        assert 0 < label.sum() < 0.05 * label.size
        assert abs(np.median(hu[label == 1]) - LESION) < 20
        assert abs(hu[0, 0, 0] - AIR) < 100  # a corner is air
        assert (hu < LUNG + 100).sum() > 0.05 * hu.size  # air and lungs
        assert (hu > BONE - 100).sum() > 0  # the spine
        assert hu.min() >= -1024 and hu.max() <= 3071


def test_cases_are_deterministic_and_differ_between_cases() -> None:
    a_hu, a_label = phantom(SMALL, 0)
    b_hu, b_label = phantom(SMALL, 0)
    assert np.array_equal(a_hu, b_hu) and np.array_equal(a_label, b_label)
    c_hu, _ = phantom(SMALL, 1)
    assert not np.array_equal(a_hu, c_hu)


def test_lesions_keep_their_size_in_mm_at_another_spacing() -> None:
    coarse = ClinicalSpec(cases=1, shape=(96, 96, 30), spacing=(4.0, 4.0, 10.0), seed=2)
    fine = ClinicalSpec(cases=1, shape=(192, 192, 60), spacing=(2.0, 2.0, 5.0), seed=2)
    vol = [phantom(s, 0)[1].sum() * np.prod(s.spacing) for s in (coarse, fine)]
    assert abs(vol[0] - vol[1]) < 0.35 * vol[1]


def test_options_and_their_defaults() -> None:
    a = compare_clinical.parse_args([])
    assert (a.cases, a.shape, a.spacing) == (4, (512, 512, 120), (0.8, 0.8, 2.5))
    assert a.repeats == 3 and a.only == {"preprocess", "inference", "dicom"}
    # nnU-Net's planner gets the same target spacing, in its z, y, x order
    assert a.nnunet_plan_args == [
        "-overwrite_target_spacing",
        "5",
        "2.5",
        "2.5",
        "-overwrite_plans_name",
        "nnUNetPlans_clinical",
    ]
    assert a.plans == "nnUNetPlans_clinical"
    a = compare_clinical.parse_args(["--shape", "128,128,40", "--target-spacing", "3,3,6"])
    assert a.shape == (128, 128, 40) and a.nnunet_plan_args[1:4] == ["6", "3", "3"]


def _timing(wall: list[float], mem: float = 900.0) -> dict:
    return {
        "wall_s": float(np.median(wall)),
        "cpu_s": 2 * float(np.median(wall)),
        "peak_rss_mb": mem,
        "walls": wall,
        "cpus": [2 * w for w in wall],
    }


def _infer(s_case: float, dice: float, mem: float) -> dict:
    runs = [s_case * 0.9, s_case, s_case * 1.2]
    return {
        "s_per_case": s_case,
        "s_per_case_runs": runs,
        "s_per_case_with_startup": s_case + 5,
        "startup_s": 10.0,
        "startup_runs": [9.0, 10.0, 11.0],
        "walls": [30.0, 31.0, 33.0],
        "peak_rss_mb": mem,
        "dice": dice,
    }


def results(others: float = 0.02, only=("dicom", "inference", "preprocess")) -> dict:
    res = {
        "versions": VERSIONS,
        "data": "4 generated CT-like cases",
        "shape": [512, 512, 120],
        "native_spacing": [0.8, 0.8, 2.5],
        "fold": 0,
        "repeats": 3,
        "only": list(only),
        "all_parts": ["dicom", "inference", "preprocess"],
        "total_min": 38.0,
        "model": {"name": "basicunet"},
        "patch": [64, 64, 32],
        "spacing": {
            "medtl": [2.5, 2.5, 5.0],
            "nnunet": [2.5, 2.5, 5.0],
            "nnunet_patch_xyz": [160, 160, 56],
            "nnunet_batch": 2,
        },
        "quiet": {**QUIET, "others_share": others},
        "preprocess": {"medtl": _timing([10.0, 11.0, 14.0]), "nnunet": _timing([40, 42, 50])},
        "training": {
            "medtl": {"steps": 150, "wall_s": 200.0},
            "nnunet": {"epochs": 3, "iters": 10, "wall_s": 400.0},
        },
        "inference": {
            "cases": 2,
            "medtl_arm": "scratch",
            # TTA off: 4x faster at better Dice (met); TTA on: faster but worse Dice (not met)
            "no_tta": {"medtl": _infer(2.0, 0.6, 1500.0), "nnunet": _infer(8.0, 0.5, 3000.0)},
            "tta": {"medtl": _infer(5.0, 0.4, 1600.0), "nnunet": _infer(40.0, 0.5, 3100.0)},
        },
        "dicom": {
            "n_series": 4,
            "n_files": 480,
            "total_mb": 250.0,
            "series_set": {"size": 512, "slices": 120},
            "agreement": {"agree": True},
            "medtl": {"median": {"wall_s": 6.0}, "runs": [{"wall_s": w} for w in (5.5, 6, 7)]},
            "dcm2niix": {
                "median": {"wall_s": 3.0},
                "runs": [{"wall_s": w} for w in (2.9, 3, 3.5)],
                "version": "v1.0",
            },
        },
    }
    return res


def test_rows_targets_and_spread() -> None:
    rows = {r["measure"]: r for r in clinical_rows(results())}
    pre = rows["preprocessing wall (s)"]
    assert pre["ratio"] == 11.0 / 42 and pre["met"] is True
    assert pre["spread"] == ([10.0, 11.0, 14.0], [40, 42, 50])
    off = rows["inference s/case after start-up, TTA off"]
    on = rows["inference s/case after start-up, TTA on (8 mirrors)"]
    assert off["ratio"] == 0.25 and off["met"] is True
    assert on["ratio"] == 0.125 and on["met"] is False  # faster, but a lower Dice
    mem = rows["inference peak memory (MiB), TTA on (8 mirrors)"]
    assert (mem["medtl"], mem["peer"]) == (1600.0, 3100.0)
    dcm = next(r for m, r in rows.items() if m.startswith("DICOM"))
    assert dcm["ratio"] == 2.0 and dcm["met"] is False and dcm["peer_name"] == "dcm2niix"
    text = clinical_markdown(results())
    assert "| yes |" in text and "| **no** |" in text
    assert "10.00–14.00; 40.00–50.00" in text  # min–max of both sides
    assert "medtl ran at 2.5 × 2.5 × 5 mm, nnU-Net at 2.5 × 2.5 × 5 mm" in text
    assert "trained on a 64 × 64 × 32 patch." in text  # a run that recorded no windows


def test_the_notes_say_how_medtl_windows_covered_the_cases() -> None:
    res = results()
    res["inference"] |= {
        "window": "image",
        "windows": [
            {"shape": [164, 160, 60], "window": [164, 160, 60], "count": 1},
            {"shape": [300, 200, 60], "window": [200, 200, 60], "count": 2},
        ],
    }
    text = clinical_markdown(res)
    assert (
        "trained on a 64 × 64 × 32 patch and predicts with `--window image` (held-out cases: "
        "164 × 160 × 60 in 1 window of 164 × 160 × 60; 300 × 200 × 60 in 2 windows of "
        "200 × 200 × 60)." in text
    )


def _argv(tmp_path: Path, res: dict, *extra: str) -> tuple[list[str], Path]:
    import json

    src = tmp_path / "results.json"
    src.write_text(json.dumps(res))
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\n## Clinical sizes\n\n{START}\nold\n{END}\n")
    return ["--from-json", str(src), "--out", str(doc), *extra], doc


def test_a_quiet_full_run_writes_the_docs(tmp_path: Path) -> None:
    argv, doc = _argv(tmp_path, results())
    assert compare_clinical.main(argv) == 0
    text = doc.read_text()
    assert "\nold\n" not in text and "inference peak memory" in text
    assert text.count(START) == 1 and text.count(END) == 1


def test_a_disturbed_run_leaves_the_docs(tmp_path: Path, capsys) -> None:
    argv, doc = _argv(tmp_path, results(others=0.4))
    assert compare_clinical.main(argv) == 3
    assert "\nold\n" in doc.read_text()
    assert "not written" in capsys.readouterr().err


def test_a_partial_run_only_prints(tmp_path: Path, capsys) -> None:
    res = results(only=("dicom",))
    del res["preprocess"], res["inference"], res["training"]
    argv, doc = _argv(tmp_path, res, "--allow-disturbed")
    assert compare_clinical.main(argv) == 0
    assert "\nold\n" in doc.read_text()
    out = capsys.readouterr()
    assert "DICOM → NIfTI" in out.out
    assert "not written: a partial run (--only leaves out inference, preprocess)" in out.out
