"""Read nnU-Net v2 raw datasets and MSD task folders; export a manifest as an nnU-Net v2 dataset.

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

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from medtl.io.outputs import check_separate
from medtl.kernel.errors import InputError, MedtlError, Rejection
from medtl.kernel.files import atomic_write, atomic_write_text

NIFTI_ENDINGS = (".nii.gz", ".nii")
_ID_OK = re.compile(r"^[A-Za-z0-9_-]+$")
_REGION_FIX = (
    "give each class one plain integer in 'labels' (e.g. "
    '{"background": 0, "edema": 1, "tumour": 2}) and drop \'regions_class_order\'; '
    "medtl trains on plain integer label maps, not on nnU-Net regions"
)


@dataclass(frozen=True)
class ExternalCase:
    """One case of an external dataset.

    Attributes:
        case_id: the case identifier as the dataset names it (not sanitised).
        channels: one NIfTI per channel, in channel order (nnU-Net, nnU-Net v1); for MSD
            a single file, 4-D when it holds several channels.
        label: the label file, or None for test cases.
        four_d: True when ``channels`` is one 4-D file whose last axis holds the channels.

    Example:
        >>> ExternalCase("c1", (Path("imagesTr/c1_0000.nii.gz"),), None).four_d
        False
    """

    case_id: str
    channels: tuple[Path, ...]
    label: Path | None
    four_d: bool = False


@dataclass(frozen=True)
class ExternalDataset:
    """What :func:`read_external` found in an nnU-Net or MSD folder.

    Attributes:
        kind: ``"nnunet"`` or ``"msd"``.
        channel_names: channel index -> name (e.g. ``{0: "CT"}``).
        classes: label value -> class name, background (0) excluded.
        cases: training cases (with labels) first, then test cases (label None).
        rejected: files that fit no case, each with the reason and the fix.

    Example:
        >>> ExternalDataset("msd", {0: "MR"}, {1: "tumour"}, []).rejected
        []
    """

    kind: str
    channel_names: dict[int, str]
    classes: dict[int, str]
    cases: list[ExternalCase]
    rejected: list[Rejection] = field(default_factory=list)


# ----------------------------------------------------------------------------- helpers


def _is_hidden(path: Path) -> bool:
    """Hidden files, including macOS ``._*`` resource forks and ``.DS_Store``."""
    return path.name.startswith(".")


def _strip_ending(name: str) -> str:
    for ending in NIFTI_ENDINGS:
        if name.endswith(ending):
            return name[: -len(ending)]
    return name


def _load_json(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(
            path,
            "dataset.json not found (expected it at the top of the dataset folder)",
            "point medtl at the DatasetXXX_Name/ or TaskXX_Name/ folder that holds dataset.json",
        ) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(
            path,
            f"dataset.json is not valid JSON ({exc})",
            "repair the file (e.g. check it with `python -m json.tool dataset.json`)",
        ) from exc
    if not isinstance(meta, dict):
        raise InputError(
            path,
            f"dataset.json should hold a JSON object, found a {type(meta).__name__}",
            "write dataset.json as an object with 'labels' and 'channel_names' or 'modality'",
        )
    return meta


def _int_key(key: Any) -> int | None:
    if isinstance(key, bool):
        return None
    if isinstance(key, int):
        return key
    if isinstance(key, str) and re.fullmatch(r"\s*\d+\s*", key):
        return int(key)
    return None


def _normalise_channels(raw: Any, path: Path) -> dict[int, str]:
    """``{"0": "CT", "1": "T2"}`` -> ``{0: "CT", 1: "T2"}``; indices must be 0..n-1."""
    fix = 'write the channels as {"0": "CT", "1": "T2", ...}, numbered from 0 without gaps'
    if not isinstance(raw, dict) or not raw:
        raise InputError(
            path, f"expected a non-empty channel map ('channel_names'), found {raw!r}", fix
        )
    channels: dict[int, str] = {}
    for key, name in raw.items():
        index = _int_key(key)
        if index is None:
            raise InputError(path, f"channel index {key!r} is not an integer", fix)
        channels[index] = str(name)
    if sorted(channels) != list(range(len(channels))):
        raise InputError(
            path,
            f"channel indices must be 0..{len(channels) - 1}, found {sorted(channels)}",
            fix,
        )
    return dict(sorted(channels.items()))


def _normalise_labels(raw: Any, path: Path) -> dict[int, str]:
    """Labels as ``{value: name}`` without background, from either orientation.

    nnU-Net writes ``{"background": 0, "tumour": 1}``; MSD writes
    ``{"0": "background", "1": "tumour"}``. Region-based nnU-Net labels (lists) are refused.
    """
    fix = 'write labels as {"background": 0, "tumour": 1} (nnU-Net) or {"0": ..., "1": ...} (MSD)'
    if not isinstance(raw, dict) or not raw:
        raise InputError(path, f"expected a non-empty 'labels' map, found {raw!r}", fix)
    regions = {k: v for k, v in raw.items() if isinstance(v, (list, tuple))}
    if regions:
        name, value = next(iter(regions.items()))
        raise InputError(
            path,
            "labels are region-based (expected one integer per class, found "
            f"{name!r}: {list(value)})",
            _REGION_FIX,
        )
    pairs: list[tuple[int, str]] = []
    if all(_int_key(k) is not None for k in raw) and all(isinstance(v, str) for v in raw.values()):
        pairs = [(int(_int_key(k)), v) for k, v in raw.items()]  # MSD: value -> name
    elif all(_int_key(v) is not None for v in raw.values()):
        pairs = [(int(_int_key(v)), str(k)) for k, v in raw.items()]  # nnU-Net: name -> value
    else:
        raise InputError(path, f"cannot tell label values from names in {raw!r}", fix)
    values = [v for v, _ in pairs]
    if len(set(values)) != len(values):
        raise InputError(path, f"label values repeat: found {sorted(values)}", fix)
    if any(v < 0 for v in values):
        raise InputError(path, f"label values must be >= 0, found {sorted(values)}", fix)
    if any(name.strip().lower() == "ignore" for _, name in pairs):
        raise InputError(
            path,
            "labels hold nnU-Net's 'ignore' label (expected classes only)",
            "relabel the ignore voxels (to background or a class) and remove 'ignore' "
            "from labels; medtl does not train with partially annotated label maps",
        )
    return {v: name for v, name in sorted(pairs) if v != 0}


def _nifti_shape(path: Path) -> tuple[int, ...]:
    """Shape from the header only (no voxel data is read)."""
    try:
        return tuple(int(s) for s in nib.load(str(path)).shape)
    except Exception as exc:
        from medtl.io.images import describe_error

        raise InputError(
            path, f"cannot read as NIfTI ({describe_error(exc)})", "re-export the file as .nii.gz"
        ) from exc


def _spatial(shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """The 3-D grid of a one-channel image/label, or None when it is not one."""
    if len(shape) == 3:
        return shape
    if len(shape) == 4 and shape[3] == 1:
        return shape[:3]
    return None


def _check_split_case(
    case_id: str, channels: tuple[Path, ...], label: Path | None
) -> Rejection | None:
    """One file per channel: each a 3-D volume, all (and the label) on the same grid."""
    try:
        grids = []
        for path in channels:
            shape = _nifti_shape(path)
            grid = _spatial(shape)
            if grid is None:
                raise InputError(
                    path,
                    f"expected one 3-D channel per file, found shape {shape}",
                    "split the channels into {case}_0000, {case}_0001, ... files",
                )
            grids.append(grid)
        if len(set(grids)) > 1:
            raise InputError(
                channels[0],
                f"the channels of case {case_id!r} differ in shape: {grids}",
                "resample every channel of a case onto the same grid",
            )
        if label is not None:
            _check_label(label, grids[0])
    except InputError as exc:
        return exc.to_rejection()
    return None


def _check_label(label: Path, grid: tuple[int, ...]) -> None:
    shape = _nifti_shape(label)
    if _spatial(shape) != grid:
        raise InputError(
            label,
            f"label shape {shape} does not match its image grid {grid}",
            "export the label on the image's grid",
        )


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
    meta = _load_json(path)
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
        >>> import tempfile
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
    meta = _load_json(path)
    kind = detect_format(folder)
    if kind == "nnunet":
        return _read_nnunet(folder, meta, path)
    if kind == "msd":
        return _read_msd(folder, meta, path)
    raise InputError(
        path,
        "neither an nnU-Net v2 dataset.json (expected 'channel_names', 'labels', "
        "'file_ending') nor an MSD one (expected 'modality', 'labels', 'training'); "
        f"found keys {sorted(meta)}",
        "give the folder of an nnU-Net v2 raw dataset or of an MSD task",
    )


def _read_nnunet(folder: Path, meta: dict[str, Any], path: Path) -> ExternalDataset:
    if "regions_class_order" in meta:
        raise InputError(
            path, "dataset.json sets 'regions_class_order' (region-based)", _REGION_FIX
        )
    channel_names = _normalise_channels(meta.get("channel_names", meta.get("modality")), path)
    classes = _normalise_labels(meta.get("labels"), path)
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
            problem = _check_split_case(case_id, channels, label)
            if problem:
                rejected.append(problem)
                continue
            cases.append(ExternalCase(case_id, channels, label))
        labels_dir = folder / "labelsTr"
        if labels_dir.is_dir():
            for p in sorted(labels_dir.iterdir()):
                if _is_hidden(p) or not p.is_file():
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
        problem = _check_split_case(case_id, channels, None)
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
        if _is_hidden(p) or not p.is_file():
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
        problem = _check_split_case(str(case_id), channels, label)
        if problem:
            rejected.append(problem)
            continue
        cases.append(ExternalCase(str(case_id), channels, label))
    return cases


def _read_msd(folder: Path, meta: dict[str, Any], path: Path) -> ExternalDataset:
    classes = _normalise_labels(meta.get("labels"), path)
    modality = meta.get("modality")
    channel_names = _normalise_channels(modality, path) if modality else None
    training, test = meta.get("training"), meta.get("test", [])
    if not isinstance(training, list) or not isinstance(test, list):
        raise InputError(
            path,
            "'training' (and 'test', if given) should be lists, found "
            f"{type(training).__name__} and {type(test).__name__}",
            'list training cases as [{"image": "./imagesTr/x.nii.gz", "label": '
            '"./labelsTr/x.nii.gz"}] and test cases as ["./imagesTs/y.nii.gz"]',
        )

    def resolve(value: Any) -> Path | None:
        if not isinstance(value, str) or not value:
            return None
        p = Path(value)
        return p if p.is_absolute() else folder / p

    rejected: list[Rejection] = []
    entries: list[tuple[Path, Path | None, bool]] = []  # image, label, is_training
    for i, item in enumerate([*training, *test]):
        is_training = i < len(training)
        if isinstance(item, dict):
            image, label = resolve(item.get("image")), resolve(item.get("label"))
        else:
            image, label = resolve(item), None
        if image is None or (is_training and label is None):
            part = "training" if is_training else "test"
            rejected.append(
                Rejection(
                    str(path),
                    f"{part} entry {item!r} lacks an image" + (" or label" if is_training else ""),
                    'write training entries as {"image": "./imagesTr/x.nii.gz", "label": '
                    '"./labelsTr/x.nii.gz"}',
                )
            )
            continue
        if _is_hidden(image):  # a listed ._ resource fork is junk, not a case
            continue
        entries.append((image, label, is_training))

    found: list[tuple[ExternalCase, int]] = []  # case, number of channels
    used: set[Path] = set()
    ids: set[str] = set()
    n_known = len(channel_names) if channel_names else None
    for image, label, is_training in entries:
        case_id = _strip_ending(image.name)
        try:
            if case_id in ids:
                raise InputError(
                    image,
                    f"case id {case_id!r} is listed twice in dataset.json",
                    "give every case a unique file name",
                )
            case, n_channels = _msd_case(case_id, image, label if is_training else None, n_known)
        except InputError as exc:
            rejected.append(exc.to_rejection())
            used.update(p for p in (image, label) if p is not None)
            continue
        ids.add(case_id)
        used.update((*case.channels, *([case.label] if case.label else [])))
        found.append((case, n_channels))

    if channel_names is None:
        n = found[0][1] if found else 1
        channel_names = {i: "unknown" for i in range(n)}
    n = len(channel_names)
    cases = []
    for case, n_channels in found:
        if n_channels != n:
            rejected.append(
                Rejection(
                    str(case.channels[0]),
                    f"case {case.case_id!r} has {n_channels} channel(s), expected {n} "
                    "(the number in 'modality')",
                    "give every case the same channels, in the same order",
                )
            )
            continue
        cases.append(case)

    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        d = folder / sub
        if not d.is_dir():
            continue
        for p in sorted(d.iterdir()):
            if p.is_file() and not _is_hidden(p) and p not in used:
                rejected.append(
                    Rejection(
                        str(p),
                        f"file in {sub}/ is not listed in dataset.json",
                        "list it under 'training' or 'test' in dataset.json, or remove it",
                    )
                )
    return ExternalDataset("msd", channel_names, classes, cases, rejected)


def _msd_case(
    case_id: str, image: Path, label: Path | None, n_known: int | None
) -> tuple[ExternalCase, int]:
    """One MSD case: a 3-D or 4-D file, or nnU-Net v1 split channel files."""
    if image.is_file():
        shape = _nifti_shape(image)
        if len(shape) == 4 and shape[3] > 1:
            if n_known is None:
                raise InputError(
                    image,
                    f"4-D image with {shape[3]} volumes, but dataset.json names no channels "
                    "('modality'): medtl cannot tell channels from a time series",
                    'name the channels in dataset.json, e.g. "modality": {"0": "FLAIR", '
                    '"1": "T1w"}, or give one 3-D file per image',
                )
            four_d, n_channels, grid = True, shape[3], shape[:3]
        elif _spatial(shape) is not None:
            four_d, n_channels, grid = False, 1, _spatial(shape)
        else:
            raise InputError(
                image,
                f"expected a 3-D image or a 4-D image (x, y, z, channel), found shape {shape}",
                "re-export the image as 3-D, or 4-D with the channels on the last axis",
            )
        channels: tuple[Path, ...] = (image,)
    else:
        # nnU-Net v1 task folders list "x.nii.gz" but hold x_0000.nii.gz, x_0001.nii.gz, ...
        ending = image.name[len(case_id) :]
        split = []
        while (p := image.with_name(f"{case_id}_{len(split):04d}{ending}")).is_file():
            split.append(p)
        if not split or (n_known is not None and len(split) != n_known):
            raise InputError(
                image,
                "image listed in dataset.json not found"
                + (f" (found {len(split)} of {n_known} split channel files)" if split else ""),
                "fix the path in dataset.json or add the file",
            )
        channels, four_d, n_channels = tuple(split), False, len(split)
        problem = _check_split_case(case_id, channels, None)
        if problem:
            raise InputError(problem.path, problem.reason, problem.fix)
        grid = _spatial(_nifti_shape(split[0]))
    if label is not None:
        if not label.is_file():
            raise InputError(
                label,
                f"label of training case {case_id!r} not found",
                "fix the label path in dataset.json or add the file",
            )
        _check_label(label, grid)
    return ExternalCase(case_id, channels, label, four_d), n_channels


# ----------------------------------------------------------------------------- export


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
    base = Path(base_dir) if base_dir is not None else None
    labels_json, channels_json = _export_metadata(dataset_id, name, classes, channel_names)
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
    n_channels = len(channel_names)

    def resolve(value: Any) -> Path:
        p = Path(str(value))
        return base / p if base is not None and not p.is_absolute() else p

    # Plan every case before writing anything.
    plan: list[tuple[str, Path, Path | None, int]] = []  # id, image, label, n in file
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
        if not image.is_file():
            raise InputError(image, f"image of case {original!r} not found", "re-run ingest")
        shape = _nifti_shape(image)
        if len(shape) == 4 and shape[3] > 1:
            in_file, grid = shape[3], shape[:3]
        elif _spatial(shape) is not None:
            in_file, grid = 1, _spatial(shape)
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
            _check_label(label, grid)
        plan.append((case_id, image, label, in_file))

    if not plan:
        raise MedtlError("the manifest holds no case. How to fix: ingest some cases first")
    folder_name = f"Dataset{dataset_id:03d}_{name}"
    final = out_root / folder_name
    # An export over the dataset the cases were ingested from would delete its own input.
    check_separate(
        final, [p for _, image, label, _ in plan for p in (image, label)], "the dataset folder"
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
            if p.is_dir() and p.name != folder_name
        ]
        if others:
            raise InputError(
                out_root / others[0],
                f"dataset id {dataset_id:03d} is already used by {others[0]} (nnU-Net finds "
                "datasets by id, so two folders with one id break `-d {dataset_id}`)",
                "choose another dataset_id or remove the other folder",
            )

    staging = out_root / f".{folder_name}.partial"
    if staging.exists():
        shutil.rmtree(staging)  # left by a killed export; only ever written by us
    n_training = 0
    for case_id, image, label, in_file in plan:
        split = "imagesTr" if label is not None else "imagesTs"
        for c in range(in_file):
            dst = staging / split / f"{case_id}_{c:04d}{file_ending}"
            _write_volume(image, dst, c if in_file > 1 else None, file_ending)
        if label is not None:
            _write_volume(
                label, staging / "labelsTr" / f"{case_id}{file_ending}", None, file_ending
            )
            n_training += 1
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

    old = out_root / f".{folder_name}.old"
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(staging, final)
    if old.exists():
        shutil.rmtree(old)
    return final


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
    classes = {int(k): str(v) for k, v in classes.items() if int(k) != 0}
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
