"""``medtl predict --uncertainty --save-probabilities`` end to end (medtl.predict.maps)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage
from typer.testing import CliRunner

import medtl.predict.run as run
from medtl.config import PredictConfig
from medtl.layout import trust_file
from medtl.predict.maps import MapRequest
from medtl.preprocess.plan import Plan
from medtl.trust.decision import TrustRule

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


def _write_trust(results: Path, threshold: float, temperature: float = 2.0) -> None:
    rule = TrustRule(temperature, "agreement_dice", -1, threshold, 0.8, "youden")
    path = trust_file(results, "finetune")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rule": rule.as_dict()}))


def test_the_arms_trust_gives_risk_and_flag_and_tempers_the_probabilities(finished, tmp_path):
    results, sheet = finished
    want = MapRequest(probabilities=True)
    plain = _predict(results, sheet, tmp_path / "plain", maps=want)
    assert "risk" not in plain.columns  # a run without a trust fit
    _write_trust(results, threshold=0.2)
    table = _predict(results, sheet, tmp_path / "trusted")  # no --uncertainty asked
    row = table.iloc[0]
    assert row["risk"] == pytest.approx(1 - row["agreement_dice"])  # 1 − agreement
    assert row["flag"] == bool(row["risk"] >= 0.2)
    written = pd.read_csv(tmp_path / "trusted" / "predictions.tsv", sep="\t")
    assert {"risk", "flag"} <= set(written.columns)
    assert not list((tmp_path / "trusted").glob("*_entropy.nii.gz"))  # scores, no maps
    _write_trust(results, threshold=row["risk"] + 0.01)
    assert not _predict(results, sheet, tmp_path / "below")["flag"].iloc[0]
    # No score ranked the CV cases and every one failed: every case flagged, no risk.
    rule = TrustRule(1.0, None, 1, None, 0.8, "all")
    trust_file(results, "finetune").write_text(json.dumps({"rule": rule.as_dict()}))
    failed = _predict(results, sheet, tmp_path / "all")
    assert failed["flag"].tolist() == [True] and failed["risk"].isna().all()
    _write_trust(results, threshold=0.2)

    tempered = _predict(results, sheet, tmp_path / "tempered", maps=want)
    p0 = np.asarray(_load(plain["probabilities"][0]).dataobj)
    p2 = np.asarray(_load(tempered["probabilities"][0]).dataobj)
    # Tempered on the plan's grid, then resampled (trilinear) to the image's: where every
    # neighbour has the same probability the resampling mixes equal values, so there the
    # map is exactly softmax(ln p / 2) up to float32 rounding of log/exp (a few ulp).
    expected = torch.softmax(torch.log(torch.from_numpy(p0).clamp_min(1e-38)) / 2, -1).numpy()
    flat = ndimage.maximum_filter(p0[..., 1], 3) == ndimage.minimum_filter(p0[..., 1], 3)
    assert flat.sum() > 0.2 * flat.size and (p0[..., 1][flat] > 0.01).any()
    np.testing.assert_allclose(p2[flat], expected[flat], atol=1e-5)
    assert np.abs(p2[..., 1] - 0.5).max() < np.abs(p0[..., 1] - 0.5).max()  # T = 2 softens
    np.testing.assert_array_equal(
        np.asarray(_load(tempered["mask"][0]).dataobj), np.asarray(_load(plain["mask"][0]).dataobj)
    )
