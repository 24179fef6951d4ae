"""Segmentation metrics against hand-computed values, and the NIfTI-level evaluation."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from medtl.config import EvaluateConfig
from medtl.evaluate.arrays import case_metrics, dice_score
from medtl.evaluate.metrics import (
    METRIC_COLUMNS,
    EvaluationError,
    combine_metrics,
    evaluate_predictions,
    read_metrics,
    write_metrics,
)
from medtl.evaluate.surfaces import hd95_mm
from medtl.layout import predictions_dir

# MONAI 1.5-1.6 passes a deprecated argument to itself inside its surface functions.
pytestmark = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")

CLASSES = {1: "tumour"}
ROW_KEYS = METRIC_COLUMNS[METRIC_COLUMNS.index("case") + 1 :]  # every column after "case"


def cube(shape=(20, 20, 20), start=(5, 5, 5), size=(6, 6, 6), value=1) -> np.ndarray:
    arr = np.zeros(shape, dtype=np.int16)
    sl = tuple(slice(s, s + n) for s, n in zip(start, size, strict=True))
    arr[sl] = value
    return arr


def ball(radius: int, shape=(15, 15, 15)) -> np.ndarray:
    """Voxels whose index offset from the centre has x² + y² + z² ≤ radius²."""
    grid = np.indices(shape) - np.array([s // 2 for s in shape]).reshape(3, 1, 1, 1)
    return ((grid**2).sum(axis=0) <= radius**2).astype(np.int16)


def one(pred, ref, spacing=(1.0, 1.0, 1.0), cfg=None, classes=None) -> dict:
    rows = case_metrics(pred, ref, spacing, classes or CLASSES, cfg)
    assert all(list(r) == ROW_KEYS for r in rows)
    return rows[0]


@pytest.fixture
def strict_warnings():
    """Any warning (numpy's divide by zero, MONAI's empty-mask notice) fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# ------------------------------------------------------------------ overlap and volume


def test_dice_of_two_overlapping_cubes_is_exact():
    a = cube(start=(5, 5, 5), size=(6, 6, 6))  # 216 voxels
    b = cube(start=(8, 5, 5), size=(6, 6, 6))  # overlap 3 x 6 x 6 = 108
    assert dice_score(a, b) == pytest.approx(2 * 108 / (216 + 216))
    row = one(b, a)
    assert row["class"] == "tumour"
    assert row["dice"] == pytest.approx(0.5)
    assert row["iou"] == pytest.approx(108 / (216 + 216 - 108))


def test_identical_cube_scores_perfectly_and_volume_is_count_times_voxel(strict_warnings):
    spacing = (1.5, 1.5, 3.0)
    a = cube()  # 6 x 6 x 6 = 216 voxels of 6.75 mm³
    row = one(a, a, spacing)
    assert (row["dice"], row["iou"], row["nsd"]) == (1.0, 1.0, 1.0)
    assert (row["hd95"], row["assd"]) == (0.0, 0.0)
    assert row["volume_ref_ml"] == pytest.approx(216 * 1.5 * 1.5 * 3.0 / 1000)  # 1.458 ml
    assert row["volume_pred_ml"] == row["volume_ref_ml"]
    assert (row["volume_error_ml"], row["volume_error_rel"]) == (0.0, 0.0)
    assert (row["lesions_ref"], row["lesions_pred"], row["lesion_tp"]) == (1, 1, 1)
    assert (row["lesion_fp"], row["lesion_fn"], row["empty"]) == (0, 0, "")
    assert row["nsd_tolerance_mm"] == 2.0  # EvaluateConfig's default


def test_concentric_spheres_overlap_and_volumes_from_voxel_counts():
    spacing = (0.8, 1.2, 2.5)  # 2.4 mm³ per voxel
    small, big = ball(3), ball(5)
    # Lattice points with x² + y² + z² ≤ r²: 123 for r = 3, 515 for r = 5.
    assert (int(small.sum()), int(big.sum())) == (123, 515)
    row = one(small, big, spacing)  # the small sphere predicted inside the big reference
    assert row["dice"] == pytest.approx(2 * 123 / (123 + 515))
    assert row["iou"] == pytest.approx(123 / 515)
    assert row["volume_ref_ml"] == pytest.approx(515 * 2.4 / 1000)
    assert row["volume_pred_ml"] == pytest.approx(123 * 2.4 / 1000)
    assert row["volume_error_ml"] == pytest.approx((123 - 515) * 2.4 / 1000)
    assert row["volume_error_rel"] == pytest.approx((123 - 515) / 515)
    assert (row["lesion_tp"], row["lesion_fp"], row["lesion_fn"]) == (1, 0, 0)
    assert row["hd95"] > 0 and row["assd"] > 0


def test_classes_are_scored_separately():
    ref = cube(value=1) + cube(start=(12, 12, 12), size=(4, 4, 4), value=2)
    pred = cube(value=1)
    rows = case_metrics(pred, ref, (1.0, 1.0, 1.0), {1: "a", 2: "b"})
    assert [r["class"] for r in rows] == ["a", "b"]
    assert rows[0]["dice"] == 1.0
    assert rows[1]["dice"] == 0.0
    assert rows[1]["empty"] == "prediction"


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        case_metrics(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), (1, 1, 1), CLASSES)


def test_bad_spacing_is_refused():
    with pytest.raises(ValueError, match=r"expected 3 finite sizes > 0 mm.*How to fix"):
        case_metrics(cube(), cube(), (1.0, 0.0, 1.0), CLASSES)


# ------------------------------------------------------------------ surface distances


def plates(shape=(6, 10, 10)) -> tuple[np.ndarray, np.ndarray]:
    """One-voxel-thick 10 x 10 plates at x = 0 (reference) and x = 3 (prediction)."""
    ref, pred = np.zeros(shape, np.int16), np.zeros(shape, np.int16)
    ref[0], pred[3] = 1, 1
    return pred, ref


def test_parallel_plates_are_six_mm_apart_everywhere():
    # Spacing 2 mm along x: every voxel of a plate is a boundary voxel, and its nearest
    # boundary voxel on the other plate is straight across, 3 voxels x 2 mm = 6 mm away.
    pred, ref = plates()
    spacing = (2.0, 1.0, 1.0)
    below = one(pred, ref, spacing, EvaluateConfig(nsd_tolerance_mm=5.0))
    at = one(pred, ref, spacing, EvaluateConfig(nsd_tolerance_mm=6.0))
    for row in (below, at):
        assert (row["dice"], row["iou"]) == (0.0, 0.0)
        assert row["hd95"] == pytest.approx(6.0)
        assert row["assd"] == pytest.approx(6.0)
        assert (row["lesion_tp"], row["lesion_fp"], row["lesion_fn"]) == (0, 1, 1)
    assert below["nsd"] == 0.0  # 6 mm > τ = 5 mm
    assert at["nsd"] == 1.0  # MONAI counts d ≤ τ: 6 mm is within τ = 6 mm
    assert (below["nsd_tolerance_mm"], at["nsd_tolerance_mm"]) == (5.0, 6.0)


@pytest.mark.parametrize(("tolerance", "nsd"), [(0.5, 36 / 56), (1.0, 40 / 56), (3.0, 1.0)])
def test_cube_shifted_one_voxel_along_the_thick_axis(tolerance, nsd):
    # Spacing (1, 1, 3): a 4 x 4 x 4 cube, predicted one voxel (3 mm) further along z.
    ref = cube(shape=(12, 12, 12), start=(4, 4, 4), size=(4, 4, 4))
    pred = cube(shape=(12, 12, 12), start=(4, 4, 5), size=(4, 4, 4))
    row = one(pred, ref, (1.0, 1.0, 3.0), EvaluateConfig(nsd_tolerance_mm=tolerance))
    # Overlap: 4 x 4 x 3 = 48 of 64 voxels each; union 80.
    assert row["dice"] == pytest.approx(2 * 48 / 128)  # 0.75
    assert row["iou"] == pytest.approx(48 / 80)  # 0.6
    # Boundary voxels of a 4³ cube: 64 - 2³ interior = 56. Reference → prediction:
    #   bottom face z=4 (16 voxels): nearest prediction boundary straight up, 3 mm;
    #   top face z=7, its 4 inner voxels: the prediction's side wall 1 voxel (1 mm) away
    #     in-plane beats its top face at 3 mm; the 12 rim voxels lie on that wall, 0 mm;
    #   side walls at z=5, 6 (2 x 12 voxels): also the prediction's walls, 0 mm.
    # So 16 x 3 mm + 4 x 1 mm + 36 x 0 mm, and the same by symmetry the other way.
    assert row["assd"] == pytest.approx(2 * (16 * 3.0 + 4 * 1.0) / (2 * 56), rel=1e-6)
    # Sorted directed distances: 36 x 0, 4 x 1, 16 x 3; the 95th percentile is 3 mm.
    assert row["hd95"] == pytest.approx(3.0)
    # NSD: τ = 0.5 keeps the 36 zeros, τ = 1 adds the 4 at 1 mm, τ = 3 keeps all 56.
    assert row["nsd"] == pytest.approx(nsd, rel=1e-6)
    assert row["volume_error_ml"] == 0.0


@pytest.mark.parametrize("d", [1, 2, 3])
def test_hd95_of_cube_shifted_along_anisotropic_axis(d):
    spacing = (0.8, 0.8, 3.0)
    ref = cube(shape=(24, 24, 24), start=(6, 6, 6), size=(10, 10, 10))
    pred = cube(shape=(24, 24, 24), start=(6, 6, 6 + d), size=(10, 10, 10))
    assert hd95_mm(pred, ref, spacing) == pytest.approx(d * 3.0, rel=1e-5)
    # the same shift along an in-plane axis is measured with the in-plane spacing
    pred_x = cube(shape=(24, 24, 24), start=(6 + d, 6, 6), size=(10, 10, 10))
    assert hd95_mm(pred_x, ref, spacing) == pytest.approx(d * 0.8, rel=1e-5)


def test_mask_on_the_array_edge_gives_the_same_distances_as_inside():
    # The crop to the union's bounding box must not change MONAI's boundary voxels.
    spacing = (1.0, 1.0, 3.0)
    inside = one(
        cube((10, 10, 10), (3, 3, 3), (4, 4, 4)), cube((10, 10, 10), (3, 3, 4), (4, 4, 4)), spacing
    )
    edge = one(
        cube((10, 10, 10), (0, 0, 1), (4, 4, 4)), cube((10, 10, 10), (0, 0, 0), (4, 4, 4)), spacing
    )
    for key in ("hd95", "assd", "nsd"):
        assert edge[key] == pytest.approx(inside[key])


def test_tolerance_per_class():
    pred, ref = plates()  # 6 mm apart with this spacing
    cfg = EvaluateConfig(nsd_tolerance_mm=5.0, nsd_tolerance_by_class={"b": 6.0})
    rows = case_metrics(pred * 2, ref * 2, (2.0, 1.0, 1.0), {1: "a", 2: "b"}, cfg)
    a, b = rows
    assert (a["empty"], a["nsd_tolerance_mm"]) == ("both", 5.0)
    assert (b["nsd"], b["nsd_tolerance_mm"]) == (1.0, 6.0)
    rows = case_metrics(pred, ref, (2.0, 1.0, 1.0), {1: "a"}, cfg)
    assert (rows[0]["nsd"], rows[0]["nsd_tolerance_mm"]) == (0.0, 5.0)


# ------------------------------------------------------------------ lesions


def test_lesion_detection_counts_with_26_connectivity():
    shape = (20, 20, 20)
    ref = cube(shape, (1, 1, 1), (3, 3, 3))  # lesion A
    ref += cube(shape, (8, 8, 8), (2, 2, 2))  # lesion B: two cubes that touch only
    ref += cube(shape, (10, 10, 10), (2, 2, 2))  # at one corner, (9,9,9)-(10,10,10)
    ref += cube(shape, (15, 1, 1), (3, 3, 3))  # lesion C
    pred = cube(shape, (2, 2, 2), (3, 3, 3))  # overlaps A partly
    pred += cube(shape, (11, 11, 11), (1, 1, 1))  # one voxel inside B's second cube
    pred += cube(shape, (1, 15, 15), (2, 2, 2))  # spurious
    # With face connectivity only, B would be two lesions: the test does tell them apart.
    assert ndimage.label(ref)[1] == 4
    row = one(pred, ref)
    assert (row["lesions_ref"], row["lesions_pred"]) == (3, 3)
    assert (row["lesion_tp"], row["lesion_fn"], row["lesion_fp"]) == (2, 1, 1)


def test_one_prediction_bridging_two_lesions_hits_both():
    shape = (12, 12, 12)
    ref = cube(shape, (2, 2, 2), (2, 2, 2)) + cube(shape, (2, 2, 7), (2, 2, 2))
    pred = cube(shape, (2, 2, 2), (2, 2, 7))  # one bar across both
    row = one(pred, ref)
    assert (row["lesions_ref"], row["lesions_pred"]) == (2, 1)
    assert (row["lesion_tp"], row["lesion_fn"], row["lesion_fp"]) == (2, 0, 0)


# ------------------------------------------------------------------ empty masks


@pytest.mark.parametrize(("convention", "overlap"), [("one", 1.0), ("nan", math.nan)])
def test_both_empty_follows_the_convention(strict_warnings, convention, overlap):
    empty = np.zeros((8, 8, 8), np.int16)
    row = one(empty, empty, (1.0, 2.0, 3.0), EvaluateConfig(empty_dice=convention))
    for key in ("dice", "iou", "nsd"):
        assert row[key] == overlap or (math.isnan(overlap) and math.isnan(row[key]))
    assert math.isnan(row["hd95"]) and math.isnan(row["assd"])
    assert (row["volume_ref_ml"], row["volume_pred_ml"], row["volume_error_ml"]) == (0, 0, 0)
    assert math.isnan(row["volume_error_rel"])
    counts = [row[k] for k in ("lesions_ref", "lesions_pred", "lesion_tp", "lesion_fp")]
    assert counts + [row["lesion_fn"]] == [0, 0, 0, 0, 0]
    assert row["empty"] == "both"


@pytest.mark.parametrize("convention", ["one", "nan"])
@pytest.mark.parametrize("which", ["pred", "ref"])
def test_one_side_empty_scores_zero_and_nan_distances(strict_warnings, which, convention):
    empty, full = np.zeros((12, 12, 12), np.int16), cube(shape=(12, 12, 12), size=(3, 3, 3))
    pred, ref = (empty, full) if which == "pred" else (full, empty)
    row = one(pred, ref, (1.0, 1.0, 2.0), EvaluateConfig(empty_dice=convention))
    assert (row["dice"], row["iou"], row["nsd"]) == (0.0, 0.0, 0.0)
    assert math.isnan(row["hd95"]) and math.isnan(row["assd"])
    blob_ml = 27 * 2.0 / 1000
    if which == "pred":  # a missed lesion
        assert row["empty"] == "prediction"
        assert (row["volume_error_ml"], row["volume_error_rel"]) == (-blob_ml, -1.0)
        assert (row["lesions_ref"], row["lesion_fn"], row["lesion_fp"]) == (1, 1, 0)
    else:  # a prediction where there is nothing
        assert row["empty"] == "reference"
        assert row["volume_error_ml"] == blob_ml
        assert math.isnan(row["volume_error_rel"])
        assert (row["lesions_pred"], row["lesion_fp"], row["lesion_fn"]) == (1, 1, 0)


def test_no_value_is_ever_infinite(strict_warnings):
    empty = np.zeros((8, 8, 8), np.int16)
    full = cube((8, 8, 8), (2, 2, 2), (2, 2, 2))
    for pred, ref in ((empty, empty), (empty, full), (full, empty), (full, full)):
        row = one(pred, ref, (0.7, 0.7, 5.0))
        assert not any(isinstance(v, float) and math.isinf(v) for v in row.values())


# --------------------------------------------------------------- evaluate_predictions


def _save(arr: np.ndarray, path: Path, affine: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr.astype(np.int16), affine), str(path))


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """Two cases, one fold each as test, two arms; paths relative to the working dir."""
    monkeypatch.chdir(tmp_path)
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    rows = []
    for case in ("c1", "c2"):
        ref = cube(shape=(16, 16, 16), start=(4, 4, 4), size=(6, 6, 6))
        _save(ref, Path("data") / f"{case}_label.nii.gz", affine)
        _save(ref, Path("data") / f"{case}_image.nii.gz", affine)
        rows.append(
            {
                "case_id": case,
                "patient_id": f"p_{case}",
                "image": f"data/{case}_image.nii.gz",
                "label": f"data/{case}_label.nii.gz",
                "modality": "MR",
                "spacing": "1.00x1.00x2.00",
                "shape": "16x16x16",
                "orientation": "RAS",
            }
        )
    Path("results/ingest").mkdir(parents=True)
    pd.DataFrame(rows).to_csv("results/ingest/manifest.tsv", sep="\t", index=False)
    folds = {
        "k": 2,
        "seed": 1,
        "groups": {"c1": "p_c1", "c2": "p_c2"},
        "folds": [
            {"fold": 0, "train": ["c2"], "val": [], "test": ["c1"]},
            {"fold": 1, "train": ["c1"], "val": [], "test": ["c2"]},
        ],
    }
    Path("results/splits").mkdir(parents=True)
    Path("results/splits/folds.json").write_text(json.dumps(folds))
    for arm, shift in (("scratch", 1), ("finetune", 0)):
        for k, case in ((0, "c1"), (1, "c2")):
            pred = cube(shape=(16, 16, 16), start=(4, 4, 4 + shift), size=(6, 6, 6))
            _save(pred, predictions_dir("results", arm, 1, k) / f"{case}.nii.gz", affine)
    return tmp_path


def _run(
    tmp_path: Path, arms=("scratch", "finetune"), threads=2, out="metrics.csv", seed=1, **kw
) -> pd.DataFrame:
    # positional arguments and threads= as medtl.evaluate.fractions calls it
    table = evaluate_predictions(
        Path("results/ingest/manifest.tsv"),
        Path("results/splits/folds.json"),
        Path("results/predictions"),
        list(arms),
        CLASSES,
        threads=threads,
        seed=seed,
        **kw,
    )
    write_metrics(table, Path("results/evaluation") / out)  # as the command `evaluate` does
    return table


def test_evaluate_predictions_writes_sorted_csv(tree):
    df = _run(tree)
    assert list(df.columns) == METRIC_COLUMNS
    assert df["seed"].tolist() == [1] * 4
    assert list(zip(df["arm"], df["fold"], df["case"], strict=True)) == [
        ("finetune", 0, "c1"),
        ("finetune", 1, "c2"),
        ("scratch", 0, "c1"),
        ("scratch", 1, "c2"),
    ]
    assert df.loc[df["arm"] == "finetune", "dice"].tolist() == [1.0, 1.0]
    scratch = df[df["arm"] == "scratch"]
    assert scratch["dice"].tolist() == pytest.approx([2 * 180 / 432] * 2)
    assert scratch["iou"].tolist() == pytest.approx([180 / 252] * 2)
    assert scratch["hd95"].tolist() == pytest.approx([2.0, 2.0])  # one voxel of 2 mm
    assert df["volume_ref_ml"].tolist() == pytest.approx([216 * 2.0 / 1000] * 4)
    assert df["empty"].tolist() == [""] * 4
    written = read_metrics(tree / "results/evaluation/metrics.csv")
    pd.testing.assert_frame_equal(written, df)
    leftovers = [p.name for p in (tree / "results/evaluation").iterdir()]
    assert leftovers == ["metrics.csv"]


def test_evaluate_predictions_passes_the_config_on(tree):
    cfg = EvaluateConfig(nsd_tolerance_mm=1.5, nsd_tolerance_by_class={"tumour": 2.5})
    df = _run(tree, cfg=cfg)
    assert df["nsd_tolerance_mm"].tolist() == [2.5] * 4


def test_evaluate_one_fold_writes_only_its_rows(tree):
    df = _run(tree, fold=1, out="fold1.csv")
    assert list(zip(df["arm"], df["fold"], df["case"], strict=True)) == [
        ("finetune", 1, "c2"),
        ("scratch", 1, "c2"),
    ]
    assert read_metrics(tree / "results/evaluation/fold1.csv")["fold"].tolist() == [1, 1]


def test_evaluate_unknown_fold_is_refused(tree):
    with pytest.raises(EvaluationError, match=r"fold 5.*expected one of \[0, 1\], found 5"):
        _run(tree, fold=5)


def test_one_fold_needs_only_its_own_predictions(tree):
    (tree / "results/predictions/scratch/seed1/fold0/c1.nii.gz").unlink()
    assert len(_run(tree, fold=1)) == 2
    with pytest.raises(EvaluationError, match=r"scratch/seed1/fold0/c1\.nii\.gz"):
        _run(tree, fold=0)


def test_missing_prediction_names_file_and_rule(tree):
    missing = tree / "results/predictions/scratch/seed1/fold1/c2.nii.gz"
    missing.unlink()
    with pytest.raises(
        EvaluationError, match=r"scratch/seed1/fold1/c2\.nii\.gz.*rule 'predict_fold'"
    ):
        _run(tree)
    assert not (tree / "results/evaluation/metrics.csv").exists()


def test_prediction_on_another_grid_names_both_files(tree):
    pred = tree / "results/predictions/finetune/seed1/fold0/c1.nii.gz"
    _save(cube(shape=(16, 16, 16)), pred, np.diag([1.0, 1.0, 3.0, 1.0]))
    with pytest.raises(
        EvaluationError, match=r"finetune/seed1/fold0/c1\.nii\.gz.*c1_label\.nii\.gz"
    ):
        _run(tree, threads=1)


def test_a_run_of_an_earlier_version_without_seed_folders_is_evaluated(tree):
    """`predictions/<arm>/fold<k>/` (one seed, no seed folder): a table without seeds."""
    old = tree / "results/predictions_old"
    for arm in ("scratch", "finetune"):
        (old / arm).mkdir(parents=True)
        for k in (0, 1):
            (tree / "results/predictions" / arm / "seed1" / f"fold{k}").rename(
                old / arm / f"fold{k}"
            )
    df = evaluate_predictions(
        Path("results/ingest/manifest.tsv"),
        Path("results/splits/folds.json"),
        old,
        ["scratch", "finetune"],
        CLASSES,
    )
    write_metrics(df, Path("results/evaluation/old.csv"))
    assert list(df.columns) == [c for c in METRIC_COLUMNS if c != "seed"]
    assert read_metrics(tree / "results/evaluation/old.csv").shape == df.shape


def test_combine_refuses_tables_with_and_without_seeds(tree):
    new = _run(tree, out="new.csv")
    old = tree / "results/evaluation/old.csv"
    new.drop(columns="seed").to_csv(old, index=False)
    with pytest.raises(EvaluationError, match=r"all with a seed column or all without"):
        combine_metrics([tree / "results/evaluation/new.csv", old], tree / "out.csv")


# --------------------------------------------------------------- combine_metrics


def test_combine_metrics_merges_per_fold_tables(tree):
    full = _run(tree)
    parts = [
        _run(tree, arms=[arm], fold=k, out=f"{arm}_fold{k}.csv")
        for arm in ("scratch", "finetune")
        for k in (1, 0)
    ]
    assert sum(len(p) for p in parts) == len(full)
    paths = sorted((tree / "results/evaluation").glob("*_fold*.csv"))
    assert len(paths) == 4
    out = tree / "results/evaluation/combined.csv"
    combined = combine_metrics(paths, out)
    pd.testing.assert_frame_equal(combined, full)
    pd.testing.assert_frame_equal(read_metrics(out), full)


def test_combine_metrics_keeps_text_columns_text(tmp_path):
    row = dict.fromkeys(METRIC_COLUMNS, 0)
    row.update({"arm": "a", "case": "007", "class": "NA", "empty": "", "fold": 0})
    row.update({"hd95": math.nan, "volume_error_rel": math.nan})
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    pd.DataFrame([row]).to_csv(first, index=False)
    pd.DataFrame([{**row, "case": "010"}]).to_csv(second, index=False)
    table = combine_metrics([second, first], tmp_path / "all.csv")
    assert table["case"].tolist() == ["007", "010"]
    assert table["class"].tolist() == ["NA", "NA"]
    assert table["empty"].tolist() == ["", ""]
    assert table["hd95"].isna().all()


def test_combine_metrics_refuses_a_table_without_every_column(tree):
    good = tree / "results/evaluation/good.csv"
    _run(tree, out="good.csv")
    old = tree / "results/evaluation/old.csv"
    pd.read_csv(good)[["arm", "fold", "case", "class", "dice", "hd95"]].to_csv(old, index=False)
    out = tree / "results/evaluation/metrics_all.csv"
    with pytest.raises(EvaluationError, match=r"old\.csv: expected the columns.*missing \['iou'"):
        combine_metrics([good, old], out)
    assert not out.exists()


def test_combine_metrics_refuses_missing_files_and_duplicate_rows(tree):
    _run(tree, out="a.csv")
    a = tree / "results/evaluation/a.csv"
    with pytest.raises(EvaluationError, match=r"not found: expected .*nope\.csv"):
        combine_metrics([a, tree / "nope.csv"], tree / "out.csv")
    with pytest.raises(EvaluationError, match=r"expected one row, found 2 in .*a\.csv"):
        combine_metrics([a, a], tree / "out.csv")
    with pytest.raises(EvaluationError, match="no metrics tables"):
        combine_metrics([], tree / "out.csv")
