"""Where the cases of a data set come from: a case sheet, a DICOM tree, image folders.

Each reader turns its input into :class:`CaseSource` records — which image, which
label, which patient — plus the inputs it had to set aside. Reading the pixels and
writing NIfTI is left to :mod:`medtl.io.ingest`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from medtl.io.images import SEG_NRRD_SUFFIX, image_stem, is_image_file
from medtl.kernel.errors import Rejection

NIFTI_SUFFIXES = (".nii", ".nii.gz")
SHEET_SUFFIXES = (".tsv", ".csv", ".txt")
#: Folders whose image files are the labels of the images in a sibling folder.
LABEL_FOLDERS = {"labels": "images", "labelstr": "imagestr", "labelsts": "imagests"}


@dataclass(frozen=True)
class CaseSource:
    """One case to ingest: where its image and label come from.

    Attributes:
        image: an image file (NIfTI, NRRD, MetaImage), a folder holding one DICOM
            series, or (with ``series``) the series' folder, for messages.
        label: a label file (NIfTI, NRRD, MetaImage, 3D Slicer ``.seg.nrrd``), an
            RTSTRUCT or DICOM-SEG file, or None.
        patient: the patient identifier (raw; hashed before it is written), or None to
            take it from the DICOM header (or the case name for image files).
        case_id: a pseudonymous case name, or None to derive one.
        channels: further channels (files on the image's grid) of a multi-channel case;
            they are stacked after ``image`` into one 4-D NIfTI (channels last).
        series: the DICOM series, when discovery already found it.
        label_object: the DICOM label object (RTSTRUCT / SEG) paired with ``series``.
        four_d: ``image`` is one 4-D file whose last axis holds channels that the
            dataset declares (an MSD ``dataset.json`` naming them under ``modality``).
        classes: the label values the dataset itself declares (``dataset.json``'s
            ``labels``); labels are checked against them when no classes are given.
        origin: where the case was listed (e.g. ``line 3 of cases.tsv``), for messages.
    """

    image: Path
    label: Path | None = None
    patient: str | None = None
    case_id: str | None = None
    channels: tuple[Path, ...] = ()
    series: object | None = None  # medtl.io.dicom.SeriesInfo
    label_object: object | None = None  # medtl.io.dicom.LabelObjectInfo
    four_d: bool = False
    classes: dict[int, str] | None = None
    origin: str = ""


def is_nifti(path: Path) -> bool:
    return path.name.endswith(NIFTI_SUFFIXES)


def nifti_stem(path: Path) -> str:
    """The case name of an image file: image suffix and nnU-Net channel tag removed.

    Example:
        >>> nifti_stem(Path("case_7_0000.nii.gz")), nifti_stem(Path("case_7.seg.nrrd"))
        ('case_7', 'case_7')
    """
    return re.sub(r"_0000$", "", image_stem(path))


def from_sheet(sheet: Path) -> tuple[list[CaseSource], list[Rejection]]:
    """The cases of a case sheet (see :func:`medtl.io.case_sheet.read_case_sheet`)."""
    from medtl.io.case_sheet import read_case_sheet

    return read_case_sheet(sheet)


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
            four_d=case.four_d,
            classes=dict(dataset.classes),
            origin="dataset.json",
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


def _hidden(path: Path, folder: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(folder).parts)


def from_image_folder(folder: Path) -> tuple[list[CaseSource], list[Rejection]]:
    """The image files of a folder tree (NIfTI, NRRD, MetaImage) as cases.

    Files in a ``labels/`` folder (or ``labelsTr/``, ``labelsTs/``) are the labels of the
    files with the same name in the sibling ``images/`` (``imagesTr/``, ``imagesTs/``);
    every other image file is an unlabelled case. A label without its image, and a 3D
    Slicer ``.seg.nrrd`` outside a labels folder, are set aside. Hidden files are skipped.
    """
    files = [
        p
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not _hidden(p, folder) and is_image_file(p)
    ]
    label_files = [p for p in files if p.parent.name.lower() in LABEL_FOLDERS]
    labels = {
        (p.parent.parent, LABEL_FOLDERS[p.parent.name.lower()], nifti_stem(p)): p
        for p in label_files
    }
    sources, rejected, paired = [], [], set()
    for path in files:
        if path in label_files:
            continue
        if path.name.lower().endswith(SEG_NRRD_SUFFIX):
            rejected.append(
                Rejection(
                    str(path),
                    "a 3D Slicer segmentation (.seg.nrrd) outside a labels/ folder: a label, "
                    "not an image",
                    "put it in labels/ under its image's name (images/<case>.nrrd, "
                    "labels/<case>.seg.nrrd), or pair it with its image in a case sheet",
                )
            )
            continue
        key = (path.parent.parent, path.parent.name.lower(), nifti_stem(path))
        label = labels.get(key)
        if label is not None:
            paired.add(label)
        sources.append(CaseSource(image=path, label=label))
    for label in label_files:
        if label not in paired:
            images = LABEL_FOLDERS[label.parent.name.lower()]
            rejected.append(
                Rejection(
                    str(label),
                    f"label has no image (expected a file named {nifti_stem(label)}.* in "
                    f"the sibling {images}/ folder, found none)",
                    f"add the case's image to {images}/ under the same name, or remove the label",
                )
            )
    return sources, rejected
