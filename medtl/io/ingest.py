"""Ingest: find the cases in a DICOM folder, an MSD/NIfTI folder or a case sheet.

Every usable case becomes a NIfTI image (and label) under ``out/images`` and
``out/labels`` and one row of ``out/manifest.tsv``; every input that cannot be used
becomes a row of ``out/rejected.tsv`` with the reason and how to fix it. One bad case
never stops the others, and the input folder is never modified.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from medtl.io.deid import hash_id
from medtl.io.dicom import SeriesInfo, discover_series, load_series
from medtl.io.errors import InputError, MedtlError, Rejection
from medtl.io.files import atomic_write, atomic_write_text
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
]
REJECTED_COLUMNS = ["path", "reason", "fix"]
NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass(frozen=True)
class CaseSource:
    """One case to ingest: where its image and label come from.

    Attributes:
        image: a NIfTI file or a folder holding one DICOM series.
        label: a NIfTI label file, or None.
        patient: the patient identifier (raw; hashed before it is written), or None to
            take it from the DICOM header (or the case name for NIfTI).
        case_id: a pseudonymous case name, or None to derive one.
    """

    image: Path
    label: Path | None = None
    patient: str | None = None
    case_id: str | None = None


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


def _is_nifti(path: Path) -> bool:
    return path.name.endswith(NIFTI_SUFFIXES)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return re.sub(r"_0000$", "", name)


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def sources_from_sheet(sheet: Path) -> list[CaseSource]:
    """Read a case sheet (TSV with columns ``image``, optional ``label``, ``patient``, ``case_id``).

    Relative paths are taken relative to the sheet's folder.
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


def sources_from_msd(folder: Path) -> list[CaseSource]:
    """Cases listed in an MSD-style ``dataset.json`` (``training`` image/label pairs)."""
    path = folder / "dataset.json"
    try:
        meta = json.loads(path.read_text())
        pairs = meta["training"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(
            path,
            f"not an MSD-style dataset.json ({exc!r})",
            'give a \'training\' list of {"image": ..., "label": ...}',
        ) from exc
    return [
        CaseSource(image=folder / p["image"], label=folder / p["label"] if p.get("label") else None)
        for p in pairs
    ]


def sources_from_folder(folder: Path) -> tuple[list[CaseSource], list[Rejection]]:
    """Unlabelled cases in a folder: NIfTI files, or else every DICOM series found."""
    niftis = sorted(p for p in folder.rglob("*") if p.is_file() and _is_nifti(p))
    if niftis:
        return [CaseSource(image=p) for p in niftis], []
    series, rejected = discover_series(folder)
    return [CaseSource(image=s.files[0].parent) for s in series], rejected


def _load_nifti(path: Path, what: str) -> tuple[np.ndarray, np.ndarray]:
    """A 3-D NIfTI volume (a trailing axis of length 1 dropped) and its affine."""
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)
    except Exception as exc:
        raise InputError(
            path, f"cannot read {what} as NIfTI ({exc})", f"re-export the {what} as .nii.gz"
        ) from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(
            path, f"expected a 3-D {what}, got shape {data.shape}", f"give one 3-D {what} per case"
        )
    return data, img.affine


def _read_image(source: CaseSource) -> Volume:
    path = source.image
    if path is None or not path.exists():
        raise InputError(
            path, "image not found", "check the path in the case sheet or dataset.json"
        )
    if path.is_dir():
        series, _ = discover_series(path)
        if not series:
            raise InputError(
                path,
                "no DICOM image series found in this folder",
                "point the case at the folder that holds the series' slices",
            )
        if len(series) > 1:
            raise InputError(
                path,
                f"expected one DICOM series in this folder, found {len(series)}",
                "give each series its own row in the case sheet, pointing at its own folder",
            )
        return load_series(series[0])
    if _is_nifti(path):
        data, affine = _load_nifti(path, "image")
        return Volume(data.astype(np.float32), affine)
    raise InputError(
        path,
        "neither a NIfTI file (.nii, .nii.gz) nor a folder of DICOM files",
        "convert the image to NIfTI or give its DICOM series folder",
    )


def _read_label(path: Path, image: Volume) -> np.ndarray:
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


def ingest(
    sources: list[CaseSource],
    out: Path,
    salt: str,
    modality: str | None = None,
    rejected: list[Rejection] | None = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Convert cases to NIfTI and write ``manifest.tsv`` and ``rejected.tsv``.

    Args:
        sources: the cases to ingest.
        out: output folder (``images/``, ``labels/``, ``manifest.tsv``, ``rejected.tsv``).
        salt: key for the patient-id hashes.
        modality: modality for NIfTI cases (DICOM cases carry their own).
        rejected: rejections found earlier (e.g. during DICOM discovery).
        progress: show a progress bar.

    Returns:
        The manifest and the rejections as data frames.
    """
    out = Path(out)
    rows: list[ManifestRow] = []
    rejections = list(rejected or [])
    seen: dict[str, int] = {}
    for source in tqdm(sources, desc="ingest", disable=not progress):
        try:
            volume = _read_image(source)
            label = _read_label(source.label, volume) if source.label else None
        except MedtlError as exc:
            if isinstance(exc, InputError):
                rejections.append(exc.to_rejection())
            else:
                rejections.append(Rejection(str(source.image), str(exc), "see the reason"))
            continue
        raw_patient = source.patient or volume.patient_key or _stem(source.image)
        patient = hash_id(raw_patient, salt)
        if source.case_id:
            case_id = _safe_id(source.case_id)
        elif volume.source_uids:
            seen[patient] = seen.get(patient, 0) + 1
            case_id = f"{patient}_{seen[patient]:02d}"
        else:
            case_id = _safe_id(_stem(source.image))
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
        if label is not None:
            label_path = str(out / "labels" / f"{case_id}.nii.gz")
            lv = Volume(label, volume.affine)
            atomic_write(label_path, lambda tmp, v=lv: nib.save(v.to_nifti(), str(tmp)))
        rows.append(
            ManifestRow(
                case_id=case_id,
                patient_id=patient,
                image=str(image_path),
                label=label_path,
                modality=volume.modality
                if volume.modality != "unknown"
                else (modality or "unknown"),
                spacing="x".join(f"{s:.2f}" for s in volume.spacing),
                shape="x".join(str(s) for s in volume.shape),
                orientation=volume.orientation,
            )
        )
    manifest = pd.DataFrame([asdict(r) for r in rows], columns=MANIFEST_COLUMNS)
    rejected_df = pd.DataFrame([asdict(r) for r in rejections], columns=REJECTED_COLUMNS)
    atomic_write_text(out / "rejected.tsv", rejected_df.to_csv(sep="\t", index=False))
    atomic_write_text(out / "manifest.tsv", manifest.to_csv(sep="\t", index=False))
    return manifest, rejected_df


def ingest_path(
    source: Path, out: Path, salt: str, modality: str | None = None, progress: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Ingest a case sheet (``.tsv``), an MSD folder (with ``dataset.json``) or a folder.

    Raises:
        InputError: when the source does not exist or holds no usable case.
    """
    source = Path(source)
    found: list[Rejection] = []
    if not source.exists():
        raise InputError(source, "does not exist", "give a DICOM folder, a NIfTI folder or a TSV")
    if source.is_file() and source.suffix in (".tsv", ".txt"):
        sources = sources_from_sheet(source)
    elif source.is_file() and _is_nifti(source):
        sources = [CaseSource(image=source)]
    elif source.is_dir() and (source / "dataset.json").is_file():
        sources = sources_from_msd(source)
    elif source.is_dir():
        sources, found = sources_from_folder(source)
    else:
        raise InputError(
            source,
            "not a case sheet (.tsv), NIfTI file or folder",
            "give a DICOM folder, a NIfTI folder with dataset.json, or a case sheet",
        )
    manifest, rejected = ingest(sources, out, salt, modality, found, progress)
    if manifest.empty:
        raise InputError(
            source,
            f"no usable case found ({len(rejected)} inputs rejected; see "
            f"{Path(out) / 'rejected.tsv'})",
            "check the reasons in rejected.tsv",
        )
    return manifest, rejected


__all__ = ["CaseSource", "SeriesInfo", "ingest", "ingest_path", "sources_from_sheet"]
