"""Where the cases of a data set come from: a case sheet, a DICOM tree, NIfTI folders.

Each reader turns its input into :class:`CaseSource` records — which image, which
label, which patient — plus the inputs it had to set aside. Reading the pixels and
writing NIfTI is left to :mod:`medtl.io.ingest`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from medtl.io.errors import InputError, Rejection

NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass(frozen=True)
class CaseSource:
    """One case to ingest: where its image and label come from.

    Attributes:
        image: a NIfTI file, a folder holding one DICOM series, or (with ``series``)
            the series' folder, for messages.
        label: a NIfTI label, an RTSTRUCT or DICOM-SEG file, or None.
        patient: the patient identifier (raw; hashed before it is written), or None to
            take it from the DICOM header (or the case name for NIfTI).
        case_id: a pseudonymous case name, or None to derive one.
        channels: further channels (NIfTI files on the image's grid) of a multi-channel
            case; they are stacked after ``image`` into one 4-D NIfTI (channels last).
        series: the DICOM series, when discovery already found it.
        label_object: the DICOM label object (RTSTRUCT / SEG) paired with ``series``.
    """

    image: Path
    label: Path | None = None
    patient: str | None = None
    case_id: str | None = None
    channels: tuple[Path, ...] = ()
    series: object | None = None  # medtl.io.dicom.SeriesInfo
    label_object: object | None = None  # medtl.io.dicom.LabelObjectInfo


def is_nifti(path: Path) -> bool:
    return path.name.endswith(NIFTI_SUFFIXES)


def nifti_stem(path: Path) -> str:
    """The case name of a NIfTI file: suffix and nnU-Net channel tag removed."""
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return re.sub(r"_0000$", "", name)


def from_sheet(sheet: Path) -> list[CaseSource]:
    """Read a case sheet (TSV with columns ``image``, optional ``label``, ``patient``, ``case_id``).

    ``image`` is a NIfTI file or a folder holding one DICOM series; ``label`` a NIfTI
    file or an RTSTRUCT / DICOM-SEG file. Relative paths are relative to the sheet.
    """
    try:
        df = pd.read_csv(sheet, sep="\t", dtype=str, keep_default_na=False)
    except Exception as exc:
        raise InputError(
            sheet,
            f"cannot read as a tab-separated case sheet ({exc})",
            "write a TSV with a header line: image, label, patient, case_id",
        ) from exc
    if "image" not in df.columns:
        raise InputError(
            sheet,
            f"case sheet has no 'image' column (columns found: {', '.join(df.columns)})",
            "add a header line with at least 'image' (and 'label' for training cases)",
        )
    base = sheet.parent

    def resolve(value: str) -> Path | None:
        if not value:
            return None
        p = Path(value)
        return p if p.is_absolute() else base / p

    return [
        CaseSource(
            image=resolve(r["image"]),
            label=resolve(r.get("label", "")),
            patient=r.get("patient") or None,
            case_id=r.get("case_id") or None,
        )
        for r in df.to_dict("records")
    ]


def from_dataset_json(folder: Path) -> tuple[list[CaseSource], list[Rejection]]:
    """Cases of an nnU-Net v2 raw dataset or an MSD-style folder, as they are."""
    from medtl.io.nnunet import read_external

    dataset = read_external(folder)
    sources = [
        CaseSource(
            image=case.channels[0],
            label=case.label,
            case_id=case.case_id,
            channels=tuple(case.channels[1:]),
        )
        for case in dataset.cases
    ]
    return sources, list(dataset.rejected)


def from_dicom_tree(folder: Path, workers: int = 4, progress: bool = False):
    """Every image series in a DICOM tree, paired with the label objects that reference it.

    A series referenced by several label objects takes the first (by file name); the
    others are listed as set aside. Label objects that reference no series found are
    set aside too (see :func:`medtl.io.dicom.pair_labels`).
    """
    from medtl.io.dicom import discover, pair_labels

    inventory = discover(folder, workers=workers, progress=progress)
    pairs, unused = pair_labels(inventory)
    sources = [
        CaseSource(image=pair.series.files[0].parent, series=pair.series, label_object=pair.label)
        for pair in pairs
    ]
    return sources, [*inventory.rejected, *unused]


def from_nifti_folder(folder: Path) -> list[CaseSource]:
    """Unlabelled cases: every NIfTI file in a folder tree."""
    return [CaseSource(image=p) for p in sorted(folder.rglob("*")) if p.is_file() and is_nifti(p)]
