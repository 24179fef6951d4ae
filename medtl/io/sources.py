"""Where the cases of a data set come from: a case sheet, a DICOM tree, image folders.

Each reader turns its input into :class:`CaseSource` records — which image, which
label, which patient — plus the inputs it had to set aside. Reading the pixels and
writing NIfTI is left to :mod:`medtl.io.ingest`.
"""

from __future__ import annotations

import re
from pathlib import Path

from medtl.io.case_sheet import read_case_sheet
from medtl.io.case_source import CaseSource
from medtl.io.image_file import NIFTI_SUFFIXES, SEG_NRRD_SUFFIX, image_stem, is_image_file
from medtl.io.nnunet import read_external
from medtl.kernel.errors import Rejection

SHEET_SUFFIXES = (".tsv", ".csv", ".txt")
#: Folders whose image files are the labels of the images in a sibling folder.
LABEL_FOLDERS = {"labels": "images", "labelstr": "imagestr", "labelsts": "imagests"}


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
    return read_case_sheet(sheet)


def from_dataset_json(folder: Path) -> tuple[list[CaseSource], list[Rejection]]:
    """Cases of an nnU-Net v2 raw dataset or an MSD-style folder, as they are."""
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
