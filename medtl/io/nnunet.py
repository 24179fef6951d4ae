"""Read nnU-Net v2 raw datasets and MSD task folders.

Two on-disk formats are understood:

* **nnU-Net v2** (``DatasetXXX_Name/``): ``dataset.json`` with ``channel_names``,
  ``labels`` (name -> integer), ``numTraining`` and ``file_ending``; one file per channel
  ``imagesTr/{case}_{XXXX}{file_ending}``, labels ``labelsTr/{case}{file_ending}`` and
  optional ``imagesTs/``. An explicit ``"dataset"`` listing in ``dataset.json`` is honoured.
* **MSD** (``TaskXX_Name/``): ``dataset.json`` with ``modality``, ``labels``
  (integer string -> name) and ``training`` / ``test`` lists; a multi-modal image is one
  4-D NIfTI whose last axis is the channel. nnU-Net v1 task folders (the same
  ``dataset.json`` but split ``{case}_{XXXX}.nii.gz`` channel files) are read too.

Hidden files and macOS ``._*`` resource forks are ignored everywhere. Files that fit no
case (a missing channel, a label without an image, a name that breaks the pattern) become
:class:`~medtl.kernel.errors.Rejection` records; the other cases carry on.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from medtl.io.external_dataset import (
    NIFTI_ENDINGS,
    REGION_FIX,
    ExternalCase,
    ExternalDataset,
    check_split_case,
    is_hidden,
    load_dataset_json,
    normalise_channels,
    normalise_labels,
)
from medtl.io.msd import read_msd
from medtl.kernel.errors import InputError, Rejection

__all__ = ["ExternalCase", "ExternalDataset", "detect_format", "read_external"]


# ----------------------------------------------------------------------------- reading


def detect_format(folder: str | Path) -> str | None:
    """Which external format a folder holds, judged from its ``dataset.json``.

    ``"nnunet"`` when ``dataset.json`` has ``channel_names`` (or ``file_ending`` with the
    legacy ``modality``); ``"msd"`` when it has a ``training`` list (MSD, nnU-Net v1 and
    medtl's own MSD-style demo ``dataset.json``, which may lack ``modality``); None when
    there is no ``dataset.json`` or it fits neither.

    Raises:
        InputError: when ``dataset.json`` exists but is not valid JSON.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> detect_format(d) is None
        True
        >>> _ = (d / "dataset.json").write_text('{"channel_names": {"0": "CT"}}')
        >>> detect_format(d)
        'nnunet'
    """
    path = Path(folder) / "dataset.json"
    if not path.is_file():
        return None
    meta = load_dataset_json(path)
    if "channel_names" in meta:
        return "nnunet"
    if "training" in meta:
        return "msd"
    if "file_ending" in meta and "modality" in meta:
        return "nnunet"
    return None


def read_external(folder: str | Path) -> ExternalDataset:
    """Read an nnU-Net v2 raw dataset or an MSD task folder.

    Args:
        folder: the ``DatasetXXX_Name/`` or ``TaskXX_Name/`` folder.

    Returns:
        The dataset's channels, classes (background excluded), cases (training cases,
        then test cases with ``label=None``) and the files that fit no case.

    Raises:
        InputError: when ``dataset.json`` is missing, not JSON, of neither format, has
            region-based or malformed labels, or a non-NIfTI ``file_ending``.

    Example:
        >>> import json, tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> meta = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1},
        ...         "numTraining": 0, "file_ending": ".nii.gz"}
        >>> _ = (d / "dataset.json").write_text(json.dumps(meta))
        >>> ds = read_external(d)
        >>> ds.kind, ds.channel_names, ds.classes, ds.cases
        ('nnunet', {0: 'CT'}, {1: 'liver'}, [])
    """
    folder = Path(folder)
    path = folder / "dataset.json"
    meta = load_dataset_json(path)
    kind = detect_format(folder)
    if kind == "nnunet":
        return _read_nnunet(folder, meta, path)
    if kind == "msd":
        return read_msd(folder, meta, path)
    raise InputError(
        path,
        "neither an nnU-Net v2 dataset.json (expected 'channel_names', 'labels', "
        "'file_ending') nor an MSD one (expected 'modality', 'labels', 'training'); "
        f"found keys {sorted(meta)}",
        "give the folder of an nnU-Net v2 raw dataset or of an MSD task",
    )


def _read_nnunet(folder: Path, meta: dict[str, Any], path: Path) -> ExternalDataset:
    if "regions_class_order" in meta:
        raise InputError(path, "dataset.json sets 'regions_class_order' (region-based)", REGION_FIX)
    channel_names = normalise_channels(meta.get("channel_names", meta.get("modality")), path)
    classes = normalise_labels(meta.get("labels"), path)
    ending = meta.get("file_ending", ".nii.gz")
    if ending not in NIFTI_ENDINGS:
        raise InputError(
            path,
            f"file_ending is {ending!r}; medtl reads NIfTI only (expected '.nii.gz' or '.nii')",
            "convert images and labels to NIfTI (.nii.gz) and set file_ending to '.nii.gz'",
        )
    n = len(channel_names)
    rejected: list[Rejection] = []
    cases: list[ExternalCase] = []

    if "dataset" in meta:
        cases += _listed_nnunet_cases(folder, meta["dataset"], n, path, rejected)
    else:
        groups, seen = _scan_split(folder / "imagesTr", ending, channel_names, rejected)
        for case_id, channels in groups.items():
            label = folder / "labelsTr" / f"{case_id}{ending}"
            if not label.is_file():
                rejected.append(
                    Rejection(
                        str(label),
                        f"training case {case_id!r} has no label (expected {label.name} "
                        "in labelsTr/)",
                        f"add labelsTr/{label.name}, or move the case's images to imagesTs/",
                    )
                )
                continue
            problem = check_split_case(case_id, channels, label)
            if problem:
                rejected.append(problem)
                continue
            cases.append(ExternalCase(case_id, channels, label))
        labels_dir = folder / "labelsTr"
        if labels_dir.is_dir():
            for p in sorted(labels_dir.iterdir()):
                if is_hidden(p) or not p.is_file():
                    continue
                stem = p.name[: -len(ending)] if p.name.endswith(ending) else None
                if stem is None or stem not in seen:
                    rejected.append(
                        Rejection(
                            str(p),
                            f"label has no image (expected imagesTr/{stem or p.name}_0000"
                            f"{ending}, found none)",
                            "add the case's images to imagesTr/ or remove the label",
                        )
                    )

    test_groups, _ = _scan_split(folder / "imagesTs", ending, channel_names, rejected)
    for case_id, channels in test_groups.items():
        problem = check_split_case(case_id, channels, None)
        if problem:
            rejected.append(problem)
            continue
        cases.append(ExternalCase(case_id, channels, None))
    return ExternalDataset("nnunet", channel_names, classes, cases, rejected)


def _scan_split(
    images_dir: Path, ending: str, channel_names: dict[int, str], rejected: list[Rejection]
) -> tuple[dict[str, tuple[Path, ...]], set[str]]:
    """Group ``{case}_{XXXX}{ending}`` files by case; incomplete cases become rejections.

    Returns the complete cases (case id -> channel files) and every case id seen.
    """
    if not images_dir.is_dir():
        return {}, set()
    n = len(channel_names)
    pattern = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})" + re.escape(ending) + "$")
    groups: dict[str, dict[int, Path]] = {}
    for p in sorted(images_dir.iterdir()):
        if is_hidden(p) or not p.is_file():
            continue
        m = pattern.match(p.name)
        if not m:
            rejected.append(
                Rejection(
                    str(p),
                    f"name does not follow nnU-Net's {{case}}_{{XXXX}}{ending} pattern "
                    f"(expected e.g. case1_0000{ending}, found {p.name!r})",
                    f"rename it to <case>_<4-digit channel>{ending} or move it out of "
                    f"{images_dir.name}/",
                )
            )
            continue
        channel = int(m["ch"])
        if channel >= n:
            rejected.append(
                Rejection(
                    str(p),
                    f"channel {channel:04d} is not in channel_names (expected 0000 to {n - 1:04d})",
                    "add the channel to channel_names in dataset.json, or remove the file",
                )
            )
            continue
        groups.setdefault(m["case"], {})[channel] = p
    complete: dict[str, tuple[Path, ...]] = {}
    for case_id, found in groups.items():
        missing = [c for c in range(n) if c not in found]
        if missing:
            first = images_dir / f"{case_id}_{missing[0]:04d}{ending}"
            names = ", ".join(f"{case_id}_{c:04d}{ending} ({channel_names[c]})" for c in missing)
            have = ", ".join(found[c].name for c in sorted(found))
            rejected.append(
                Rejection(
                    str(first),
                    f"case {case_id!r} lacks channel file(s) {names}; found only {have}",
                    f"add the missing channel file(s) to {images_dir.name}/, or remove "
                    "the case's other files",
                )
            )
            continue
        complete[case_id] = tuple(found[c] for c in range(n))
    return complete, set(groups)


def _listed_nnunet_cases(
    folder: Path, listing: Any, n: int, path: Path, rejected: list[Rejection]
) -> list[ExternalCase]:
    """Cases from nnU-Net v2's explicit ``"dataset": {case: {"images": [...], "label": ...}}``."""
    if not isinstance(listing, dict):
        raise InputError(
            path,
            f"'dataset' should map case ids to {{'images': [...], 'label': ...}}, found "
            f"{type(listing).__name__}",
            "fix the 'dataset' entry or remove it to let medtl scan imagesTr/",
        )

    def resolve(value: str) -> Path:
        p = Path(os.path.expandvars(str(value)))
        return p if p.is_absolute() else folder / p

    cases = []
    for case_id, entry in listing.items():
        images = entry.get("images") if isinstance(entry, dict) else None
        if not isinstance(images, list) or len(images) != n or "label" not in entry:
            rejected.append(
                Rejection(
                    str(path),
                    f"'dataset' entry {case_id!r} should list {n} images and a label, found "
                    f"{entry!r}",
                    "give one image per channel in channel order, and the label",
                )
            )
            continue
        channels = tuple(resolve(i) for i in images)
        label = resolve(entry["label"])
        missing = [p for p in (*channels, label) if not p.is_file()]
        if missing:
            rejected.append(
                Rejection(
                    str(missing[0]),
                    f"file listed for case {case_id!r} in dataset.json does not exist",
                    "fix the path in dataset.json's 'dataset' entry or add the file",
                )
            )
            continue
        problem = check_split_case(str(case_id), channels, label)
        if problem:
            rejected.append(problem)
            continue
        cases.append(ExternalCase(str(case_id), channels, label))
    return cases
