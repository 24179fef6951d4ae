"""``medtl predict --uncertainty --save-probabilities`` end to end (medtl.predict.maps)."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import medtl.predict.run as run
from medtl.config import PredictConfig
from medtl.predict.maps import MapRequest
from medtl.preprocess.plan import Plan

AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])
SHAPE = (12, 10, 8)
PATCH = [8, 8, 8]
#: Float32 map written and read back: no rounding. Entropy bounds hold to float32 sums.
TOL = 1e-6


def _image() -> np.ndarray:
    image = np.ones(SHAPE, np.float32)
    image[2:6, 2:6, 2:5] = 10.0
    return image


def _model(weight: float, bias: float) -> torch.nn.Module:
    """Class-1 logit ``weight · intensity + bias`` (normalised intensity), class 0 at 0."""
    conv = torch.nn.Conv3d(1, 2, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[1] = weight
        conv.bias[1] = bias
    return conv.eval()


#: Fold 0 finds the bright block; fold 1 calls everything foreground at about 73 %.
MODELS = {"fold0": _model(10.0, 0.0), "fold1": _model(0.0, 1.0)}


@pytest.fixture
def finished(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """``(results, case sheet)``: a plan on another grid than the image, two fold models."""
    results = tmp_path / "results"
    Plan(
        modality="MR",
        target_spacing=(2.0, 2.0, 2.0),
        normalization="zscore",
        intensity={},
        crop_foreground=False,
        median_shape=SHAPE,
        n_cases=1,
        classes={"1": "block"},
    ).save(results / "preprocess" / "plan.json")
    for fold in MODELS:
        folder = results / "train" / "finetune" / fold
        folder.mkdir(parents=True)
        (folder / "best.pt").write_bytes(b"")  # load_model is replaced below
    image = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(_image(), AFFINE), image)
    sheet = tmp_path / "cases.tsv"
    pd.DataFrame([{"image": str(image), "case_id": "scan"}]).to_csv(sheet, sep="\t", index=False)
    monkeypatch.setattr(
        run, "load_model", lambda path, device: (MODELS[path.parent.name], {"patch_size": PATCH})
    )
    return results, sheet


def _predict(results, sheet, out, **kwargs) -> pd.DataFrame:
    return run.predict_new(
        sheet, results, out, arm="finetune", device_name="cpu", progress=False, workers=1, **kwargs
    )


def _load(path) -> nib.Nifti1Image:
    return nib.load(str(path))


def test_maps_on_the_original_grid_with_their_bounds(finished, tmp_path):
    results, sheet = finished
    maps = MapRequest(uncertainty=True, probabilities=True)
    table = _predict(results, sheet, tmp_path / "out", maps=maps)
    row = table.iloc[0]
    assert row["members"] == 2
    for column in ("entropy", "mutual_info", "probabilities"):
        assert Path(row[column]).is_file() and Path(row[column]).parent == tmp_path / "out"
    written = pd.read_csv(tmp_path / "out" / "predictions.tsv", sep="\t")
    for column in ("entropy", "mutual_info", "members", "mean_entropy", "agreement_dice"):
        assert column in written.columns
    assert written["volume_cv"].iloc[0] == pytest.approx(row["volume_cv"])

    h_img, mi_img, p_img = (_load(row[c]) for c in ("entropy", "mutual_info", "probabilities"))
    for img in (h_img, mi_img):
        assert img.shape == SHAPE and img.get_data_dtype() == np.float32
        np.testing.assert_allclose(img.affine, AFFINE)
    assert p_img.shape == (*SHAPE, 2) and p_img.get_data_dtype() == np.float32
    h, mi, p = (np.asarray(img.dataobj) for img in (h_img, mi_img, p_img))
    assert h.min() >= 0 and h.max() <= math.log(2) + TOL
    assert mi.min() >= 0 and np.all(mi <= h)
    assert mi.max() > 0.05  # the two folds disagree on the background
    assert p.min() >= 0 and p.max() <= 1 + TOL
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=TOL)
    mask = np.asarray(_load(row["mask"]).dataobj)
    np.testing.assert_array_equal(p.argmax(-1), mask)  # no post-processing decision here
    assert 0 < row["agreement_dice"] < 1 and row["volume_cv"] > 0.5
    assert 0 <= row["mean_entropy"] <= math.log(2)


def test_masks_are_the_same_with_and_without_maps(finished, tmp_path):
    results, sheet = finished
    cfg = PredictConfig(tta=True)
    plain = _predict(results, sheet, tmp_path / "plain", cfg=cfg)
    both = MapRequest(uncertainty=True, probabilities=True)
    extra = _predict(results, sheet, tmp_path / "extra", cfg=cfg, maps=both)
    a = np.asarray(_load(plain["mask"][0]).dataobj)
    b = np.asarray(_load(extra["mask"][0]).dataobj)
    np.testing.assert_array_equal(a, b)
    assert extra["members"].tolist() == [16]  # 2 models × 8 mirrors
    assert set(plain.columns) < set(extra.columns)
    assert not (tmp_path / "plain" / "scan_entropy.nii.gz").exists()
    assert sorted(p.name for p in (tmp_path / "plain").glob("[!.]*")) == [
        "predictions.tsv",
        "scan.nii.gz",
    ]


def test_the_command_writes_maps_and_warns_for_one_member(finished, tmp_path, monkeypatch):
    from medtl.cli.main import app

    results, sheet = finished
    out = tmp_path / "cli"
    args = [str(sheet), "--model", str(results), "--out", str(out), "--arm", "finetune"]
    args += ["--device", "cpu", "--uncertainty", "--save-probabilities", "--quiet"]
    result = CliRunner().invoke(app, ["predict", *args])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.glob("[!.]*"))
    assert names == [
        "predictions.tsv",
        "scan.nii.gz",
        "scan_entropy.nii.gz",
        "scan_mutual_info.nii.gz",
        "scan_probabilities.nii.gz",
    ]
    # One model, no TTA: one member, whose scores measure nothing.
    (results / "train" / "finetune" / "fold1" / "best.pt").unlink()
    (results / "train" / "finetune" / "fold1").rmdir()
    result = CliRunner().invoke(app, ["predict", *args])
    assert result.exit_code == 0, result.output
    assert "one ensemble member" in result.output
    table = pd.read_csv(out / "predictions.tsv", sep="\t")
    assert table["members"].tolist() == [1]
    assert table["agreement_dice"].tolist() == [1.0] and table["volume_cv"].tolist() == [0.0]
    assert float(np.asarray(_load(table["mutual_info"][0]).dataobj).max()) == 0.0
