"""Post-processing applied by segment_case and ``medtl predict`` (medtl.predict)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

import medtl.predict.run as run
from medtl.config import PredictConfig
from medtl.kernel.errors import InputError
from medtl.predict.inference import segment_case
from medtl.preprocess.case import preprocess_files
from medtl.preprocess.plan import Plan

AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])
SHAPE = (12, 10, 8)
PATCH = [8, 8, 8]
LARGEST = {"arm": "finetune", "classes": {"blob": {"value": 1, "chosen": "largest"}}}


def _image() -> np.ndarray:
    """Background 1, a 3×3×2 blob (18 voxels) and a single bright voxel, far apart."""
    image = np.ones(SHAPE, np.float32)
    image[2:5, 2:5, 2:4] = 10.0
    image[9, 8, 6] = 10.0
    return image


def _threshold_model() -> torch.nn.Module:
    """Class 1 wherever the normalised intensity is above 0 (the two blobs)."""
    conv = torch.nn.Conv3d(1, 2, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[1] = 10.0
    return conv.eval()


@pytest.fixture
def run_dir(tmp_path) -> tuple[Path, Path]:
    """``(results, case sheet)``: a plan, one (stand-in) fold model, one image."""
    results = tmp_path / "results"
    Plan(
        modality="MR",
        target_spacing=(1.0, 1.0, 2.0),
        normalization="zscore",
        intensity={},
        crop_foreground=False,
        median_shape=SHAPE,
        n_cases=1,
        classes={"1": "blob"},
    ).save(results / "preprocess" / "plan.json")
    fold = results / "train" / "finetune" / "fold0"
    fold.mkdir(parents=True)
    (fold / "best.pt").write_bytes(b"")  # load_model is replaced below
    image = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(_image(), AFFINE), image)
    sheet = tmp_path / "cases.tsv"
    pd.DataFrame([{"image": str(image), "case_id": "scan"}]).to_csv(sheet, sep="\t", index=False)
    return results, sheet


def test_segment_case_applies_a_decision_only_when_given(run_dir, tmp_path):
    results, _ = run_dir
    plan = Plan.load(results / "preprocess" / "plan.json")
    case = preprocess_files(tmp_path / "scan.nii.gz", None, plan)
    model, cfg, cpu = _threshold_model(), PredictConfig(), torch.device("cpu")
    raw = segment_case([model], case, PATCH, cfg, cpu, tmp_path / "raw.nii.gz")
    assert raw.sum() == 19
    kept = segment_case([model], case, PATCH, cfg, cpu, tmp_path / "pp.nii.gz", postprocess=LARGEST)
    assert kept.sum() == 18 and kept[2:5, 2:5, 2:4].all() and kept[9, 8, 6] == 0
    saved = nib.load(tmp_path / "pp.nii.gz")
    np.testing.assert_array_equal(np.asarray(saved.dataobj), kept)
    np.testing.assert_allclose(saved.affine, AFFINE)
    # min_volume on the original grid: 1 × 1 × 2 mm voxels, so the stray voxel is 2 mm³.
    small = {"classes": {"blob": {"value": 1, "chosen": "min_volume", "min_volume_mm3": 2.0}}}
    labels = segment_case([model], case, PATCH, cfg, cpu, tmp_path / "s.nii.gz", postprocess=small)
    assert labels.sum() == 19


def _predict(monkeypatch, results: Path, sheet: Path, out: Path, **kwargs) -> pd.DataFrame:
    model = _threshold_model()
    monkeypatch.setattr(run, "load_model", lambda path, device: (model, {"patch_size": PATCH}))
    return run.predict_new(
        sheet, results, out, arm="finetune", device_name="cpu", progress=False, workers=1, **kwargs
    )


def test_predict_new_applies_the_arms_decision(monkeypatch, run_dir, tmp_path):
    results, sheet = run_dir
    table = _predict(monkeypatch, results, sheet, tmp_path / "a")
    assert table["postprocess"].tolist() == ["none"]
    assert table["foreground_voxels"].tolist() == [19]

    decision = results / "postprocess" / "finetune.json"
    decision.parent.mkdir()
    decision.write_text(json.dumps(LARGEST))
    table = _predict(monkeypatch, results, sheet, tmp_path / "b", cfg=PredictConfig(tta=True))
    assert table["postprocess"].tolist() == ["blob: largest"]
    assert table["foreground_voxels"].tolist() == [18]
    written = pd.read_csv(tmp_path / "b" / "predictions.tsv", sep="\t")
    assert written["postprocess"].tolist() == ["blob: largest"]
    assert np.asarray(nib.load(table["mask"][0]).dataobj).sum() == 18

    table = _predict(monkeypatch, results, sheet, tmp_path / "c", postprocess=False)
    assert table["postprocess"].tolist() == ["none"]
    assert table["foreground_voxels"].tolist() == [19]


def test_predict_new_refuses_a_decision_of_other_classes(monkeypatch, run_dir, tmp_path):
    results, sheet = run_dir
    decision = results / "postprocess" / "finetune.json"
    decision.parent.mkdir()
    decision.write_text(json.dumps({"classes": {"tumour": {"value": 1, "chosen": "largest"}}}))
    with pytest.raises(InputError, match="class 'tumour'") as err:
        _predict(monkeypatch, results, sheet, tmp_path / "a")
    assert str(decision) in str(err.value)
