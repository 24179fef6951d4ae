"""Ingest: find the cases in a DICOM tree, a NIfTI / nnU-Net / MSD folder or a case sheet.

Every usable case becomes a NIfTI image (and label) under ``out/images`` and
``out/labels`` and one row of ``out/manifest.tsv``; every input that cannot be used
becomes a row of ``out/rejected.tsv`` with the reason and how to fix it. One bad case
never stops the others, and the input folder is never modified.

DICOM labels (RTSTRUCT, DICOM-SEG) are rasterised on the grid of the series they
reference; their ROI / segment names are mapped to classes with ``classes`` and
``synonyms``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
from tqdm.auto import tqdm

from medtl.io.checks import (
    check_axes,
    check_finite,
    check_label_values,
    check_not_constant,
    content_key,
)
from medtl.io.deid import hash_id
from medtl.io.dicom.uids import LABEL_KINDS
from medtl.io.images import (
    IMAGE_SUFFIXES,
    companion_files,
    is_image_file,
    read_image,
)
from medtl.io.outputs import check_separate, fresh_folder
from medtl.io.sources import (
    SHEET_SUFFIXES,
    CaseSource,
    from_dataset_json,
    from_dicom_tree,
    from_image_folder,
    from_sheet,
    is_nifti,
    nifti_stem,
)
from medtl.io.volume import Volume
from medtl.kernel.errors import ConfigError, InputError, MedtlError, Rejection
from medtl.kernel.files import atomic_write, atomic_write_text

MANIFEST_COLUMNS = [
    "case_id",
    "patient_id",
    "image",
    "label",
    "modality",
    "spacing",
    "shape",
    "orientation",
    "channels",
    "label_source",
    "series_uid",
    "note",
]
REJECTED_COLUMNS = ["path", "reason", "fix"]


#: The classes DICOM ROI / segment names are matched to when none are given.
DEFAULT_CLASSES = {1: "foreground"}
#: What ``ingest`` writes, to recognise an earlier output that has no marker file.
OUTPUT_NAMES = ("manifest.tsv", "rejected.tsv", "images", "labels")


@dataclass(frozen=True)
class IngestOptions:
    """How cases are ingested.

    Attributes:
        salt: key of the patient-id hashes.
        modality: modality of image files (DICOM carries its own).
        classes: label value → class name. Label files may hold only 0 and these values;
            DICOM and Slicer label names are matched to these names. None when not given:
            label files are then checked against the values their dataset declares
            (``dataset.json``), or only for being 0..255, and names are matched to
            :data:`DEFAULT_CLASSES`.
        synonyms: class name → other ROI / segment names of that class.
        workers: parallel DICOM header reads.
        progress: show progress bars.
        labels: read labels; off for cases that are only to be segmented.
    """

    salt: str
    modality: str | None = None
    classes: dict[int, str] | None = None
    synonyms: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    workers: int = 4
    progress: bool = True
    labels: bool = True

    @property
    def name_map(self) -> dict[str, int]:
        """Normalised ROI / segment name → class value (see :mod:`medtl.io.roi_names`)."""
        from medtl.io.roi_names import build_name_map

        try:
            return build_name_map(self.classes or DEFAULT_CLASSES, self.synonyms)
        except ValueError as exc:
            raise ConfigError(f"classes / label_synonyms (--classes, --synonyms): {exc}") from exc


@dataclass(frozen=True)
class ManifestRow:
    case_id: str
    patient_id: str
    image: str
    label: str
    modality: str
    spacing: str
    shape: str
    orientation: str
    channels: int = 1
    label_source: str = ""
    series_uid: str = ""
    note: str = ""


@dataclass
class _Loaded:
    volume: Volume
    label: np.ndarray | None
    label_source: str
    series_uid: str
    set_aside: list[Rejection]
    notes: tuple[str, ...] = ()


def _left_behind(source: CaseSource, cause: Rejection) -> list[Rejection]:
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


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


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


def _load_case(source: CaseSource, options: IngestOptions) -> _Loaded:
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
    return _Loaded(
        volume=volume,
        label=label,
        label_source=label_source,
        series_uid=volume.source_uids.get("SeriesInstanceUID", ""),
        set_aside=set_aside,
        notes=(*series_notes, *label_notes),
    )


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a ``manifest.tsv`` written by :func:`ingest`, every column as text.

    An empty ``label`` means an unlabelled case.

    Raises:
        InputError: the file is missing, or lacks the ``case_id``, ``image`` or ``label``
            column.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "manifest not found", "run the ingest stage first")
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    missing = {"case_id", "image", "label"} - set(df.columns)
    if missing:
        raise InputError(
            path,
            f"expected columns case_id, image, label; missing {sorted(missing)}",
            "regenerate it with the ingest stage",
        )
    return df


def _relative(path: str, root: Path | None) -> str:
    """A rejected input's path relative to the ingest source (no machine paths)."""
    if root is None:
        return path
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return path


def _case_id(source: CaseSource, volume: Volume, patient: str, seen: dict[str, int]) -> str:
    if source.case_id:
        return _safe_id(source.case_id)
    if volume.source_uids:
        seen[patient] = seen.get(patient, 0) + 1
        return f"{patient}_{seen[patient]:02d}"
    return _safe_id(nifti_stem(source.image))


def input_paths(source: Path | None, sources: list[CaseSource]) -> list[Path]:
    """Every input file and folder: the source, and what its cases name.

    Images, labels and channel files count, with the data files their headers name (an
    ``.nhdr``'s ``.raw``, a ``.hdr``'s ``.img``), so that no output can land on one.
    """
    paths: list[Path] = [source] if source is not None else []
    for case in sources:
        files = [case.image, case.label, *case.channels]
        if case.label_object is not None:
            files.append(Path(case.label_object.path))
        for path in files:
            if path is None:
                continue
            paths.append(path)
            if path.is_file():
                paths += companion_files(path)
    return paths


@dataclass
class _Seen:
    """The images written so far, by content, to set aside the same scan listed twice."""

    root: Path | None = None
    by_key: dict[str, list[tuple[np.ndarray, str, str]]] = dataclasses.field(default_factory=dict)

    def duplicate_of(self, volume: Volume, source: CaseSource, case_id: str) -> Rejection | None:
        key = content_key(volume.array)
        for affine, first_path, first_case in self.by_key.get(key, []):
            if np.allclose(affine, volume.affine, atol=1e-3):
                return Rejection(
                    str(source.image),
                    f"the same image as {_relative(first_path, self.root)} (case "
                    f"{first_case!r}): identical voxels "
                    "and geometry. One scan in two cases can land in both the training and "
                    "the test set",
                    "list each scan once (remove this case, or give it the scan it should have)",
                )
        self.by_key.setdefault(key, []).append((volume.affine, str(source.image), case_id))
        return None


def _write_case(
    staging: Path, case_id: str, volume: Volume, label: np.ndarray | None
) -> tuple[str, str]:
    """Write a case's image (and label) under ``staging``; return their names under out."""
    image_name = Path("images") / f"{case_id}.nii.gz"
    vol = Volume(volume.array.astype(np.float32), volume.affine)
    atomic_write(staging / image_name, lambda tmp: nib.save(vol.to_nifti(), str(tmp)))
    if label is None:
        return str(image_name), ""
    label_name = Path("labels") / f"{case_id}.nii.gz"
    lv = Volume(label, volume.affine)
    atomic_write(staging / label_name, lambda tmp: nib.save(lv.to_nifti(), str(tmp)))
    return str(image_name), str(label_name)


def ingest(
    sources: list[CaseSource],
    out: Path,
    options: IngestOptions,
    rejected: list[Rejection] | None = None,
    root: Path | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Convert cases to NIfTI and write ``manifest.tsv`` and ``rejected.tsv``.

    ``out`` must not be, hold or lie inside an input (checked first); it is written as a
    whole through :func:`medtl.io.outputs.fresh_folder`, so an earlier run's files are
    replaced, never mixed with the new ones, and a failed run leaves ``out`` as it was.

    Args:
        sources: the cases to ingest.
        out: output folder (``images/``, ``labels/``, ``manifest.tsv``, ``rejected.tsv``).
        options: salt, modality, classes and the rest.
        rejected: rejections found earlier (e.g. during DICOM discovery).
        root: the ingest source; rejected paths are written relative to it.

    Returns:
        The manifest and the rejections as data frames; the manifest's paths are under
        ``out``.

    Raises:
        InputError: ``out`` is, holds or lies inside an input, or holds files that an
            ingest did not write.
    """
    out = Path(out)
    check_separate(out, input_paths(None, sources))
    options.name_map  # noqa: B018  (a bad --classes / --synonyms stops here, not per case)
    rows: list[ManifestRow] = []
    rejections = list(rejected or [])
    seen: dict[str, int] = {}
    images = _Seen(root)
    with fresh_folder(out, "ingest", known=OUTPUT_NAMES) as staging:
        for source in tqdm(sources, desc="ingest", disable=not options.progress):
            try:
                loaded = _load_case(source, options)
            except ConfigError:
                raise
            except MedtlError as exc:
                cause = (
                    exc.to_rejection()
                    if isinstance(exc, InputError)
                    else Rejection(str(source.image), str(exc), "see the reason")
                )
                # The label drawn on a set-aside image (or the image of a set-aside label)
                # is listed too: every input ends in the manifest or in rejected.tsv.
                rejections += [cause, *_left_behind(source, cause)]
                continue
            rejections += loaded.set_aside
            volume = loaded.volume
            patient = hash_id(
                source.patient or volume.patient_key or nifti_stem(source.image), options.salt
            )
            case_id = _case_id(source, volume, patient, seen)
            if any(r.case_id == case_id for r in rows):
                rejections.append(
                    Rejection(
                        str(source.image),
                        f"duplicate case id {case_id!r}",
                        "give each case a unique case_id in the sheet",
                    )
                )
                continue
            duplicate = images.duplicate_of(volume, source, case_id)
            if duplicate is not None:
                rejections.append(duplicate)
                continue
            image_name, label_name = _write_case(staging, case_id, volume, loaded.label)
            modality = volume.modality if volume.modality != "unknown" else options.modality
            rows.append(
                ManifestRow(
                    case_id=case_id,
                    patient_id=patient,
                    image=str(out / image_name),
                    label=str(out / label_name) if label_name else "",
                    modality=modality or "unknown",
                    spacing="x".join(f"{s:.2f}" for s in volume.spacing),
                    shape="x".join(str(s) for s in volume.shape),
                    orientation=volume.orientation,
                    channels=1 if volume.array.ndim == 3 else int(volume.array.shape[3]),
                    label_source=loaded.label_source,
                    series_uid=loaded.series_uid,
                    note="; ".join(loaded.notes),
                )
            )
        manifest = pd.DataFrame([asdict(r) for r in rows], columns=MANIFEST_COLUMNS)
        rejected_df = pd.DataFrame(
            [
                {"path": _relative(r.path, root), "reason": r.reason, "fix": r.fix}
                for r in rejections
            ],
            columns=REJECTED_COLUMNS,
        )
        atomic_write_text(staging / "rejected.tsv", rejected_df.to_csv(sep="\t", index=False))
        atomic_write_text(staging / "manifest.tsv", manifest.to_csv(sep="\t", index=False))
    return manifest, rejected_df


def find_sources(source: Path, options: IngestOptions) -> tuple[list[CaseSource], list[Rejection]]:
    """The cases of a case sheet, a folder with ``dataset.json``, an image folder, a DICOM
    tree or a single image file."""
    fix = (
        "give a DICOM folder, a folder of image files (.nii.gz, .nrrd, .mha, ...), an "
        "nnU-Net / MSD folder with dataset.json, or a case sheet (.tsv, .csv)"
    )
    if not source.exists():
        raise InputError(source, "does not exist", fix)
    if source.is_file():
        if source.suffix.lower() in SHEET_SUFFIXES:
            return from_sheet(source)
        if is_image_file(source):
            return [CaseSource(image=source)], []
        raise InputError(
            source, "not a case sheet (.tsv, .csv, .txt), an image file or a folder", fix
        )
    if (source / "dataset.json").is_file():
        return from_dataset_json(source)
    images, rejected = from_image_folder(source)
    if images or rejected:
        return images, rejected
    return from_dicom_tree(source, workers=options.workers, progress=options.progress)


def _nothing_found(source: Path, rejected: list[Rejection]) -> InputError:
    """The error for a folder in which nothing medtl reads was found (what was looked for,
    every file looked at, and why the ones set aside were)."""
    files = [p for p in sorted(source.rglob("*")) if p.is_file()]
    why = {Path(r.path).name: r.reason for r in rejected}
    shown = ", ".join(
        str(p.relative_to(source)) + (f" ({why[p.name]})" if p.name in why else "")
        for p in files[:5]
    )
    count = f"{len(files)} file{'s' if len(files) != 1 else ''} looked at"
    return InputError(
        source,
        "no NIfTI, NRRD / MetaImage file, DICOM file, dataset.json or case sheet found under "
        f"this folder ({count}"
        + (f": {shown}" if shown else "")
        + (", ..." if len(files) > 5 else "")
        + ")",
        "give the folder that holds the images (any depth below it is searched), or a case "
        "sheet (.tsv, .csv)",
    )


def _no_usable_case(source: Path, rejected: pd.DataFrame) -> InputError:
    first = "; ".join(f"{r.path}: {r.reason}" for r in rejected.head(3).itertuples())
    fix = "check the reasons (all listed in rejected.tsv)"
    if source.is_dir():
        sheets = sorted(
            p.name for p in source.iterdir() if p.is_file() and p.suffix.lower() in SHEET_SUFFIXES
        )
        if sheets:
            fix += (
                f"; to ingest the case sheet {sheets[0]} found there, give its path: "
                f"medtl ingest {source / sheets[0]}"
            )
    return InputError(
        source,
        f"no usable case found ({len(rejected)} inputs set aside: {first}"
        + ("; ..." if len(rejected) > 3 else "")
        + ")",
        fix,
    )


def ingest_path(
    source: Path,
    out: Path,
    salt: str,
    modality: str | None = None,
    progress: bool = True,
    *,
    classes: dict[int, str] | None = None,
    synonyms: dict[str, list[str]] | None = None,
    workers: int = 4,
    labels: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Ingest a case sheet, a DICOM tree, an image folder, or an nnU-Net / MSD folder.

    ``out`` is checked against the inputs before anything is read, and written as a
    whole (see :func:`ingest`). When no case is usable, ``manifest.tsv`` (empty) and
    ``rejected.tsv`` are written all the same, then the error is raised.

    Args:
        source: the input (see :func:`find_sources`).
        out: output folder.
        salt: key of the patient-id hashes.
        modality: modality of image-file input.
        progress: show progress bars.
        classes: label value → class name; label files may hold only 0 and these values,
            and RTSTRUCT / SEG / Slicer names are matched to these names. None: label
            files are checked against the labels their ``dataset.json`` declares, or only
            for being integers 0..255 (see :class:`IngestOptions`).
        synonyms: class name → other ROI / segment names.
        workers: parallel DICOM header reads.
        labels: read labels (off when the cases are only to be segmented).

    Raises:
        InputError: when the source does not exist, ``out`` would touch an input, or the
            source holds no usable case.
        ConfigError: ``classes`` or ``synonyms`` cannot be used.
    """
    source = Path(source)
    check_separate(out, [source])
    options = IngestOptions(
        salt=salt,
        modality=modality,
        classes=classes or None,
        synonyms=synonyms or {},
        workers=workers,
        progress=progress,
        labels=labels,
    )
    options.name_map  # noqa: B018  (checks --classes / --synonyms before any reading)
    sources, found = find_sources(source, options)
    root = source if source.is_dir() else source.parent
    manifest, rejected = ingest(sources, out, options, found, root)
    if not sources and source.is_dir():
        raise _nothing_found(source, found)
    if manifest.empty:
        raise _no_usable_case(source, rejected)
    return manifest, rejected


__all__ = [
    "CaseSource",
    "IngestOptions",
    "find_sources",
    "ingest",
    "ingest_path",
    "input_paths",
    "read_manifest",
]
