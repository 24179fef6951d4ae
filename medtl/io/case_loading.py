"""Reading one case for ingest: its image (files or a DICOM series) and its label (a
label file, a 3D Slicer segmentation, an RTSTRUCT or a DICOM-SEG), checked and on one grid.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from medtl.io.checks import (
    check_axes,
    check_finite,
    check_label_values,
    check_not_constant,
)
from medtl.io.dicom.uids import LABEL_KINDS
from medtl.io.image_file import IMAGE_SUFFIXES, is_image_file
from medtl.io.images import read_image
from medtl.io.ingest_options import DEFAULT_CLASSES, IngestOptions
from medtl.io.sources import CaseSource, is_nifti
from medtl.io.volume import Volume
from medtl.kernel.errors import InputError, Rejection


@dataclass
class LoadedCase:
    """One case as read: its volume and label, and what was set aside or noted."""

    volume: Volume
    label: np.ndarray | None
    label_source: str
    series_uid: str
    set_aside: list[Rejection]
    notes: tuple[str, ...] = ()


def left_behind_by(source: CaseSource, cause: Rejection) -> list[Rejection]:
    """The other input of a case whose image or label was set aside, with the reason.

    A case sheet's image is not listed when only its label failed: the same image may
    serve other rows.
    """
    from medtl.io.dicom import left_behind

    obj = source.label_object
    if obj is not None:
        return left_behind(cause, source.image, obj.path, obj.kind)
    if source.label is not None and Path(cause.path) != Path(source.label):
        return left_behind(cause, source.image, source.label)
    return []


def _image_values(array: np.ndarray, path: Path, what: str) -> np.ndarray:
    """The voxels as float32, after checking they are finite and not all one value."""
    values = array.astype(np.float32)
    check_finite(values, path, what)
    check_not_constant(values, path, what)
    return values


def _read_image_file(source: CaseSource) -> Volume:
    """The image of a case given as files: one 3-D file, or one file per channel.

    A 4-D file is read as channels only when the dataset declares them
    (``source.four_d``, an MSD ``dataset.json`` naming its ``modality``).
    """
    from medtl.io.slicer import is_slicer_segmentation

    first = read_image(source.image, "image", channels=source.four_d)
    if is_slicer_segmentation(first):
        raise InputError(
            source.image,
            "a 3D Slicer segmentation given as the image (its header names segments)",
            "give it as the case's label and the volume it was drawn on as the image",
        )
    data = _image_values(first.array, source.image, "image")
    if not source.channels:
        return Volume(data, first.affine)
    stack = [data[..., None] if data.ndim == 3 else data]
    for extra in source.channels:
        more = read_image(extra, "image channel")
        if more.array.shape[:3] != data.shape[:3] or not np.allclose(
            more.affine, first.affine, atol=1e-3
        ):
            raise InputError(
                extra,
                f"channel grid {more.array.shape[:3]} does not match the first channel's "
                f"{data.shape[:3]} (shape or affine differ)",
                "resample every channel of a case onto one grid before ingest",
            )
        stack.append(_image_values(more.array, extra, "image channel")[..., None])
    return Volume(np.concatenate(stack, axis=3), first.affine)


def _series_of_folder(path: Path, options: IngestOptions):
    from medtl.io.dicom import discover

    inventory = discover(path, workers=options.workers)
    if not inventory.series:
        raise InputError(
            path,
            "no DICOM image series found in this folder",
            "point the case at the folder that holds the series' slices",
        )
    if len(inventory.series) > 1:
        raise InputError(
            path,
            f"expected one DICOM series in this folder, found {len(inventory.series)}",
            "give each series its own row in the case sheet, pointing at its own folder",
        )
    return inventory.series[0]


def _read_label_file(
    path: Path, image: Volume, options: IngestOptions, declared: dict[int, str] | None
) -> tuple[np.ndarray, list[str], str]:
    """A label file (NIfTI, NRRD, MetaImage or 3D Slicer segmentation) on the image's grid.

    Returns:
        The uint8 label map, notes on segments not used (for the manifest's ``note``: the
        file itself is used), and the label's kind.
    """
    from medtl.io.slicer import is_slicer_segmentation, read_slicer_segmentation

    if not path.is_file():
        raise InputError(path, "label file not found", "check the label path")
    lab = read_image(path, "label", channels=True)
    if is_slicer_segmentation(lab):
        conversion = read_slicer_segmentation(lab, image, options.name_map)
        notes = [_unmatched_note(path, "segment", name) for name in conversion.unmatched]
        if not conversion.used:
            raise InputError(
                path,
                "no segment of this 3D Slicer segmentation matches a class (names found: "
                f"{', '.join(conversion.unmatched) or 'none'}; classes: "
                f"{', '.join((options.classes or DEFAULT_CLASSES).values())})",
                "name the classes' other names in dataset.label_synonyms, or rename the "
                "segments in Slicer",
            )
        return conversion.array, notes, "Slicer"
    check_axes(lab.array.shape, path, "label")
    if lab.array.shape != image.shape:
        raise InputError(
            path,
            f"label shape {lab.array.shape} does not match image shape {image.shape}",
            "export the label on the image's grid",
        )
    if not np.allclose(lab.affine, image.affine, atol=1e-2):
        raise InputError(
            path,
            "label geometry (affine) does not match its image: "
            f"expected {np.round(image.affine, 3).tolist()}, "
            f"found {np.round(lab.affine, 3).tolist()}",
            "export the label on the image's grid (same orientation and origin)",
        )
    classes = options.classes if options.classes else declared
    kind = "NIfTI" if is_nifti(path) else "NRRD" if "nrrd" in path.name.lower() else "MetaImage"
    return check_label_values(lab.array, path, classes), [], kind


def _unmatched_note(path: Path, what: str, name: str) -> str:
    """The manifest note for a named structure of a used label file that is no class."""
    return (
        f"{what} {name!r} of {path.name} matches no class; not used (if it names one of the "
        "classes, add it to dataset.label_synonyms)"
    )


def _dicom_label_kind(path: Path) -> str | None:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:
        return None
    uid = str(getattr(ds, "SOPClassUID", ""))
    return LABEL_KINDS.get(uid)


def _read_dicom_label(
    path: Path, kind: str, image: Volume, series, options: IngestOptions
) -> tuple[np.ndarray, list[str]]:
    name_map = options.name_map
    if kind == "RTSTRUCT":
        from medtl.io.rtstruct import rasterise_rtstruct

        conversion = rasterise_rtstruct(path, image, series, name_map)
    else:
        from medtl.io.dicomseg import read_seg

        conversion = read_seg(path, image, series, name_map)
    notes = [_unmatched_note(path, f"{kind} ROI / segment", name) for name in conversion.unmatched]
    if not conversion.used:
        raise InputError(
            path,
            f"no ROI / segment of this {kind} matches a class "
            f"(names found: {', '.join(conversion.unmatched) or 'none'}; classes: "
            f"{', '.join((options.classes or DEFAULT_CLASSES).values())})",
            "name the classes' other names in dataset.label_synonyms",
        )
    return conversion.array.astype(np.uint8), notes


def load_case(source: CaseSource, options: IngestOptions) -> LoadedCase:
    """Read one case's image and label; raises InputError for what cannot be used."""
    from medtl.io.dicom import load_series_with_notes

    set_aside: list[Rejection] = []
    series_notes: tuple[str, ...] = ()
    label_notes: list[str] = []
    series = source.series
    path = source.image
    if series is None:
        if path is None or not path.exists():
            where = f" (listed on {source.origin})" if source.origin else ""
            raise InputError(
                path,
                f"image not found{where}",
                "check the path in the case sheet or dataset.json (relative paths are "
                "relative to the sheet)",
            )
        if path.is_dir():
            series = _series_of_folder(path, options)
        elif not is_image_file(path):
            raise InputError(
                path,
                "neither an image file (" + ", ".join(IMAGE_SUFFIXES) + ") nor a folder of "
                "DICOM files",
                "convert the image to NIfTI (.nii.gz) or give its DICOM series folder",
            )
    if series is not None:
        loaded_series = load_series_with_notes(series)
        volume, set_aside = loaded_series.volume, list(loaded_series.set_aside)
        series_notes = tuple(loaded_series.notes)
        # Labels are matched to the slices that made the volume, not to set-aside files.
        dropped = {str(Path(r.path)) for r in set_aside}
        series = dataclasses.replace(
            series, files=tuple(f for f in series.files if str(Path(f)) not in dropped)
        )
        volume.array = _image_values(volume.array, path, "image")
    else:
        volume = _read_image_file(source)
    label, label_source = None, ""
    if options.labels and source.label_object is not None:
        obj = source.label_object
        label, notes = _read_dicom_label(obj.path, obj.kind, volume, series, options)
        label_notes += notes
        label_source = obj.kind
    elif options.labels and source.label is not None:
        kind = None if is_image_file(source.label) else _dicom_label_kind(source.label)
        if kind is None:
            label, notes, label_source = _read_label_file(
                source.label, volume, options, source.classes
            )
            label_notes += notes
        elif series is None:
            raise InputError(
                source.label,
                f"a {kind} label needs its DICOM image series, but the image is a file",
                "give the image as the DICOM series folder the label was drawn on",
            )
        else:
            label, notes = _read_dicom_label(source.label, kind, volume, series, options)
            label_notes += notes
            label_source = kind
    return LoadedCase(
        volume=volume,
        label=label,
        label_source=label_source,
        series_uid=volume.source_uids.get("SeriesInstanceUID", ""),
        set_aside=set_aside,
        notes=(*series_notes, *label_notes),
    )


__all__ = ["LoadedCase", "left_behind_by", "load_case"]
