"""What an external (nnU-Net v2 / MSD) dataset holds, and the checks both formats share.

:class:`ExternalCase` and :class:`ExternalDataset` are what :func:`medtl.io.nnunet.read_external`
returns. The helpers read ``dataset.json``, normalise its channel and label maps, and check
NIfTI shapes from headers only; the readers (:mod:`medtl.io.nnunet`, :mod:`medtl.io.msd`)
and the export (:mod:`medtl.export.nnunet`) use them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib

from medtl.io.image_file import describe_error
from medtl.kernel.errors import InputError, Rejection

NIFTI_ENDINGS = (".nii.gz", ".nii")
REGION_FIX = (
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


def is_hidden(path: Path) -> bool:
    """Hidden files, including macOS ``._*`` resource forks and ``.DS_Store``."""
    return path.name.startswith(".")


def strip_ending(name: str) -> str:
    for ending in NIFTI_ENDINGS:
        if name.endswith(ending):
            return name[: -len(ending)]
    return name


def load_dataset_json(path: Path) -> dict[str, Any]:
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


def normalise_channels(raw: Any, path: Path) -> dict[int, str]:
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


def normalise_labels(raw: Any, path: Path) -> dict[int, str]:
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
            REGION_FIX,
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


def nifti_shape(path: Path) -> tuple[int, ...]:
    """Shape from the header only (no voxel data is read)."""
    try:
        return tuple(int(s) for s in nib.load(str(path)).shape)
    except Exception as exc:
        raise InputError(
            path, f"cannot read as NIfTI ({describe_error(exc)})", "re-export the file as .nii.gz"
        ) from exc


def spatial(shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """The 3-D grid of a one-channel image/label, or None when it is not one."""
    if len(shape) == 3:
        return shape
    if len(shape) == 4 and shape[3] == 1:
        return shape[:3]
    return None


def check_split_case(
    case_id: str, channels: tuple[Path, ...], label: Path | None
) -> Rejection | None:
    """One file per channel: each a 3-D volume, all (and the label) on the same grid."""
    try:
        grids = []
        for path in channels:
            shape = nifti_shape(path)
            grid = spatial(shape)
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
            check_label(label, grids[0])
    except InputError as exc:
        return exc.to_rejection()
    return None


def check_label(label: Path, grid: tuple[int, ...]) -> None:
    shape = nifti_shape(label)
    if spatial(shape) != grid:
        raise InputError(
            label,
            f"label shape {shape} does not match its image grid {grid}",
            "export the label on the image's grid",
        )


# ----------------------------------------------------------------------------- reading
