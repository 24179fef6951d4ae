"""``medtl predict-fold``'s records beside the masks: scores, calibration sample, model size."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage

import medtl.predict.fold as fold_module
from medtl.config import PredictConfig, TrustConfig
from medtl.layout import CV_CALIBRATION_SAMPLE, CV_CASE_SCORES, CV_PREDICTION_RECORD
from medtl.preprocess.case import load_case, preprocess_files, save_case
from medtl.preprocess.plan import Plan
from medtl.split.folds import save_folds

SHAPE = (12, 10, 8)


def _model() -> torch.nn.Module:
    """Class-1 logit ``2 · intensity - 1`` of the (z-scored) image, class 0 at 0."""
    conv = torch.nn.Conv3d(1, 2, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[1] = 2.0
        conv.bias[1] = -1.0
    return conv.eval()


@pytest.fixture
def fold_run(tmp_path, monkeypatch) -> dict[str, Path]:
    """Two held-out cases of fold 0, preprocessed, and a one-layer model."""
    plan = Plan(
        modality="MR",
        target_spacing=(1.0, 1.0, 1.0),
        normalization="zscore",
        intensity={},
        crop_foreground=False,
        median_shape=SHAPE,
        n_cases=2,
        classes={"1": "block"},
    )
    cases = tmp_path / "cases"
    for k, name in enumerate(("a", "b")):
        image = np.ones(SHAPE, np.float32)
        image[2 : 6 + k, 2:6, 2:5] = 10.0
        label = np.zeros(SHAPE, np.uint8)
        label[2:6, 2:6, 2:6] = 1  # one slice more than the bright block: a miss
        for array, suffix in ((image, "img"), (label, "lab")):
            nib.save(nib.Nifti1Image(array, np.eye(4)), tmp_path / f"{name}_{suffix}.nii.gz")
        case = preprocess_files(
            tmp_path / f"{name}_img.nii.gz", tmp_path / f"{name}_lab.nii.gz", plan
        )
        save_case(cases / f"{name}.npz", case)
    folds = tmp_path / "folds.json"
    save_folds({"k": 1, "folds": [{"fold": 0, "train": [], "val": [], "test": ["a", "b"]}]}, folds)
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(b"x" * 1234)
    monkeypatch.setattr(
        fold_module,
        "load_model",
        lambda path, device: (_model(), {"patch_size": [8, 8, 8], "model": {}}),
    )
    return {"cases": cases, "folds": folds, "run": run, "out": tmp_path / "out"}


def _predict(paths: dict[str, Path], tta: bool, trust: TrustConfig) -> list[Path]:
    return fold_module.predict_fold(
        paths["run"],
        paths["folds"],
        0,
        paths["cases"],
        paths["out"],
        PredictConfig(tta=tta, sw_batch_size=1),
        device_name="cpu",
        progress=False,
        trust=trust,
    )


def test_scores_per_case_with_the_mirrored_members(fold_run):
    written = _predict(fold_run, tta=True, trust=TrustConfig())
    assert [p.name for p in written] == ["a.nii.gz", "b.nii.gz"]
    table = pd.read_csv(fold_run["out"] / CV_CASE_SCORES, sep="\t", dtype={"case": str})
    assert table["case"].tolist() == ["a", "b"]
    assert table["members"].tolist() == [8, 8]  # one model, 8 mirrored copies
    assert (table["seconds"] > 0).all()
    for column in ("mean_entropy", "mean_mutual_info", "agreement_dice", "volume_cv"):
        assert table[column].notna().all(), column
    # A 1x1x1 convolution sees no neighbours: mirrored copies agree exactly.
    assert table["agreement_dice"].tolist() == [1.0, 1.0]


def test_calibration_sample_is_the_band_around_reference_and_prediction(fold_run):
    _predict(fold_run, tta=False, trust=TrustConfig(band_voxels=1, voxels_per_case=10**6))
    with np.load(fold_run["out"] / CV_CALIBRATION_SAMPLE, allow_pickle=False) as data:
        probs, labels, case, ids = data["probs"], data["labels"], data["case"], data["case_ids"]
    assert ids.tolist() == ["a", "b"] and probs.shape == (2, labels.size)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-6)  # float32 softmax sums
    for k, name in enumerate(ids):
        stored = load_case(fold_run["cases"] / f"{name}.npz")
        predicted = nib.load(str(fold_run["out"] / f"{name}.nii.gz")).get_fdata() > 0
        band = ndimage.binary_dilation(
            (stored.label > 0) | predicted, ndimage.generate_binary_structure(3, 3), iterations=1
        )
        assert (case == k).sum() == band.sum()
        assert labels[case == k].sum() == (stored.label > 0).sum()  # every reference voxel


def test_calibration_sample_is_capped_and_the_same_each_time(fold_run):
    trust = TrustConfig(band_voxels=2, voxels_per_case=50)
    _predict(fold_run, tta=False, trust=trust)
    first = np.load(fold_run["out"] / CV_CALIBRATION_SAMPLE)["probs"]
    _predict(fold_run, tta=False, trust=trust)
    again = np.load(fold_run["out"] / CV_CALIBRATION_SAMPLE)["probs"]
    assert first.shape == (2, 100)
    np.testing.assert_array_equal(first, again)


def test_the_record_gives_size_and_memory(fold_run):
    _predict(fold_run, tta=False, trust=TrustConfig())
    record = json.loads((fold_run["out"] / CV_PREDICTION_RECORD).read_text())
    assert record["parameters"] == 2 * 1 + 2  # a 1x1x1 conv, 1 → 2 channels, with bias
    assert record["checkpoint_bytes"] == 1234
    assert record["device"] == "cpu" and record["peak_gpu_mb"] is None
    assert record["peak_rss_mb"] > 0
