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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
from tqdm.auto import tqdm

from medtl.io.deid import hash_id
from medtl.io.errors import InputError, MedtlError, Rejection
from medtl.io.files import atomic_write, atomic_write_text
from medtl.io.sources import (
    CaseSource,
    from_dataset_json,
    from_dicom_tree,
    from_nifti_folder,
    from_sheet,
    is_nifti,
    nifti_stem,
)
from medtl.io.volume import Volume

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
]
REJECTED_COLUMNS = ["path", "reason", "fix"]
RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


@dataclass(frozen=True)
class IngestOptions:
    """How cases are ingested.

    Attributes:
        salt: key of the patient-id hashes.
        modality: modality of NIfTI input (DICOM carries its own).
        classes: label value → class name, for DICOM label objects.
        synonyms: class name → other ROI / segment names of that class.
        workers: parallel DICOM header reads.
        progress: show progress bars.
        labels: read labels; off for cases that are only to be segmented.
    """

    salt: str
    modality: str | None = None
    classes: dict[int, str] = field(default_factory=lambda: {1: "foreground"})
    synonyms: dict[str, list[str]] = field(default_factory=dict)
    workers: int = 4
    progress: bool = True
    labels: bool = True


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


@dataclass
class _Loaded:
    volume: Volume
    label: np.ndarray | None
    label_source: str
    series_uid: str
    set_aside: list[Rejection]


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def _load_nifti(
    path: Path, what: str, allow_channels: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """A 3-D NIfTI volume (a trailing axis of length 1 dropped) and its affine.

    With ``allow_channels``, a 4-D volume (channels last) is kept as it is.
    """
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)
    except Exception as exc:
        raise InputError(
            path, f"cannot read {what} as NIfTI ({exc})", f"re-export the {what} as .nii.gz"
        ) from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3 and not (allow_channels and data.ndim == 4):
        raise InputError(
            path, f"expected a 3-D {what}, got shape {data.shape}", f"give one 3-D {what} per case"
        )
    return data, img.affine


def _read_nifti_image(source: CaseSource) -> Volume:
    data, affine = _load_nifti(source.image, "image", allow_channels=True)
    if not source.channels:
        return Volume(data.astype(np.float32), affine)
    stack = [data[..., None] if data.ndim == 3 else data]
    for extra in source.channels:
        more, more_affine = _load_nifti(extra, "image channel", allow_channels=True)
        if more.shape[:3] != data.shape[:3] or not np.allclose(more_affine, affine, atol=1e-3):
            raise InputError(
                extra,
                f"channel grid {more.shape[:3]} does not match the first channel's "
                f"{data.shape[:3]} (shape or affine differ)",
                "resample every channel of a case onto one grid before ingest",
            )
        stack.append(more[..., None] if more.ndim == 3 else more)
    return Volume(np.concatenate(stack, axis=3).astype(np.float32), affine)


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


def _read_nifti_label(path: Path, image: Volume) -> np.ndarray:
    if not path.is_file():
        raise InputError(path, "label file not found", "check the label path")
    lab, affine = _load_nifti(path, "label")
    if lab.shape != image.shape:
        raise InputError(
            path,
            f"label shape {lab.shape} does not match image shape {image.shape}",
            "export the label on the image's grid",
        )
    if not np.allclose(affine, image.affine, atol=1e-2):
        raise InputError(
            path,
            "label geometry (affine) does not match its image: "
            f"expected {np.round(image.affine, 3).tolist()}, "
            f"found {np.round(affine, 3).tolist()}",
            "export the label on the image's grid (same orientation and origin)",
        )
    if np.any(lab < 0) or not np.allclose(lab, np.round(lab)):
        raise InputError(
            path,
            "label values must be non-negative integers",
            "save the label as an integer label map",
        )
    return lab.astype(np.uint8)


def _dicom_label_kind(path: Path) -> str | None:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:
        return None
    uid = str(getattr(ds, "SOPClassUID", ""))
    return {RTSTRUCT_SOP_CLASS: "RTSTRUCT", SEG_SOP_CLASS: "SEG"}.get(uid)


def _read_dicom_label(
    path: Path, kind: str, image: Volume, series, options: IngestOptions
) -> tuple[np.ndarray, list[Rejection]]:
    from medtl.io.roi_names import build_name_map

    name_map = build_name_map(options.classes, options.synonyms)
    if kind == "RTSTRUCT":
        from medtl.io.rtstruct import rasterise_rtstruct

        conversion = rasterise_rtstruct(path, image, series, name_map)
    else:
        from medtl.io.dicomseg import read_seg

        conversion = read_seg(path, image, series, name_map)
    notes = [
        Rejection(
            str(path),
            f"{kind} ROI / segment {name!r} matches no class; not used",
            "add the name to dataset.label_synonyms if it names one of the classes",
        )
        for name in conversion.unmatched
    ]
    if not conversion.used:
        raise InputError(
            path,
            f"no ROI / segment of this {kind} matches a class "
            f"(names found: {', '.join(conversion.unmatched) or 'none'}; classes: "
            f"{', '.join(options.classes.values())})",
            "name the classes' other names in dataset.label_synonyms",
        )
    return conversion.array.astype(np.uint8), notes


def _load_case(source: CaseSource, options: IngestOptions) -> _Loaded:
    """Read one case's image and label; raises InputError for what cannot be used."""
    from medtl.io.dicom import load_series_checked

    set_aside: list[Rejection] = []
    series = source.series
    path = source.image
    if series is None:
        if path is None or not path.exists():
            raise InputError(
                path, "image not found", "check the path in the case sheet or dataset.json"
            )
        if path.is_dir():
            series = _series_of_folder(path, options)
        elif not is_nifti(path):
            raise InputError(
                path,
                "neither a NIfTI file (.nii, .nii.gz) nor a folder of DICOM files",
                "convert the image to NIfTI or give its DICOM series folder",
            )
    if series is not None:
        volume, set_aside = load_series_checked(series)
        # Labels are matched to the slices that made the volume, not to set-aside files.
        dropped = {str(Path(r.path)) for r in set_aside}
        series = dataclasses.replace(
            series, files=tuple(f for f in series.files if str(Path(f)) not in dropped)
        )
    else:
        volume = _read_nifti_image(source)
    label, label_source = None, ""
    if options.labels and source.label_object is not None:
        obj = source.label_object
        label, notes = _read_dicom_label(obj.path, obj.kind, volume, series, options)
        set_aside += notes
        label_source = obj.kind
    elif options.labels and source.label is not None:
        kind = None if is_nifti(source.label) else _dicom_label_kind(source.label)
        if kind is None:
            label, label_source = _read_nifti_label(source.label, volume), "NIfTI"
        elif series is None:
            raise InputError(
                source.label,
                f"a {kind} label needs its DICOM image series, but the image is NIfTI",
                "give the image as the DICOM series folder the label was drawn on",
            )
        else:
            label, notes = _read_dicom_label(source.label, kind, volume, series, options)
            set_aside += notes
            label_source = kind
    return _Loaded(
        volume=volume,
        label=label,
        label_source=label_source,
        series_uid=volume.source_uids.get("SeriesInstanceUID", ""),
        set_aside=set_aside,
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


def ingest(
    sources: list[CaseSource],
    out: Path,
    options: IngestOptions,
    rejected: list[Rejection] | None = None,
    root: Path | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Convert cases to NIfTI and write ``manifest.tsv`` and ``rejected.tsv``.

    Args:
        sources: the cases to ingest.
        out: output folder (``images/``, ``labels/``, ``manifest.tsv``, ``rejected.tsv``).
        options: salt, modality, classes and the rest.
        rejected: rejections found earlier (e.g. during DICOM discovery).
        root: the ingest source; rejected paths are written relative to it.

    Returns:
        The manifest and the rejections as data frames.
    """
    out = Path(out)
    rows: list[ManifestRow] = []
    rejections = list(rejected or [])
    seen: dict[str, int] = {}
    for source in tqdm(sources, desc="ingest", disable=not options.progress):
        try:
            loaded = _load_case(source, options)
        except MedtlError as exc:
            if isinstance(exc, InputError):
                rejections.append(exc.to_rejection())
            else:
                rejections.append(Rejection(str(source.image), str(exc), "see the reason"))
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
        image_path = out / "images" / f"{case_id}.nii.gz"
        vol = Volume(volume.array.astype(np.float32), volume.affine)
        atomic_write(image_path, lambda tmp, v=vol: nib.save(v.to_nifti(), str(tmp)))
        label_path = ""
        if loaded.label is not None:
            label_path = str(out / "labels" / f"{case_id}.nii.gz")
            lv = Volume(loaded.label, volume.affine)
            atomic_write(label_path, lambda tmp, v=lv: nib.save(v.to_nifti(), str(tmp)))
        modality = volume.modality if volume.modality != "unknown" else options.modality
        rows.append(
            ManifestRow(
                case_id=case_id,
                patient_id=patient,
                image=str(image_path),
                label=label_path,
                modality=modality or "unknown",
                spacing="x".join(f"{s:.2f}" for s in volume.spacing),
                shape="x".join(str(s) for s in volume.shape),
                orientation=volume.orientation,
                channels=1 if volume.array.ndim == 3 else int(volume.array.shape[3]),
                label_source=loaded.label_source,
                series_uid=loaded.series_uid,
            )
        )
    manifest = pd.DataFrame([asdict(r) for r in rows], columns=MANIFEST_COLUMNS)
    rejected_df = pd.DataFrame(
        [{"path": _relative(r.path, root), "reason": r.reason, "fix": r.fix} for r in rejections],
        columns=REJECTED_COLUMNS,
    )
    atomic_write_text(out / "rejected.tsv", rejected_df.to_csv(sep="\t", index=False))
    atomic_write_text(out / "manifest.tsv", manifest.to_csv(sep="\t", index=False))
    return manifest, rejected_df


def find_sources(source: Path, options: IngestOptions) -> tuple[list[CaseSource], list[Rejection]]:
    """The cases of a case sheet, a folder with ``dataset.json``, a DICOM tree or a NIfTI file."""
    if not source.exists():
        raise InputError(source, "does not exist", "give a DICOM folder, a NIfTI folder or a TSV")
    if source.is_file() and source.suffix in (".tsv", ".txt"):
        return from_sheet(source), []
    if source.is_file() and is_nifti(source):
        return [CaseSource(image=source)], []
    if source.is_dir() and (source / "dataset.json").is_file():
        return from_dataset_json(source)
    if source.is_dir():
        niftis = from_nifti_folder(source)
        if niftis:
            return niftis, []
        return from_dicom_tree(source, workers=options.workers, progress=options.progress)
    raise InputError(
        source,
        "not a case sheet (.tsv), NIfTI file or folder",
        "give a DICOM folder, a NIfTI folder with dataset.json, or a case sheet",
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
    """Ingest a case sheet, a DICOM tree, or a NIfTI / nnU-Net / MSD folder.

    Args:
        source: the input (see :func:`find_sources`).
        out: output folder.
        salt: key of the patient-id hashes.
        modality: modality of NIfTI input.
        progress: show progress bars.
        classes: label value → class name (for RTSTRUCT / SEG labels).
        synonyms: class name → other ROI / segment names.
        workers: parallel DICOM header reads.
        labels: read labels (off when the cases are only to be segmented).

    Raises:
        InputError: when the source does not exist or holds no usable case.
    """
    source = Path(source)
    options = IngestOptions(
        salt=salt,
        modality=modality,
        classes=classes or {1: "foreground"},
        synonyms=synonyms or {},
        workers=workers,
        progress=progress,
        labels=labels,
    )
    sources, found = find_sources(source, options)
    root = source if source.is_dir() else source.parent
    manifest, rejected = ingest(sources, out, options, found, root)
    if manifest.empty:
        raise InputError(
            source,
            f"no usable case found ({len(rejected)} inputs set aside: "
            + "; ".join(f"{r.path}: {r.reason}" for r in rejected.head(3).itertuples())
            + ("; ..." if len(rejected) > 3 else "")
            + ")",
            "check the reasons (all listed in rejected.tsv)",
        )
    return manifest, rejected


__all__ = [
    "CaseSource",
    "IngestOptions",
    "find_sources",
    "ingest",
    "ingest_path",
    "read_manifest",
]
