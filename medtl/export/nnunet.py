"""Export a manifest as an nnU-Net v2 raw dataset, and medtl's folds as nnU-Net's splits.

The reverse of :mod:`medtl.io.nnunet`: :func:`export_nnunet` writes
``DatasetXXX_Name/`` (``imagesTr/``, ``labelsTr/``, ``imagesTs/``, ``dataset.json``);
:func:`write_nnunet_splits` writes medtl's folds as ``splits_final.json`` and
:func:`check_same_folds` checks nnU-Net ran on them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from medtl.io.external_dataset import NIFTI_ENDINGS, check_label, nifti_shape, spatial
from medtl.io.outputs import check_separate
from medtl.kernel.classes import ClassMap
from medtl.kernel.errors import InputError, MedtlError
from medtl.kernel.files import atomic_write, atomic_write_text

_ID_OK = re.compile(r"^[A-Za-z0-9_-]+$")


def nnunet_case_id(case_id: str) -> str:
    """The nnU-Net identifier :func:`export_nnunet` uses for a case id.

    Every character other than a letter, digit, ``_`` or ``-`` becomes ``_``.

    Example:
        >>> nnunet_case_id("pat 01.ct")
        'pat_01_ct'
    """
    return re.sub(r"[^A-Za-z0-9_-]", "_", str(case_id))


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and np.isnan(value):
        return True
    return str(value).strip() == ""


def _write_volume(src: Path, dst: Path, channel: int | None, file_ending: str) -> None:
    """Write one channel of ``src`` (or all of a 3-D ``src``) to ``dst``, header kept.

    A 3-D source whose ending matches is copied byte for byte.
    """
    if channel is None and src.name.endswith(file_ending):
        atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))
        return
    img = nib.load(str(src))
    index = channel if channel is not None else (0 if img.ndim == 4 else None)
    # nibabel moves the file's scl_slope/scl_inter onto the proxy and blanks the header
    slope, inter = (float(getattr(img.dataobj, k, np.nan)) for k in ("slope", "inter"))
    scaled = bool(np.isfinite(slope) and slope != 0 and (slope, inter) != (1.0, 0.0))
    if scaled:  # keep the stored integers and their scaling, not a re-quantised copy
        raw = np.asanyarray(img.dataobj.get_unscaled())
        data = raw[..., index] if index is not None else raw
    else:
        data = np.asanyarray(img.dataobj[..., index] if index is not None else img.dataobj)
    out = type(img)(data, img.affine, img.header)
    if scaled:
        out.header["scl_slope"], out.header["scl_inter"] = slope, inter
    atomic_write(dst, lambda tmp: nib.save(out, str(tmp)))


def export_nnunet(
    manifest: pd.DataFrame,
    out_root: str | Path,
    dataset_id: int,
    name: str,
    classes: dict[int, str],
    channel_names: dict[int, str],
    file_ending: str = ".nii.gz",
    *,
    base_dir: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the manifest's cases as an nnU-Net v2 raw dataset.

    Writes ``out_root/Dataset{dataset_id:03d}_{name}/`` with ``imagesTr/{case}_{c:04d}``
    per channel (a 3-D image is channel 0; a 4-D image is split along its last axis),
    ``labelsTr/{case}`` for labelled cases, unlabelled cases in ``imagesTs/``, and
    ``dataset.json``. Case ids become nnU-Net identifiers with :func:`nnunet_case_id`.
    Affines and headers are kept exactly (3-D files with the same ending are copied byte
    for byte). The dataset is assembled in a hidden folder beside it and renamed into
    place at the end, so a killed export never leaves a half-written dataset.

    Args:
        manifest: rows with ``case_id``, ``image`` and (optional) ``label``; an empty or
            missing label marks an unlabelled (test) case.
        out_root: the nnU-Net raw folder (``nnUNet_raw``).
        dataset_id: nnU-Net dataset id, 1 to 999.
        name: dataset name (letters, digits, ``_``, ``-``).
        classes: label value -> class name, background excluded; values must be 1..N.
        channel_names: channel index -> name (0..C-1); nnU-Net normalises ``"CT"``
            channels with CT statistics and every other name with z-scores.
        file_ending: ``".nii.gz"`` or ``".nii"``.
        base_dir: folder that relative manifest paths are relative to (default: the
            current directory).
        overwrite: replace an existing folder of the same name.

    Returns:
        The dataset folder.

    Raises:
        MedtlError: for bad arguments, an image whose channel count differs from
            ``channel_names``, or case ids that collide once sanitised.
        InputError: for a missing or unreadable image or label, or an existing output.

    Example:
        >>> import tempfile
        >>> tmp = Path(tempfile.mkdtemp())
        >>> img = nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.float32), np.eye(4))
        >>> nib.save(img, str(tmp / "a.nii.gz"))
        >>> m = pd.DataFrame({"case_id": ["a.1"], "image": [str(tmp / "a.nii.gz")], "label": [""]})
        >>> out = export_nnunet(m, tmp / "raw", 7, "Demo", {1: "lesion"}, {0: "T1", 1: "T2"})
        >>> out.name, sorted(p.name for p in (out / "imagesTs").iterdir())
        ('Dataset007_Demo', ['a_1_0000.nii.gz', 'a_1_0001.nii.gz'])
    """
    out_root = Path(out_root)
    labels_json, channels_json = _export_metadata(dataset_id, name, classes, channel_names)
    _check_table(manifest, file_ending)
    plan = _plan_cases(manifest, channel_names, Path(base_dir) if base_dir is not None else None)
    folder_name = f"Dataset{dataset_id:03d}_{name}"
    final = out_root / folder_name
    _check_destination(out_root, final, dataset_id, plan, overwrite)

    staging = out_root / f".{folder_name}.partial"
    if staging.exists():
        shutil.rmtree(staging)  # left by a killed export; only ever written by us
    n_training = _write_cases(staging, plan, file_ending)
    dataset_json = {
        "name": name,
        "channel_names": channels_json,
        "labels": labels_json,
        "numTraining": n_training,
        "file_ending": file_ending,
    }
    (staging / "imagesTr").mkdir(parents=True, exist_ok=True)
    (staging / "labelsTr").mkdir(parents=True, exist_ok=True)
    atomic_write_text(staging / "dataset.json", json.dumps(dataset_json, indent=2) + "\n")
    _swap_into_place(staging, final)
    return final


@dataclass(frozen=True)
class _PlannedCase:
    """One case to export: its nnU-Net id, its files and the channels its image holds."""

    case_id: str
    image: Path
    label: Path | None
    in_file: int


def _check_table(manifest: pd.DataFrame, file_ending: str) -> None:
    """The file ending is NIfTI's and the manifest has the columns the export reads."""
    if file_ending not in NIFTI_ENDINGS:
        raise MedtlError(
            f"file_ending must be '.nii.gz' or '.nii', found {file_ending!r}. "
            "How to fix: export NIfTI (the default '.nii.gz')"
        )
    missing_cols = [c for c in ("case_id", "image") if c not in manifest.columns]
    if missing_cols:
        raise MedtlError(
            f"manifest lacks column(s) {missing_cols} (found {list(manifest.columns)}). "
            "How to fix: pass the manifest written by `medtl ingest`"
        )


def _plan_cases(
    manifest: pd.DataFrame, channel_names: dict[int, str], base: Path | None
) -> list[_PlannedCase]:
    """Check every case before anything is written: ids, files, channels and grids."""

    def resolve(value: Any) -> Path:
        p = Path(str(value))
        return base / p if base is not None and not p.is_absolute() else p

    plan: list[_PlannedCase] = []
    by_id: dict[str, str] = {}
    for row in manifest.to_dict("records"):
        original = str(row["case_id"])
        case_id = nnunet_case_id(original)
        if not case_id:
            raise MedtlError(
                "a case has an empty case_id. How to fix: give every manifest row a case_id"
            )
        clash = by_id.get(case_id.lower())
        if clash is not None:
            raise MedtlError(
                f"case ids {clash!r} and {original!r} both become the nnU-Net identifier "
                f"{case_id!r} (identifiers allow letters, digits, '_' and '-', and must differ "
                "in more than letter case). How to fix: rename one of the cases"
            )
        by_id[case_id.lower()] = original
        image = resolve(row["image"])
        label = None if _missing(row.get("label")) else resolve(row["label"])
        plan.append(_plan_case(original, case_id, image, label, channel_names))
    if not plan:
        raise MedtlError("the manifest holds no case. How to fix: ingest some cases first")
    return plan


def _plan_case(
    original: str, case_id: str, image: Path, label: Path | None, channel_names: dict[int, str]
) -> _PlannedCase:
    """One case's image (3-D, or 4-D with ``channel_names`` channels) and label on its grid."""
    n_channels = len(channel_names)
    if not image.is_file():
        raise InputError(image, f"image of case {original!r} not found", "re-run ingest")
    shape = nifti_shape(image)
    if len(shape) == 4 and shape[3] > 1:
        in_file, grid = shape[3], shape[:3]
    elif spatial(shape) is not None:
        in_file, grid = 1, spatial(shape)
    else:
        raise InputError(
            image,
            f"expected a 3-D image or 4-D (x, y, z, channel), found shape {shape}",
            "store one case as a 3-D image or a 4-D image with channels last",
        )
    if in_file != n_channels:
        raise MedtlError(
            f"{image}: case {original!r} has {in_file} channel(s), expected "
            f"{n_channels} ({', '.join(channel_names.values())}). How to fix: pass "
            "channel_names matching the images, or give every case all channels"
        )
    if label is not None:
        if not label.is_file():
            raise InputError(label, f"label of case {original!r} not found", "re-run ingest")
        check_label(label, grid)
    return _PlannedCase(case_id, image, label, in_file)


def _check_destination(
    out_root: Path, final: Path, dataset_id: int, plan: list[_PlannedCase], overwrite: bool
) -> None:
    """Refuse to write over the input, over an existing dataset, or beside one of the same id."""
    # An export over the dataset the cases were ingested from would delete its own input.
    check_separate(
        final, [p for case in plan for p in (case.image, case.label)], "the dataset folder"
    )
    if final.exists() and not overwrite:
        raise InputError(
            final,
            "the nnU-Net dataset folder already exists",
            "choose another dataset_id or name, remove the folder, or pass overwrite=True",
        )
    if out_root.is_dir():
        others = [
            p.name
            for p in out_root.glob(f"Dataset{dataset_id:03d}_*")
            if p.is_dir() and p.name != final.name
        ]
        if others:
            raise InputError(
                out_root / others[0],
                f"dataset id {dataset_id:03d} is already used by {others[0]} (nnU-Net finds "
                "datasets by id, so two folders with one id break `-d {dataset_id}`)",
                "choose another dataset_id or remove the other folder",
            )


def _write_cases(staging: Path, plan: list[_PlannedCase], file_ending: str) -> int:
    """Write every case's channel files and label into ``staging``; return the labelled count."""
    n_training = 0
    for case in plan:
        split = "imagesTr" if case.label is not None else "imagesTs"
        for c in range(case.in_file):
            dst = staging / split / f"{case.case_id}_{c:04d}{file_ending}"
            _write_volume(case.image, dst, c if case.in_file > 1 else None, file_ending)
        if case.label is not None:
            dst = staging / "labelsTr" / f"{case.case_id}{file_ending}"
            _write_volume(case.label, dst, None, file_ending)
            n_training += 1
    return n_training


def _swap_into_place(staging: Path, final: Path) -> None:
    """Replace ``final`` with the finished ``staging`` folder (the old one removed after)."""
    old = final.parent / f".{final.name}.old"
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(staging, final)
    if old.exists():
        shutil.rmtree(old)


def _export_metadata(
    dataset_id: int, name: str, classes: dict[int, str], channel_names: dict[int, str]
) -> tuple[dict[str, int], dict[str, str]]:
    """Check the export arguments; return dataset.json's ``labels`` and ``channel_names``."""
    if isinstance(dataset_id, bool) or not isinstance(dataset_id, (int, np.integer)):
        raise MedtlError(f"dataset_id must be an integer, found {dataset_id!r}")
    if not 1 <= int(dataset_id) <= 999:
        raise MedtlError(
            f"dataset_id must be 1 to 999 (nnU-Net uses three digits), found {dataset_id}. "
            "How to fix: pick an unused id, e.g. above 500 to stay clear of public datasets"
        )
    if not _ID_OK.match(name):
        raise MedtlError(
            f"dataset name must use letters, digits, '_' and '-' only, found {name!r}. "
            f"How to fix: use e.g. {nnunet_case_id(name) or 'MyDataset'!r}"
        )
    keys = sorted(int(k) for k in channel_names)
    if not keys or keys != list(range(len(keys))):
        raise MedtlError(
            f"channel_names must be numbered 0..C-1, found {keys}. "
            'How to fix: pass e.g. {0: "CT"} or {0: "T1", 1: "T2"}'
        )
    # background (0) is dropped whatever its name
    classes = ClassMap.parse({k: v for k, v in classes.items() if int(k) != 0}, "classes")
    values = sorted(classes)
    if values != list(range(1, len(values) + 1)):
        raise MedtlError(
            f"nnU-Net needs consecutive label values 1..N (besides background 0), found "
            f"{values}. How to fix: relabel the classes to 1..N before export"
        )
    labels = {"background": 0}
    for value in values:
        label_name = classes[value]
        if label_name in labels:
            raise MedtlError(
                f"class name {label_name!r} is used twice (or is 'background'); nnU-Net keys "
                "labels by name. How to fix: give every class its own name"
            )
        labels[label_name] = value
    channels = {str(k): str(channel_names[k]) for k in sorted(channel_names, key=int)}
    return labels, channels


# ----------------------------------------------------------------------------- splits


def nnunet_splits(folds: dict[str, Any]) -> list[dict[str, list[str]]]:
    """medtl's folds as nnU-Net's ``splits_final.json``: one ``{train, val}`` per fold.

    nnU-Net trains on ``train`` and reports on ``val``; medtl's held-out ``test`` cases
    become nnU-Net's ``val``, and medtl's ``train`` and ``val`` (the cases medtl keeps
    aside to choose its checkpoint) together become nnU-Net's ``train``. Both tools then
    see the same training pool and are scored on the same held-out cases. Case ids become
    nnU-Net identifiers with :func:`nnunet_case_id`, as :func:`export_nnunet` names them.

    Args:
        folds: the content of medtl's ``folds.json``.

    Example:
        >>> folds = {"folds": [{"fold": 0, "train": ["a"], "val": ["b"], "test": ["c.1"]}]}
        >>> nnunet_splits(folds)
        [{'train': ['a', 'b'], 'val': ['c_1']}]
    """
    splits = []
    for entry in sorted(folds["folds"], key=lambda f: int(f["fold"])):
        train = [nnunet_case_id(c) for c in [*entry["train"], *entry.get("val", [])]]
        held_out = [nnunet_case_id(c) for c in entry["test"]]
        splits.append({"train": sorted(train), "val": sorted(held_out)})
    return splits


def write_nnunet_splits(folds: dict[str, Any], path: str | Path) -> Path:
    """Write :func:`nnunet_splits` of ``folds`` as JSON to ``path``, atomically.

    nnU-Net reads ``splits_final.json`` from its preprocessed dataset folder
    (``nnUNet_preprocessed/DatasetXXX_Name/``); copy it there after
    ``nnUNetv2_plan_and_preprocess`` and before ``nnUNetv2_train``.
    """
    path = Path(path)
    atomic_write_text(path, json.dumps(nnunet_splits(folds), indent=2) + "\n")
    return path


def check_same_folds(folds: dict[str, Any], splits: list[dict[str, Any]]) -> None:
    """Raise unless nnU-Net's ``splits`` hold exactly medtl's ``folds``.

    For every fold, nnU-Net's ``val`` must be medtl's held-out ``test`` cases and its
    ``train`` medtl's ``train`` plus ``val``, as sets of nnU-Net identifiers, with no case
    in both.

    Raises:
        MedtlError: naming the first fold that differs and the cases that differ.

    Example:
        >>> folds = {"folds": [{"fold": 0, "train": ["a"], "val": [], "test": ["b"]}]}
        >>> check_same_folds(folds, [{"train": ["a"], "val": ["b"]}])
        >>> check_same_folds(folds, [{"train": ["b"], "val": ["a"]}])
        Traceback (most recent call last):
        ...
        medtl.kernel.errors.MedtlError: fold 0: nnU-Net's val differs from ...
    """
    expected = nnunet_splits(folds)
    fix = "How to fix: write splits_final.json from folds.json with `medtl export-nnunet --folds`"
    if len(splits) != len(expected):
        raise MedtlError(
            f"nnU-Net's splits hold {len(splits)} folds, medtl's folds.json {len(expected)}. " + fix
        )
    for k, (want, got) in enumerate(zip(expected, splits, strict=True)):
        for part, medtl_name in (("val", "held-out"), ("train", "train + val")):
            a, b = set(want[part]), set(got.get(part, []))
            if a != b:
                raise MedtlError(
                    f"fold {k}: nnU-Net's {part} differs from medtl's {medtl_name} cases "
                    f"(only in medtl: {sorted(a - b)[:5]}, only in nnU-Net: "
                    f"{sorted(b - a)[:5]}). " + fix
                )
        both = set(got["train"]) & set(got["val"])
        if both:
            raise MedtlError(f"fold {k}: cases in both train and val: {sorted(both)[:5]}. " + fix)
