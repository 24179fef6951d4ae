"""The shift stage end to end: the record, the warnings, and `medtl shift` writing its files."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from typer.testing import CliRunner

from medtl.cli.main import app
from medtl.config import ShiftConfig
from medtl.demo.phantoms import draw_set, shifted_domain
from medtl.shift.intensity import compare_intensity
from medtl.shift.measure import measure_shift
from medtl.shift.record import NO_SOURCE
from medtl.shift.warnings import Facts, warn
from tests.support.phantom_sets import COARSEN, PATCH, PLAN, phantom_set, random_encoder

FAST = ShiftConfig(permutations=50, patches_per_case=2, voxels_per_case=500)


def test_outside_range_fraction_on_a_constructed_example() -> None:
    source = phantom_set("source", 0.0, seed=1, n=3)
    target = phantom_set("target", 0.0, seed=2, n=3)
    # Double one target case's normalised values: its voxels beyond half the source's
    # range edges now lie outside it.
    doubled = target.cases[0].image * 2
    target.cases[0].image[...] = doubled
    cmp = compare_intensity(source, target, voxels_per_case=10**6, seed=0)
    low, high = cmp.source_range
    expected = float(np.mean((doubled < low) | (doubled > high)))
    assert cmp.case_outside[0] == expected > 0.05
    assert cmp.case_wasserstein[0] == max(cmp.case_wasserstein)


def test_each_warning_fires_and_names_its_fix() -> None:
    facts = Facts(
        pretrained_normalization="zscore",
        target_normalization="ct",
        network_to_pretraining=[1.0, 1.0, 2.5],
        outside_fraction=0.2,
        target_modalities=("MR",),
        source_modalities=("CT",),
        p_value=0.001,
        flagged_cases=2,
    )
    said = warn(facts, ShiftConfig())
    fixes = [
        "preprocess.normalization: like_pretrained",
        "preprocess.target_spacing: like_pretrained",
        "preprocess.normalization: zscore",
        "pretrained on the target's modality",
        "strategy: finetune",
    ]
    assert len(said) == len(fixes)
    assert all(fix in text for fix, text in zip(fixes, said, strict=True))
    quiet = Facts("zscore", "zscore", [1.0, 1.0, 1.5], 0.0, ("MR",), ("MR",), 0.5, 0)
    assert warn(quiet, ShiftConfig()) == []


def test_out_of_range_intensities_under_zscore_ask_for_adaptation_not_zscore() -> None:
    facts = Facts(target_normalization="zscore", outside_fraction=0.2)
    (said,) = warn(facts, ShiftConfig())
    assert "preprocess.normalization: zscore" not in said
    assert "strategy: finetune" in said


def test_without_source_images_only_metadata_is_compared() -> None:
    target = phantom_set("target", 1.0, seed=2, n=3)
    record, cases = measure_shift(target, None, None, "zscore", PATCH, FAST)
    assert record.encoder is None and NO_SOURCE in record.notes
    assert list(cases.columns) == ["case_id"] and len(cases) == 3


def test_record_of_a_shifted_target() -> None:
    source = phantom_set("source", 0.0, seed=1, n=6)
    target = phantom_set("target", 1.0, seed=2, n=5)
    record, cases = measure_shift(
        target, source, random_encoder(), "zscore", PATCH, FAST, "demo source"
    )
    assert record.encoder["n_source"] == 6 and record.encoder["n_target"] == 5
    assert record.acquisition["spacing_ratio_to_source"] == [1.0, 1.0, 2.0]
    assert record.labels[0]["target_label"] == 1 and record.labels[0]["source_label"] == 1
    assert list(cases.columns) == [
        "case_id",
        "feature_distance",
        "intensity_distance",
        "outside_fraction",
        "flagged",
    ]


def test_a_two_case_source_gets_the_test_but_no_per_case_distances() -> None:
    source = phantom_set("source", 0.0, seed=1, n=2)
    target = phantom_set("target", 1.0, seed=2, n=3)
    record, cases = measure_shift(target, source, random_encoder(), "zscore", PATCH, FAST)
    assert record.encoder["n_source"] == 2 and record.encoder["flagged_cases"] == 0
    assert cases["feature_distance"].isna().all() and not cases["flagged"].any()
    assert any("per-case distances need 3 or more" in note for note in record.notes)


def _write_set(folder: Path, shift: float, seed: int, n: int) -> Path:
    rows = []
    for i, p in enumerate(draw_set(np.random.default_rng(seed), shifted_domain(shift, COARSEN), n)):
        affine = np.diag([*p.spacing, 1.0])
        image, label = folder / f"img{i}.nii.gz", folder / f"lab{i}.nii.gz"
        folder.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(p.image, affine), image)
        nib.save(nib.Nifti1Image((p.label == 2).astype(np.uint8), affine), label)
        rows.append(
            {
                "case_id": f"c{seed}{i}",
                "patient_id": f"p{i}",
                "image": str(image),
                "label": str(label),
                "modality": "MR",
                "spacing": "x".join(map(str, p.spacing)),
                "shape": "x".join(map(str, p.image.shape)),
                "orientation": "RAS",
            }
        )
    manifest = folder / "manifest.tsv"
    pd.DataFrame(rows).to_csv(manifest, sep="\t", index=False)
    return manifest


def test_cli_writes_the_record_and_the_case_table(tmp_path: Path) -> None:
    source = _write_set(tmp_path / "source", 0.0, seed=1, n=4)
    target = _write_set(tmp_path / "target", 1.0, seed=2, n=3)
    PLAN.save(tmp_path / "plan.json")
    encoder = random_encoder()
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save(
        {
            "format": "medtl",
            "state_dict": encoder.model.state_dict(),
            "model": {"features": [4, 4, 8, 8, 16, 4]},
            "num_classes": 2,
        },
        checkpoint,
    )
    out = tmp_path / "shift"
    result = CliRunner().invoke(
        app,
        [
            "shift",
            "--target",
            str(target),
            "--source",
            str(source),
            "--plan",
            str(tmp_path / "plan.json"),
            "--checkpoint",
            str(checkpoint),
            "--pretrained-with-plan",
            "--model",
            '{"features": [4, 4, 8, 8, 16, 4]}',
            "--settings",
            '{"permutations": 20, "patches_per_case": 2}',
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / "shift.json").read_text())
    assert record["encoder"]["permutations"] == 20 and record["checkpoint"] == "checkpoint.pt"
    assert "100.0% of the encoder's parameters loaded" in record["notes"][0]
    table = pd.read_csv(out / "per_case.tsv", sep="\t")
    assert list(table["case_id"]) == ["c20", "c21", "c22"]


def test_cli_refuses_a_one_case_set_in_one_line(tmp_path: Path) -> None:
    target = _write_set(tmp_path / "target", 1.0, seed=2, n=1)
    PLAN.save(tmp_path / "plan.json")
    result = CliRunner().invoke(
        app,
        [
            "shift",
            "--target",
            str(target),
            "--plan",
            str(tmp_path / "plan.json"),
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 1 and "measuring a shift needs 2 or more" in result.output
