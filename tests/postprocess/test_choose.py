"""Choosing post-processing on cross-validation predictions (medtl.postprocess.choose).

A tiny result tree is written with nibabel: 4 cases in 2 folds on 8×8×4 grids of
1 × 1 × 2 mm voxels, two classes:

* ``tumour`` (1): one 2×2×2 cube. Cases c0 and c1 predict it plus a stray voxel
  (Dice 16/17); c2 and c3 predict it exactly. Keeping the largest component gives 1.0.
* ``organ`` (2): two 2×2×2 cubes, predicted exactly. Keeping the largest component
  loses one (Dice 2/3), so nothing is chosen.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medtl.config import PostprocessConfig
from medtl.kernel.errors import InputError
from medtl.postprocess.choose import choose_postprocessing, describe_decision, load_decision

AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])
CLASSES = {1: "tumour", 2: "organ"}
CASES = ("c0", "c1", "c2", "c3")
FOLDS = {"folds": [{"fold": 0, "test": ["c0", "c2"]}, {"fold": 1, "test": ["c1", "c3"]}]}
RAW = (2 * 16 / 17 + 2) / 4  # mean tumour Dice of the raw predictions


def _reference() -> np.ndarray:
    ref = np.zeros((8, 8, 4), np.uint8)
    ref[1:3, 1:3, 0:2] = 1
    ref[5:7, 0:2, 2:4] = 2
    ref[5:7, 5:7, 0:2] = 2
    return ref


def _tree(root: Path, arm: str = "finetune") -> dict[str, Path]:
    """Write manifest, folds and predictions under ``root``; return their paths."""
    rows = []
    for i, case in enumerate(CASES):
        ref = _reference()
        pred = ref.copy()
        if i < 2:
            pred[7, 7, 3] = 1  # a stray tumour voxel
        label = root / "labels" / f"{case}.nii.gz"
        label.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(ref, AFFINE), label)
        fold = 0 if case in FOLDS["folds"][0]["test"] else 1
        out = root / "predictions" / arm / f"fold{fold}" / f"{case}.nii.gz"
        out.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(pred, AFFINE), out)
        rows.append({"case_id": case, "image": "", "label": str(label)})
    manifest = root / "manifest.tsv"
    pd.DataFrame(rows).to_csv(manifest, sep="\t", index=False)
    folds = root / "folds.json"
    folds.write_text(json.dumps(FOLDS))
    return {"manifest": manifest, "folds": folds, "predictions": root / "predictions"}


def _choose(paths, out, cfg=PostprocessConfig(), threads=1, arm="finetune"):
    return choose_postprocessing(
        paths["manifest"],
        paths["folds"],
        paths["predictions"],
        arm,
        CLASSES,
        cfg,
        out,
        threads=threads,
    )


def test_largest_chosen_where_it_helps_none_where_it_hurts(tmp_path):
    paths = _tree(tmp_path)
    out = tmp_path / "results" / "postprocess" / "finetune.json"
    decision = _choose(paths, out, threads=2)
    assert json.loads(out.read_text()) == decision
    assert {k: decision[k] for k in ("arm", "n_cases", "enabled", "min_gain")} == {
        "arm": "finetune",
        "n_cases": 4,
        "enabled": True,
        "min_gain": 0.0,
    }
    tumour, organ = decision["classes"]["tumour"], decision["classes"]["organ"]
    assert (tumour["value"], tumour["chosen"], tumour["cases_changed"]) == (1, "largest", 2)
    assert tumour["min_volume_mm3"] == 50.0
    # 1×1×2 mm voxels: the 8-voxel cube is 16 mm³ < 50 mm³, so min_volume empties it.
    assert tumour["mean_dice"] == pytest.approx({"none": RAW, "largest": 1.0, "min_volume": 0.0})
    assert (organ["value"], organ["chosen"], organ["cases_changed"]) == (2, "none", 0)
    assert organ["mean_dice"] == pytest.approx({"none": 1.0, "largest": 2 / 3, "min_volume": 0.0})
    assert describe_decision(decision) == "tumour: largest"
    # The decision is found where the workflow writes it.
    assert load_decision(tmp_path / "results", "finetune") == decision


def test_ties_go_to_the_earlier_candidate_and_min_gain_is_respected(tmp_path):
    paths = _tree(tmp_path)
    # 3 mm³ keeps the cubes (16 mm³) and drops the stray voxel (2 mm³): a tie with largest.
    cfg = PostprocessConfig(candidates=("min_volume", "largest"), min_volume_mm3=3.0)
    d = _choose(paths, tmp_path / "a.json", cfg)
    assert d["classes"]["tumour"]["chosen"] == "min_volume"
    assert d["classes"]["tumour"]["mean_dice"]["min_volume"] == pytest.approx(1.0)
    # The organ's cubes survive min_volume unchanged: equal to raw, so not chosen.
    assert d["classes"]["organ"]["mean_dice"]["min_volume"] == 1.0
    assert d["classes"]["organ"]["chosen"] == "none"
    assert describe_decision(d) == "tumour: min_volume 3 mm3"

    gain = 1.0 - RAW  # 1/34
    high = PostprocessConfig(min_gain=gain + 1e-3)
    assert _choose(paths, tmp_path / "b.json", high)["classes"]["tumour"]["chosen"] == "none"
    low = PostprocessConfig(min_gain=gain - 1e-3)
    assert _choose(paths, tmp_path / "c.json", low)["classes"]["tumour"]["chosen"] == "largest"


def test_disabled_writes_none_everywhere(tmp_path):
    paths = _tree(tmp_path)
    d = _choose(paths, tmp_path / "d.json", PostprocessConfig(enabled=False))
    assert d["enabled"] is False and "disabled" in d["note"] and d["n_cases"] == 4
    assert {c["chosen"] for c in d["classes"].values()} == {"none"}
    assert describe_decision(d) == "none"


def test_missing_prediction_names_file_and_rule(tmp_path):
    paths = _tree(tmp_path)
    gone = paths["predictions"] / "finetune" / "fold1" / "c3.nii.gz"
    gone.unlink()
    with pytest.raises(InputError, match="predict_fold") as err:
        _choose(paths, tmp_path / "e.json")
    assert str(gone) in str(err.value) and "How to fix" in str(err.value)
    assert not (tmp_path / "e.json").exists()


def test_prediction_on_another_grid_is_refused(tmp_path):
    paths = _tree(tmp_path)
    bad = paths["predictions"] / "finetune" / "fold0" / "c0.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 5), np.uint8), AFFINE), bad)
    with pytest.raises(InputError, match="not on the grid") as err:
        _choose(paths, tmp_path / "f.json")
    assert str(bad) in str(err.value) and "(8, 8, 4)" in str(err.value)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "unreadable JSON"),
        ('{"arm": "finetune"}', "'classes' object"),
        ('{"classes": {"tumour": {"value": 1, "chosen": "biggest"}}}', "class 'tumour'"),
        ('{"classes": {"tumour": {"value": 0, "chosen": "none"}}}', "label value > 0"),
        ('{"classes": {"tumour": {"value": 1, "chosen": "min_volume"}}}', "min_volume_mm3"),
        ('{"arm": "frozen", "classes": {}}', "arm 'finetune'"),
    ],
)
def test_load_decision_refuses_a_malformed_file(tmp_path, text, match):
    path = tmp_path / "postprocess" / "finetune.json"
    path.parent.mkdir()
    path.write_text(text)
    with pytest.raises(InputError, match=match) as err:
        load_decision(tmp_path, "finetune")
    assert str(path) in str(err.value) and "postprocess" in err.value.fix


def test_load_decision_absent_is_none(tmp_path):
    assert load_decision(tmp_path, "finetune") is None
