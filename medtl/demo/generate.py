"""Write the demo data set: a NIfTI source set and a DICOM target set.

Layout under ``out``::

    source/dataset.json            MSD-style: labels and training pairs
    source/imagesTr/src_000.nii.gz source images (2 mm isotropic, RAS)
    source/labelsTr/src_000.nii.gz labels: 1 body, 2 lesion
    target/dicom/<patient>/<study>/<series>/IM0000.dcm ...   one DICOM file per slice
    target/labels/<case>.nii.gz    tumour labels on the DICOM series' grid
    target/cases.tsv               case sheet pairing each series with its label
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from pydicom.uid import generate_uid
from tqdm.auto import tqdm

from medtl.demo.phantoms import SOURCE, make_phantom, shifted_domain
from medtl.io.dicom_write import write_series
from medtl.io.volume import Volume
from medtl.kernel.files import atomic_write, atomic_write_text

DEMO_UID_ROOT = "1.2.826.0.1.3680043.10.1234."


@dataclass(frozen=True)
class DemoSummary:
    """What :func:`generate_demo` wrote."""

    source_cases: int
    target_patients: int
    target_cases: int
    sheet: Path
    source_dataset: Path


def _save_nifti(volume: Volume, path: Path) -> None:
    atomic_write(path, lambda tmp: nib.save(volume.to_nifti(), str(tmp)))


def _uid(seed: int, *parts: object) -> str:
    return generate_uid(
        prefix=DEMO_UID_ROOT, entropy_srcs=["medtl-demo", str(seed), *map(str, parts)]
    )


def generate_demo(
    out: Path,
    seed: int = 7,
    n_source: int = 24,
    n_patients: int = 14,
    second_study_fraction: float = 0.3,
    progress: bool = True,
    shift: float = 1.0,
) -> DemoSummary:
    """Generate the demo data set, deterministically from ``seed``.

    Args:
        out: output folder (created).
        seed: the only source of randomness.
        n_source: number of labelled source volumes (pretraining set).
        n_patients: number of target patients.
        second_study_fraction: share of target patients with a second (follow-up) study.
        progress: show a progress bar.
        shift: the target's shift strength (:func:`~medtl.demo.phantoms.shifted_domain`):
            0 draws the target from the source domain, 1 (default) is the demo's target
            domain, between interpolates, above 1 extrapolates. Shift 1 draws exactly
            the numbers the demo drew before the knob existed: the same files.

    Example:
        >>> import tempfile
        >>> s = generate_demo(Path(tempfile.mkdtemp()), n_source=2, n_patients=2, progress=False)
        >>> s.target_patients
        2
    """
    out = Path(out)
    rng = np.random.default_rng(seed)
    dataset = _write_source(out / "source", rng, n_source, progress)
    sheet, n_cases = _write_target(
        out / "target", rng, seed, n_patients, second_study_fraction, progress, shift
    )
    return DemoSummary(
        source_cases=n_source,
        target_patients=n_patients,
        target_cases=n_cases,
        sheet=sheet,
        source_dataset=dataset,
    )


def _write_source(
    source_dir: Path, rng: np.random.Generator, n_source: int, progress: bool
) -> Path:
    """The labelled NIfTI source set and its ``dataset.json`` (returned)."""
    training = []
    for i in tqdm(range(n_source), desc="demo source", disable=not progress):
        p = make_phantom(rng, SOURCE)
        affine = np.diag([*p.spacing, 1.0])
        affine[:3, 3] = -np.asarray(p.image.shape) * np.asarray(p.spacing) / 2
        name = f"src_{i:03d}.nii.gz"
        _save_nifti(Volume(p.image, affine), source_dir / "imagesTr" / name)
        _save_nifti(Volume(p.label, affine), source_dir / "labelsTr" / name)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    dataset = {
        "name": "medtl-demo-source",
        "description": "Synthetic phantoms: body with ring-shaped lesions among look-alikes",
        "modality": {"0": "MR"},
        "labels": {"0": "background", "1": "body", "2": "lesion"},
        "numTraining": n_source,
        "training": training,
    }
    path = source_dir / "dataset.json"
    atomic_write_text(path, json.dumps(dataset, indent=2) + "\n")
    return path


def _write_target(
    target_dir: Path,
    rng: np.random.Generator,
    seed: int,
    n_patients: int,
    second_study_fraction: float,
    progress: bool,
    shift: float = 1.0,
) -> tuple[Path, int]:
    """The DICOM target set, its labels and its case sheet: the sheet and its rows."""
    domain = shifted_domain(shift)
    rows = []
    for pat in tqdm(range(n_patients), desc="demo target", disable=not progress):
        n_studies = 2 if rng.random() < second_study_fraction else 1
        for study in range(n_studies):
            p = make_phantom(rng, domain)
            tumour = (p.label == 2).astype(np.uint8)
            # DICOM axial slices: array axes point Left, Posterior, Superior (LPS).
            affine = np.diag([-p.spacing[0], -p.spacing[1], p.spacing[2], 1.0])
            affine[:3, 3] = [48.0, 48.0, -48.0 + 30.0 * study]
            study_uid, series_uid = _uid(seed, pat, study), _uid(seed, pat, study, "series")
            rel = Path("dicom") / f"patient{pat:03d}" / f"study{study}" / "series1"
            write_series(
                Volume(p.image, affine),
                target_dir / rel,
                patient_id=f"DEMO-{pat:03d}",
                patient_name=f"Demo^Patient{pat:03d}",
                birth_date=f"19{50 + pat:02d}0{1 + pat % 9}15",
                study_uid=study_uid,
                series_uid=series_uid,
                frame_of_reference_uid=_uid(seed, pat, study, "for"),
                study_date=f"2024{1 + study * 6:02d}{10 + pat:02d}",
                series_number=1,
                series_description="T1 demo",
                modality="MR",
                rescale_slope=0.5,
                rescale_intercept=-200.0,
            )
            label_rel = Path("labels") / f"patient{pat:03d}_study{study}.nii.gz"
            _save_nifti(Volume(tumour, affine), target_dir / label_rel)
            rows.append({"image": str(rel), "label": str(label_rel)})
    sheet = target_dir / "cases.tsv"
    atomic_write_text(sheet, pd.DataFrame(rows).to_csv(sep="\t", index=False))
    return sheet, len(rows)
