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
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from medtl.io.case_loading import LoadedCase, left_behind_by, load_case
from medtl.io.checks import content_key
from medtl.io.deid import hash_id
from medtl.io.image_file import is_image_file
from medtl.io.images import companion_files
from medtl.io.ingest_options import IngestOptions
from medtl.io.manifest import ManifestRow, relative_path, write_tables
from medtl.io.outputs import check_separate, fresh_folder
from medtl.io.sources import (
    SHEET_SUFFIXES,
    CaseSource,
    from_dataset_json,
    from_dicom_tree,
    from_image_folder,
    from_sheet,
    nifti_stem,
)
from medtl.io.volume import Volume
from medtl.kernel.errors import ConfigError, InputError, MedtlError, Rejection
from medtl.kernel.files import atomic_write

#: What ``ingest`` writes, to recognise an earlier output that has no marker file.
OUTPUT_NAMES = ("manifest.tsv", "rejected.tsv", "images", "labels")


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


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
                    f"the same image as {relative_path(first_path, self.root)} (case "
                    f"{first_case!r}): identical voxels "
                    "and geometry. One scan in two cases can land in both the training and "
                    "the test set",
                    "list each scan once (remove this case, or give it the scan it should have)",
                )
        self.by_key.setdefault(key, []).append((volume.affine, str(source.image), case_id))
        return None


def _write_case(
    staging: Path, case_id: str, volume: Volume, label: np.ndarray | None, suffix: str
) -> tuple[str, str]:
    """Write a case's image (and label) under ``staging``; return their names under out."""
    image_name = Path("images") / f"{case_id}{suffix}"
    vol = Volume(volume.array.astype(np.float32), volume.affine)
    atomic_write(staging / image_name, lambda tmp: nib.save(vol.to_nifti(), str(tmp)))
    if label is None:
        return str(image_name), ""
    label_name = Path("labels") / f"{case_id}{suffix}"
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
            loaded, set_aside = _load_or_set_aside(source, options)
            rejections += set_aside
            if loaded is None:
                continue
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
            image_name, label_name = _write_case(
                staging, case_id, volume, loaded.label, ".nii.gz" if options.compress else ".nii"
            )
            rows.append(
                _manifest_row(out, case_id, patient, loaded, image_name, label_name, options)
            )
        manifest, rejected_df = write_tables(staging, rows, rejections, root)
    return manifest, rejected_df


def _load_or_set_aside(
    source: CaseSource, options: IngestOptions
) -> tuple[LoadedCase | None, list[Rejection]]:
    """The case as read and the files its reading set aside; or None and why it cannot be
    used (with the other input of the case, left behind)."""
    try:
        loaded = load_case(source, options)
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
        return None, [cause, *left_behind_by(source, cause)]
    return loaded, list(loaded.set_aside)


def _manifest_row(
    out: Path,
    case_id: str,
    patient: str,
    loaded: LoadedCase,
    image_name: str,
    label_name: str,
    options: IngestOptions,
) -> ManifestRow:
    """The manifest row of a case written as ``image_name`` (and ``label_name``) under out."""
    volume = loaded.volume
    modality = volume.modality if volume.modality != "unknown" else options.modality
    return ManifestRow(
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
        scanner=volume.scanner,
    )


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
    compress: bool = True,
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
        compress: gzip the NIfTI files (off for a temporary copy read once).

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
        compress=compress,
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
]
