"""Read Medical Segmentation Decathlon (MSD) task folders, and nnU-Net v1 ones.

An MSD ``dataset.json`` holds ``modality``, ``labels`` (integer string -> name) and
``training`` / ``test`` lists; a multi-modal image is one 4-D NIfTI whose last axis is the
channel. nnU-Net v1 task folders (the same ``dataset.json`` but split
``{case}_{XXXX}.nii.gz`` channel files) are read too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medtl.io.external_dataset import (
    ExternalCase,
    ExternalDataset,
    check_label,
    check_split_case,
    is_hidden,
    nifti_shape,
    normalise_channels,
    normalise_labels,
    spatial,
    strip_ending,
)
from medtl.kernel.errors import InputError, Rejection


def read_msd(folder: Path, meta: dict[str, Any], path: Path) -> ExternalDataset:
    """Read an MSD (or nnU-Net v1) task folder whose ``dataset.json`` at ``path`` holds ``meta``."""
    classes = normalise_labels(meta.get("labels"), path)
    modality = meta.get("modality")
    channel_names = normalise_channels(modality, path) if modality else None
    rejected: list[Rejection] = []
    entries = _listed_entries(folder, meta, path, rejected)
    n_known = len(channel_names) if channel_names else None
    found, used = _read_entries(entries, n_known, rejected)
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
    _reject_unlisted(folder, used, rejected)
    return ExternalDataset("msd", channel_names, classes, cases, rejected)


def _listed_entries(
    folder: Path, meta: dict[str, Any], path: Path, rejected: list[Rejection]
) -> list[tuple[Path, Path | None, bool]]:
    """The ``training`` and ``test`` entries as (image, label, is_training); bad ones rejected."""
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
        if is_hidden(image):  # a listed ._ resource fork is junk, not a case
            continue
        entries.append((image, label, is_training))
    return entries


def _read_entries(
    entries: list[tuple[Path, Path | None, bool]], n_known: int | None, rejected: list[Rejection]
) -> tuple[list[tuple[ExternalCase, int]], set[Path]]:
    """Each listed case with its number of channels, and every file the listing used."""
    found: list[tuple[ExternalCase, int]] = []  # case, number of channels
    used: set[Path] = set()
    ids: set[str] = set()
    for image, label, is_training in entries:
        case_id = strip_ending(image.name)
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
    return found, used


def _reject_unlisted(folder: Path, used: set[Path], rejected: list[Rejection]) -> None:
    """Files in the task's image and label folders that ``dataset.json`` does not list."""
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        d = folder / sub
        if not d.is_dir():
            continue
        for p in sorted(d.iterdir()):
            if p.is_file() and not is_hidden(p) and p not in used:
                rejected.append(
                    Rejection(
                        str(p),
                        f"file in {sub}/ is not listed in dataset.json",
                        "list it under 'training' or 'test' in dataset.json, or remove it",
                    )
                )


def _msd_case(
    case_id: str, image: Path, label: Path | None, n_known: int | None
) -> tuple[ExternalCase, int]:
    """One MSD case: a 3-D or 4-D file, or nnU-Net v1 split channel files."""
    if image.is_file():
        shape = nifti_shape(image)
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
        elif spatial(shape) is not None:
            four_d, n_channels, grid = False, 1, spatial(shape)
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
        problem = check_split_case(case_id, channels, None)
        if problem:
            raise InputError(problem.path, problem.reason, problem.fix)
        grid = spatial(nifti_shape(split[0]))
    if label is not None:
        if not label.is_file():
            raise InputError(
                label,
                f"label of training case {case_id!r} not found",
                "fix the label path in dataset.json or add the file",
            )
        check_label(label, grid)
    return ExternalCase(case_id, channels, label, four_d), n_channels
