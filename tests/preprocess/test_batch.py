"""Tests for preprocessing every case in one process pool (medtl.preprocess.batch) and
its command (`medtl preprocess --out-dir`)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from medtl.cli.main import app
from medtl.kernel.errors import InputError
from medtl.preprocess.batch import CaseDone, PreprocessError, preprocess_cases
from medtl.preprocess.case import load_case, preprocess_files
from medtl.preprocess.plan import Plan

LPS = np.array([[-1.5, 0, 0, 40], [0, -2.0, 0, 30], [0, 0, 2.5, -12], [0, 0, 0, 1]])
AFFINES = [np.diag([1.0, 1.0, 2.0, 1.0]), LPS, np.diag([2.0, 1.0, 3.0, 1.0])]
PLAN = Plan(
    modality="MR",
    target_spacing=(1.5, 1.5, 2.0),
    normalization="zscore",
    intensity={},
    crop_foreground=True,
    median_shape=(8, 8, 8),
    n_cases=3,
    classes={"1": "a"},
)


def _write(path: Path, array: np.ndarray, affine: np.ndarray) -> str:
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return str(path)


def _volume(seed: int, shape=(10, 12, 9)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = np.zeros(shape, np.float32)
    image[2:8, 3:10, 1:7] = rng.normal(100.0, 10.0, size=(6, 7, 6))
    label = np.zeros(shape, np.uint8)
    label[3:6, 4:8, 2:5] = 1
    return image, label


@pytest.fixture()
def manifest(tmp_path: Path) -> pd.DataFrame:
    """Five labelled cases in three orientations and spacings, and one unlabelled case."""
    data = tmp_path / "data"
    data.mkdir()
    rows = []
    for i in range(5):
        image, label = _volume(i)
        affine = AFFINES[i % len(AFFINES)]
        rows.append(
            {
                "case_id": f"c{i}",
                "image": _write(data / f"img{i}.nii.gz", image, affine),
                "label": _write(data / f"lab{i}.nii.gz", label, affine),
            }
        )
    image, _ = _volume(9)
    rows.append({"case_id": "u", "image": _write(data / "imgu.nii.gz", image, LPS), "label": ""})
    return pd.DataFrame(rows)


def _arrays(path: Path) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    """Every array of an .npz as (dtype, shape, raw bytes): equal means bit for bit."""
    with np.load(path, allow_pickle=False) as z:
        return {k: (str(z[k].dtype), z[k].shape, z[k].tobytes()) for k in z.files}


def _leftovers(folder: Path) -> list[str]:
    """Anything but finished case files: atomic_write's hidden temporaries and the like."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix != ".npz")


# ---------------------------------------------------------------------- library


def test_parallel_output_equals_serial_bit_for_bit(manifest: pd.DataFrame, tmp_path: Path) -> None:
    serial = preprocess_cases(manifest, PLAN, tmp_path / "w1", workers=1)
    parallel = preprocess_cases(manifest, PLAN, tmp_path / "w2", workers=2)
    ids = list(manifest["case_id"])
    assert [d.case_id for d in serial] == [d.case_id for d in parallel] == ids
    assert [d.shape for d in serial] == [d.shape for d in parallel]
    for case_id in ids:
        one = _arrays(tmp_path / "w1" / f"{case_id}.npz")
        two = _arrays(tmp_path / "w2" / f"{case_id}.npz")
        assert one == two, case_id
    # ... and equal to preprocessing the case alone, as the per-case command did
    row = manifest.iloc[1]
    alone = preprocess_files(Path(row["image"]), Path(row["label"]), PLAN)
    got = load_case(tmp_path / "w2" / "c1.npz")
    assert got.image.tobytes() == alone.image.tobytes()
    assert got.label.tobytes() == alone.label.tobytes()
    assert got.meta == json.loads(json.dumps(alone.meta))
    # the unlabelled case is written without a label
    assert load_case(tmp_path / "w2" / "u.npz").label is None
    assert _leftovers(tmp_path / "w1") == _leftovers(tmp_path / "w2") == []


def test_summary_and_callback(manifest: pd.DataFrame, tmp_path: Path) -> None:
    seen = []
    done = preprocess_cases(manifest, PLAN, tmp_path / "out", workers=2, on_done=seen.append)
    assert sorted(r.case_id for r in seen) == sorted(manifest["case_id"])
    first = done[0]
    assert isinstance(first, CaseDone)
    assert first.path == tmp_path / "out" / "c0.npz"
    assert first.shape == load_case(first.path).image.shape[1:]


def test_labelled_only_and_chosen_cases(manifest: pd.DataFrame, tmp_path: Path) -> None:
    done = preprocess_cases(manifest, PLAN, tmp_path / "a", workers=2, labelled_only=True)
    assert [d.case_id for d in done] == ["c0", "c1", "c2", "c3", "c4"]
    assert not (tmp_path / "a" / "u.npz").exists()
    done = preprocess_cases(manifest, PLAN, tmp_path / "b", cases=["c3", "u", "c3"])
    assert [d.case_id for d in done] == ["c3", "u"]
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["c3.npz", "u.npz"]
    with pytest.raises(InputError, match="nope"):
        preprocess_cases(manifest, PLAN, tmp_path / "c", cases=["c1", "nope"])


def test_bad_cases_are_reported_and_the_good_ones_written(
    manifest: pd.DataFrame, tmp_path: Path
) -> None:
    m = manifest.copy()
    # c1: a truncated image file (a download or a copy cut short)
    whole = Path(m.loc[1, "image"]).read_bytes()
    Path(m.loc[1, "image"]).write_bytes(whole[: len(whole) // 2])
    # c3: a label on another grid than its image
    other = tmp_path / "data" / "wrong_grid.nii.gz"
    m.loc[3, "label"] = _write(other, np.zeros((4, 4, 4), np.uint8), AFFINES[0])
    # c4: the image file is gone
    m.loc[4, "image"] = str(tmp_path / "data" / "missing.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    (out / "c3.npz").write_bytes(b"an older run's file")  # must not survive as c3's result

    with pytest.raises(PreprocessError) as info:
        preprocess_cases(m, PLAN, out, workers=2)
    err = info.value
    assert [f.case_id for f in err.failed] == ["c1", "c3", "c4"]
    assert [d.case_id for d in err.done] == ["c0", "c2", "u"]
    by_id = {f.case_id: f for f in err.failed}
    assert by_id["c1"].path == m.loc[1, "image"]
    assert "cannot be read" in by_id["c1"].reason
    assert by_id["c3"].path == str(other)
    assert "does not match image grid" in by_id["c3"].reason
    assert by_id["c4"].path == str(tmp_path / "data" / "missing.nii.gz")
    msg = str(err)
    assert msg.startswith("3 of 6 cases could not be preprocessed")
    for f in err.failed:
        assert f"{f.case_id}: {f.path}: {f.reason}. How to fix: {f.fix}" in msg
    assert sorted(p.name for p in out.iterdir()) == ["c0.npz", "c2.npz", "u.npz"]
    assert _leftovers(out) == []


def test_bad_case_serial_gives_the_same_report(manifest: pd.DataFrame, tmp_path: Path) -> None:
    m = manifest.copy()
    m.loc[2, "image"] = str(tmp_path / "missing.nii.gz")
    with pytest.raises(PreprocessError) as serial:
        preprocess_cases(m, PLAN, tmp_path / "w1", workers=1)
    with pytest.raises(PreprocessError) as parallel:
        preprocess_cases(m, PLAN, tmp_path / "w2", workers=3)
    assert str(serial.value) == str(parallel.value)
    assert [f.case_id for f in serial.value.failed] == ["c2"]


def test_temporaries_of_a_killed_run_are_removed(manifest: pd.DataFrame, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / ".c0.npz.k1ll3d.tmp.npz").write_bytes(b"half")
    (out / "other.npz").write_bytes(b"not ours")  # other files are left alone
    preprocess_cases(manifest, PLAN, out, workers=2, cases=["c0", "c1"])
    assert sorted(p.name for p in out.iterdir()) == ["c0.npz", "c1.npz", "other.npz"]


@pytest.mark.parametrize(
    ("ids", "match"),
    [(["a", "b", "a"], "more than once"), (["a", "../b"], "not plain file names")],
)
def test_case_ids_must_be_unique_file_names(
    manifest: pd.DataFrame, tmp_path: Path, ids: list[str], match: str
) -> None:
    m = manifest.head(len(ids)).assign(case_id=ids)
    with pytest.raises(InputError, match=match):
        preprocess_cases(m, PLAN, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # checked before anything is written


def test_workers_must_be_positive(manifest: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="workers >= 1"):
        preprocess_cases(manifest, PLAN, tmp_path / "out", workers=0)


# ---------------------------------------------------------------------- command

runner = CliRunner()


def _stderr(result) -> str:
    try:
        return result.stderr
    except ValueError:
        return result.output


@pytest.fixture()
def stage(manifest: pd.DataFrame, tmp_path: Path) -> tuple[Path, Path]:
    """The manifest.tsv and plan.json the command reads."""
    tsv = tmp_path / "manifest.tsv"
    manifest.to_csv(tsv, sep="\t", index=False)
    plan = tmp_path / "plan.json"
    PLAN.save(plan)
    return tsv, plan


def test_command_writes_every_case(stage: tuple[Path, Path], tmp_path: Path) -> None:
    tsv, plan = stage
    out = tmp_path / "cases"
    args = ["preprocess", "--manifest", str(tsv), "--plan", str(plan), "--out-dir", str(out)]
    result = runner.invoke(app, [*args, "--workers", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    assert sorted(p.stem for p in out.iterdir()) == ["c0", "c1", "c2", "c3", "c4", "u"]
    assert "preprocess: 6 cases in" in result.output
    assert str(out) in result.output
    # the workflow's form: labelled cases only
    labelled = tmp_path / "labelled"
    args[-1] = str(labelled)
    result = runner.invoke(app, [*args, "--labelled-only", "--quiet"])
    assert result.exit_code == 0, result.output
    assert sorted(p.stem for p in labelled.iterdir()) == ["c0", "c1", "c2", "c3", "c4"]
    assert _arrays(labelled / "c2.npz") == _arrays(out / "c2.npz")


def test_command_single_case_form(stage: tuple[Path, Path], tmp_path: Path) -> None:
    tsv, plan = stage
    target = tmp_path / "one" / "anything.npz"
    base = ["preprocess", "--manifest", str(tsv), "--plan", str(plan)]
    result = runner.invoke(app, [*base, "--case", "c1", "--out", str(target)])
    assert result.exit_code == 0, result.output
    assert load_case(target).image.ndim == 4
    both = runner.invoke(app, [*base, "--case", "c1", "--out", str(target), "--out-dir", "x"])
    assert both.exit_code == 1
    assert "exactly one of --out-dir and --out" in _stderr(both)
    two = runner.invoke(app, [*base, "--case", "c1", "--case", "c2", "--out", str(target)])
    assert two.exit_code == 1
    assert "give exactly one --case" in _stderr(two)


def test_command_names_the_bad_case(
    stage: tuple[Path, Path], manifest: pd.DataFrame, tmp_path: Path
) -> None:
    tsv, plan = stage
    m = manifest.copy()
    m.loc[0, "image"] = str(tmp_path / "gone.nii.gz")
    m.to_csv(tsv, sep="\t", index=False)
    out = tmp_path / "cases"
    args = ["preprocess", "--manifest", str(tsv), "--plan", str(plan), "--out-dir", str(out)]
    result = runner.invoke(app, [*args, "--workers", "2", "--quiet"])
    assert result.exit_code == 1
    err = _stderr(result)
    assert err.startswith("medtl: error: 1 of 6 cases could not be preprocessed")
    assert f"c0: {tmp_path / 'gone.nii.gz'}: cannot be read as NIfTI" in err
    assert "How to fix" in err
    assert "Traceback" not in result.output
    assert sorted(p.stem for p in out.iterdir()) == ["c1", "c2", "c3", "c4", "u"]


def test_command_help_explains_the_options() -> None:
    result = runner.invoke(app, ["preprocess", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for option in ("--out-dir", "--workers", "--case", "--labelled-only", "--out", "--quiet"):
        assert option in text
