"""Tests for the preprocessing plan (medtl.preprocess.plan) and per-case preprocessing
(medtl.preprocess.case), including the exact inverse used for predictions."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from medtl.config import PreprocessConfig
from medtl.kernel.errors import ConfigError, InputError
from medtl.preprocess.case import (
    PreprocessedCase,
    argmax_classes,
    load_case,
    nonzero_bbox,
    normalise,
    preprocess_arrays,
    preprocess_files,
    restore_labels,
    restore_map,
    save_case,
)
from medtl.preprocess.plan import Plan, canonical_spacing, make_plan

SHAPE = (10, 12, 9)
RAS = np.array([[1.0, 0, 0, -5], [0, 2.0, 0, 3], [0, 0, 3.0, 7], [0, 0, 0, 1]])
LPS = np.array([[-1.5, 0, 0, 40], [0, -2.0, 0, 30], [0, 0, 2.5, -12], [0, 0, 0, 1]])
PERMUTED = np.array([[0, -2.0, 0, 50], [0, 0, -3.0, 20], [1.5, 0, 0, -10], [0, 0, 0, 1]])
AFFINES = {"ras": RAS, "lps": LPS, "permuted": PERMUTED}
BOX = (slice(2, 8), slice(3, 10), slice(1, 7))  # the image's non-zero block


def _case(seed: int = 0, shape: tuple[int, int, int] = SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """An image that is zero outside BOX, and a two-class label inside BOX."""
    rng = np.random.default_rng(seed)
    image = np.zeros(shape, np.float32)
    image[BOX] = rng.normal(100.0, 10.0, size=image[BOX].shape).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    label[3:6, 4:8, 2:5] = 1
    label[6:8, 8:10, 5:7] = 2
    label[5, 7, 4] = 2
    return image, label


def _plan(spacing, normalization: str = "zscore", crop: bool = True, intensity=None) -> Plan:
    return Plan(
        modality="MR",
        target_spacing=tuple(float(s) for s in spacing),
        normalization=normalization,
        intensity=intensity or {},
        crop_foreground=crop,
        median_shape=(8, 8, 8),
        n_cases=1,
        classes={"1": "a", "2": "b"},
    )


def _one_hot(label: np.ndarray, n_classes: int = 3) -> torch.Tensor:
    t = torch.from_numpy(label.astype(np.int64))
    return torch.nn.functional.one_hot(t, n_classes).permute(3, 0, 1, 2).float()


def _write(path: Path, array: np.ndarray, affine: np.ndarray) -> str:
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return str(path)


# ------------------------------------------------------------------------ plan


@pytest.fixture()
def manifest(tmp_path: Path) -> pd.DataFrame:
    """Three labelled MR cases of different spacing and one unlabelled case."""
    rows = []
    spacings = [(1.0, 1.0, 2.0), (1.0, 1.0, 3.0), (2.0, 1.0, 2.0)]
    for i, sp in enumerate(spacings):
        image, label = _case(seed=i)
        affine = np.diag([*sp, 1.0])
        rows.append(
            {
                "case_id": f"c{i}",
                "image": _write(tmp_path / f"img{i}.nii.gz", image, affine),
                "label": _write(tmp_path / f"lab{i}.nii.gz", label, affine),
                "modality": "MR",
            }
        )
    # unlabelled case with a huge spacing: must not enter the plan
    image, _ = _case(seed=9)
    rows.append(
        {
            "case_id": "u",
            "image": _write(tmp_path / "imgu.nii.gz", image * 50, np.diag([9.0, 9.0, 9.0, 1])),
            "label": "",
            "modality": "MR",
        }
    )
    return pd.DataFrame(rows)


def test_make_plan_auto_uses_median_spacing(manifest: pd.DataFrame) -> None:
    plan = make_plan(manifest, PreprocessConfig(), {1: "a", 2: "b"})
    assert plan.target_spacing == (1.0, 1.0, 2.0)
    assert plan.n_cases == 3
    assert plan.modality == "MR"
    assert plan.normalization == "zscore"
    assert plan.classes == {"1": "a", "2": "b"}
    assert plan.crop_foreground is True
    # median physical extent (10 mm, 12 mm, 18 mm) on the 1 x 1 x 2 mm grid
    assert plan.median_shape == (10, 12, 9)


def test_make_plan_explicit_spacing_is_respected(manifest: pd.DataFrame) -> None:
    cfg = PreprocessConfig(target_spacing=(0.5, 2.0, 3.0), crop_foreground=False)
    plan = make_plan(manifest, cfg, {1: "a"})
    assert plan.target_spacing == (0.5, 2.0, 3.0)
    assert plan.crop_foreground is False
    assert plan.median_shape == (20, 6, 6)


def test_make_plan_bad_spacing_string_raises(manifest: pd.DataFrame) -> None:
    with pytest.raises(ConfigError, match="preprocess.target_spacing"):
        make_plan(manifest, PreprocessConfig(target_spacing="median"), {1: "a"})


def test_make_plan_intensity_stats_over_foreground(manifest: pd.DataFrame) -> None:
    plan = make_plan(manifest, PreprocessConfig(), {1: "a"})
    labelled = manifest[manifest["label"] != ""]
    fg = np.concatenate(
        [
            np.asarray(nib.load(r.image).dataobj, np.float32)[
                np.asarray(nib.load(r.label).dataobj) > 0
            ]
            for r in labelled.itertuples()
        ]
    )
    assert plan.intensity["mean"] == pytest.approx(float(fg.mean()), rel=1e-5)
    assert plan.intensity["std"] == pytest.approx(float(fg.std()), rel=1e-4)
    assert plan.intensity["p005"] == pytest.approx(float(np.percentile(fg, 0.5)), rel=1e-5)
    assert plan.intensity["p995"] == pytest.approx(float(np.percentile(fg, 99.5)), rel=1e-5)
    # the zero background and the unlabelled case (x50) are not in the statistics
    assert 80 < plan.intensity["mean"] < 120


@pytest.mark.parametrize(
    ("modality", "normalization", "expected"),
    [
        ("MR", "auto", "zscore"),
        ("CT", "auto", "ct"),
        ("CT", "zscore", "zscore"),
        ("MR", "ct", "ct"),
    ],
)
def test_make_plan_normalization_by_modality(
    manifest: pd.DataFrame, modality: str, normalization: str, expected: str
) -> None:
    m = manifest.assign(modality=modality)
    plan = make_plan(m, PreprocessConfig(normalization=normalization), {1: "a"})
    assert plan.modality == modality
    assert plan.normalization == expected


def test_make_plan_mixed_modalities(manifest: pd.DataFrame) -> None:
    m = manifest.copy()
    m.loc[0, "modality"] = "CT"
    plan = make_plan(m, PreprocessConfig(), {1: "a"})
    assert plan.modality == "mixed"
    assert plan.normalization == "zscore"


def test_make_plan_needs_labelled_cases(manifest: pd.DataFrame) -> None:
    with pytest.raises(InputError, match="no case has a label"):
        make_plan(manifest.assign(label=""), PreprocessConfig(), {1: "a"})


def test_make_plan_uses_canonical_spacing(tmp_path: Path) -> None:
    image, label = _case()
    m = pd.DataFrame(
        [
            {
                "image": _write(tmp_path / "i.nii.gz", image, PERMUTED),
                "label": _write(tmp_path / "l.nii.gz", label, PERMUTED),
                "modality": "MR",
            }
        ]
    )
    plan = make_plan(m, PreprocessConfig(), {1: "a"})
    assert plan.target_spacing == (2.0, 3.0, 1.5)
    # array axes (10, 12, 9) map to RAS axes (12, 9, 10)
    assert plan.median_shape == (12, 9, 10)


@pytest.mark.parametrize(
    ("affine", "expected"),
    [(RAS, (1.0, 2.0, 3.0)), (LPS, (1.5, 2.0, 2.5)), (PERMUTED, (2.0, 3.0, 1.5))],
)
def test_canonical_spacing(affine: np.ndarray, expected: tuple[float, float, float]) -> None:
    img = nib.Nifti1Image(np.zeros(SHAPE, np.float32), affine)
    np.testing.assert_allclose(canonical_spacing(img), expected)


def test_plan_save_load_round_trip(manifest: pd.DataFrame, tmp_path: Path) -> None:
    plan = make_plan(manifest, PreprocessConfig(target_spacing=(1.0, 1.5, 2.0)), {1: "a"})
    path = tmp_path / "sub" / "plan.json"
    plan.save(path)
    assert json.loads(path.read_text())["target_spacing"] == [1.0, 1.5, 2.0]
    loaded = Plan.load(path)
    assert loaded == plan
    assert isinstance(loaded.target_spacing, tuple)
    assert isinstance(loaded.median_shape, tuple)


def test_plan_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="plan not found"):
        Plan.load(tmp_path / "nope.json")


# ------------------------------------------------------------------------ case


@pytest.mark.parametrize("crop", [True, False])
@pytest.mark.parametrize("name", sorted(AFFINES))
def test_restore_labels_exact_round_trip(name: str, crop: bool) -> None:
    affine = AFFINES[name]
    image, label = _case()
    img, lab = nib.Nifti1Image(image, affine), nib.Nifti1Image(label, affine)
    spacing = canonical_spacing(img)
    case = preprocess_arrays(img, lab, _plan(spacing, crop=crop))
    assert case.image.dtype == np.float32
    assert case.label is not None and case.label.dtype == np.uint8
    assert case.image.shape[1:] == case.label.shape
    restored = restore_labels(_one_hot(case.label), case.meta)
    assert restored.dtype == np.uint8
    assert restored.shape == SHAPE
    np.testing.assert_array_equal(restored, label)


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_preprocess_reorients_to_ras(name: str) -> None:
    """The preprocessed grid is the canonical (RAS) one: world axes in array order."""
    affine = AFFINES[name]
    image, label = _case()
    img, lab = nib.Nifti1Image(image, affine), nib.Nifti1Image(label, affine)
    case = preprocess_arrays(img, lab, _plan(canonical_spacing(img), crop=False))
    canon = nib.as_closest_canonical(nib.Nifti1Image(label, affine))
    np.testing.assert_array_equal(case.label, np.asarray(canon.dataobj))


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_restore_labels_other_spacing_gives_original_grid(name: str) -> None:
    affine = AFFINES[name]
    image, label = _case()
    img, lab = nib.Nifti1Image(image, affine), nib.Nifti1Image(label, affine)
    case = preprocess_arrays(img, lab, _plan((0.7, 1.3, 2.1)))
    cropped = case.meta["cropped_shape"]
    spacing = case.meta["source_spacing"]
    expected = tuple(
        int(round(n * s / t)) for n, s, t in zip(cropped, spacing, (0.7, 1.3, 2.1), strict=True)
    )
    assert case.image.shape == (1, *expected)
    assert case.meta["original_shape"] == list(SHAPE)
    np.testing.assert_allclose(case.meta["original_affine"], affine)
    restored = restore_labels(_one_hot(case.label), case.meta)
    assert restored.shape == SHAPE
    # nearly the same labels after resampling there and back
    assert np.mean(restored == label) > 0.95
    assert set(np.unique(restored)) <= {0, 1, 2}


def test_restore_labels_outside_crop_is_background() -> None:
    image, label = _case()
    img, lab = nib.Nifti1Image(image, RAS), nib.Nifti1Image(label, RAS)
    case = preprocess_arrays(img, lab, _plan(canonical_spacing(img)))
    probs = torch.zeros((3, *case.label.shape))
    probs[1] = 1.0  # everything class 1 inside the crop
    restored = restore_labels(probs, case.meta)
    inside = np.zeros(SHAPE, bool)
    inside[BOX] = True
    assert np.all(restored[inside] == 1)
    assert np.all(restored[~inside] == 0)


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_restore_map_round_trip_and_fill(name: str) -> None:
    """Float maps come back on the original grid, channels last, as the labels do."""
    affine = AFFINES[name]
    image, label = _case()
    img, lab = nib.Nifti1Image(image, affine), nib.Nifti1Image(label, affine)
    case = preprocess_arrays(img, lab, _plan(canonical_spacing(img), crop=True))
    probs = _one_hot(case.label)
    restored = restore_map(probs, case.meta, fill=[1.0, 0.0, 0.0])
    assert restored.dtype == np.float32 and restored.shape == (*SHAPE, 3)
    # Same spacing: the resampling is the identity, so the one-hot map comes back exactly.
    np.testing.assert_array_equal(restored.argmax(-1), label)
    np.testing.assert_array_equal(restored.sum(-1), np.ones(SHAPE, np.float32))
    np.testing.assert_array_equal(restored.argmax(-1), restore_labels(probs, case.meta))
    # A scalar map: the fill outside the crop, the values inside.
    scalar = restore_map(torch.full((1, *case.label.shape), 0.5), case.meta, fill=[0.0])
    assert set(np.unique(scalar)) <= {0.0, 0.5} and scalar.shape == (*SHAPE, 1)
    assert np.count_nonzero(scalar) == int(np.prod(case.meta["cropped_shape"]))


def test_argmax_classes_is_torch_argmax_ties_included() -> None:
    gen = torch.Generator().manual_seed(0)
    for classes in (1, 2, 3, 5):
        probs = torch.randint(0, 4, (classes, 7, 6, 5), generator=gen).float()  # many ties
        labels = argmax_classes(probs)
        assert labels.dtype == torch.uint8
        assert torch.equal(labels.long(), probs.argmax(0))


def test_restored_labels_are_the_argmax_of_the_restored_probabilities() -> None:
    """At another spacing (trilinear in between) and with a crop, voxel for voxel."""
    image, label = _case()
    img, lab = nib.Nifti1Image(image, RAS), nib.Nifti1Image(label, RAS)
    spacing = [s * 1.7 for s in canonical_spacing(img)]
    case = preprocess_arrays(img, lab, _plan(spacing, crop=True))
    probs = torch.softmax(
        torch.randn((3, *case.label.shape), generator=torch.Generator().manual_seed(1)), 0
    )
    mapped = restore_map(probs, case.meta, fill=[1.0, 0.0, 0.0])
    np.testing.assert_array_equal(restore_labels(probs, case.meta), mapped.argmax(-1))


def test_restore_map_other_spacing_keeps_bounds() -> None:
    """Trilinear resampling mixes neighbours convexly: bounds between maps survive it."""
    image, label = _case()
    img, lab = nib.Nifti1Image(image, RAS), nib.Nifti1Image(label, RAS)
    case = preprocess_arrays(img, lab, _plan((0.7, 1.3, 2.1)))
    gen = torch.Generator().manual_seed(0)
    high = torch.rand((1, *case.label.shape), generator=gen)
    low = high * torch.rand((1, *case.label.shape), generator=gen)
    both = restore_map(torch.cat([high, low]), case.meta, fill=[0.0, 0.0])
    assert both.shape == (*SHAPE, 2)
    assert np.all(both[..., 1] <= both[..., 0]) and np.all(both >= 0) and np.all(both <= 1)


def test_label_with_other_affine_is_refused() -> None:
    image, label = _case()
    shifted = RAS.copy()
    shifted[0, 3] += 5.0
    with pytest.raises(InputError, match="does not match image grid"):
        preprocess_arrays(
            nib.Nifti1Image(image, RAS), nib.Nifti1Image(label, shifted), _plan((1, 2, 3))
        )


def test_label_with_other_shape_is_refused() -> None:
    image, label = _case()
    with pytest.raises(InputError, match="label grid"):
        preprocess_arrays(
            nib.Nifti1Image(image, RAS), nib.Nifti1Image(label[:-1], RAS), _plan((1, 2, 3))
        )


def test_five_d_image_is_refused() -> None:
    img = nib.Nifti1Image(np.ones((4, 4, 4, 2, 2), np.float32), RAS)
    with pytest.raises(InputError, match="3-D"):
        preprocess_arrays(img, None, _plan((1, 2, 3)))


def test_channels_last_image_gives_one_normalised_channel_each() -> None:
    rng = np.random.default_rng(0)
    data = np.stack([rng.normal(10, 2, (8, 6, 4)), rng.normal(-50, 9, (8, 6, 4))], axis=-1)
    img = nib.Nifti1Image(data.astype(np.float32), LPS)
    case = preprocess_arrays(img, None, _plan(tuple(float(s) for s in (2.0, 2.0, 3.0))))
    assert case.image.shape[0] == 2 and case.meta["channels"] == 2
    for c in range(2):
        assert abs(case.image[c].mean()) < 1e-4 and abs(case.image[c].std() - 1) < 1e-3


def test_crop_foreground_crops_to_nonzero_bbox() -> None:
    image, label = _case()
    img = nib.Nifti1Image(image, RAS)
    case = preprocess_arrays(img, nib.Nifti1Image(label, RAS), _plan((1, 2, 3)))
    assert case.meta["bbox"] == [[2, 8], [3, 10], [1, 7]]
    assert case.image.shape == (1, 6, 7, 6)
    np.testing.assert_array_equal(case.label, label[BOX])
    full = preprocess_arrays(img, None, _plan((1, 2, 3), crop=False))
    assert full.image.shape == (1, *SHAPE)
    assert full.label is None


def test_nonzero_bbox() -> None:
    a = np.zeros((5, 6, 7))
    a[1, 2:4, 6] = 3
    assert nonzero_bbox(a) == [(1, 2), (2, 4), (6, 7)]
    assert nonzero_bbox(np.zeros((2, 3, 4))) == [(0, 2), (0, 3), (0, 4)]


def test_zscore_normalisation_over_nonzero_voxels() -> None:
    image, _ = _case()
    out = normalise(image, _plan((1, 1, 1)))
    mask = image != 0
    assert out.dtype == np.float32
    assert float(out[mask].mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(out[mask].std()) == pytest.approx(1.0, abs=1e-3)
    # and in the pipeline: the cropped block is all non-zero
    case = preprocess_arrays(nib.Nifti1Image(image, RAS), None, _plan((1, 2, 3)))
    assert float(case.image.mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(case.image.std()) == pytest.approx(1.0, abs=1e-3)


def test_ct_normalisation_clips_and_uses_plan_statistics() -> None:
    stats = {"mean": 50.0, "std": 10.0, "p005": 0.0, "p995": 100.0}
    plan = _plan((1, 1, 1), normalization="ct", intensity=stats)
    image = np.array([-500.0, 0.0, 50.0, 70.0, 1000.0], np.float32).reshape(5, 1, 1)
    out = normalise(image, plan)
    np.testing.assert_allclose(out.ravel(), [-5.0, -5.0, 0.0, 2.0, 5.0])


@pytest.mark.parametrize("with_label", [True, False])
def test_save_load_case_round_trip(tmp_path: Path, with_label: bool) -> None:
    image, label = _case()
    case = preprocess_arrays(
        nib.Nifti1Image(image, LPS),
        nib.Nifti1Image(label, LPS) if with_label else None,
        _plan((1.5, 2.0, 2.5)),
    )
    path = tmp_path / "cases" / "c0.npz"
    save_case(path, case)
    assert sorted(p.name for p in path.parent.iterdir()) == ["c0.npz"]  # no temp files left
    with np.load(path, allow_pickle=False) as z:  # no pickled objects inside
        assert set(z.files) == ({"image", "meta", "label"} if with_label else {"image", "meta"})
        json.loads(str(z["meta"]))
    loaded = load_case(path)
    assert isinstance(loaded, PreprocessedCase)
    np.testing.assert_array_equal(loaded.image, case.image)
    assert loaded.image.dtype == np.float32
    if with_label:
        np.testing.assert_array_equal(loaded.label, case.label)
    else:
        assert loaded.label is None
    assert loaded.meta == case.meta
    if with_label:
        np.testing.assert_array_equal(restore_labels(_one_hot(loaded.label), loaded.meta), label)


def test_preprocess_files_matches_arrays(tmp_path: Path) -> None:
    image, label = _case()
    ip = Path(_write(tmp_path / "i.nii.gz", image, LPS))
    lp = Path(_write(tmp_path / "l.nii.gz", label, LPS))
    plan = _plan((1.5, 2.0, 2.5))
    a = preprocess_files(ip, lp, plan)
    b = preprocess_arrays(nib.Nifti1Image(image, LPS), nib.Nifti1Image(label, LPS), plan)
    np.testing.assert_allclose(a.image, b.image, rtol=1e-6)
    np.testing.assert_array_equal(a.label, b.label)
    assert preprocess_files(ip, None, plan).label is None
