"""CT-like cases at clinical size for ``make bench-clinical``: seeded, vectorised, a few
seconds a case.

Each case is a volume in Hounsfield units on a grid of ``shape`` voxels (x, y, z) at
``spacing`` mm (default 512 × 512 × 120 at 0.8 × 0.8 × 2.5 mm, a thoracic/abdominal CT):
air outside (−1000 HU), a body ellipse of soft tissue (~40 HU) inside a ring of
subcutaneous fat (~−100 HU), two lungs (~−800 HU), a spine (~700 HU), Gaussian noise, and
1–3 spherical or ellipsoidal lesions of 10–40 mm (~90 HU) in the soft tissue, labelled 1.
Everything is placed in millimetres, so another ``spacing`` gives the same anatomy.

:func:`write_cases` writes them as NIfTI image + label with a case sheet ``cases.tsv``
(image, label, patient, case_id), what ``medtl ingest`` reads. The DICOM row of the
benchmark converts a clinical-size :class:`dicom_convert.SeriesSet` instead (the same
phantom, written by medtl's DICOM writer).

Run with medtl's environment::

    .venv/bin/python benchmarks/clinical_data.py --out cases --cases 3
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

AIR, FAT, SOFT, LUNG, BONE, LESION = -1000.0, -100.0, 40.0, -800.0, 700.0, 90.0
NOISE_HU = 15.0


@dataclass(frozen=True)
class ClinicalSpec:
    """What :func:`write_cases` generates.

    Attributes:
        cases: how many cases (one patient each).
        shape: voxels along x, y, z.
        spacing: voxel size in mm along x, y, z.
        seed: seed of the lesions and the noise (case ``i`` uses ``seed + i``).
    """

    cases: int = 3
    shape: tuple[int, int, int] = (512, 512, 120)
    spacing: tuple[float, float, float] = (0.8, 0.8, 2.5)
    seed: int = 0


def _axes(shape: tuple[int, int, int], spacing: tuple[float, ...]) -> list[np.ndarray]:
    """Voxel-centre coordinates in mm from the grid's centre, shaped to broadcast."""
    out = []
    for axis, (n, s) in enumerate(zip(shape, spacing, strict=True)):
        c = (np.arange(n, dtype=np.float32) - (n - 1) / 2) * np.float32(s)
        view = [1, 1, 1]
        view[axis] = n
        out.append(c.reshape(view))
    return out


def _lesions(rng: np.random.Generator, z_half: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """1–3 lesions: (centre mm, semi-axes mm), in the soft tissue between lungs and spine."""
    found = []
    for _ in range(int(rng.integers(1, 4))):
        radii = rng.uniform(5.0, 20.0, size=3)  # 10–40 mm diameters
        if rng.random() < 0.5:
            radii[:] = radii[0]  # a sphere
        centre = np.array(
            [
                rng.uniform(-90.0, 90.0),
                rng.uniform(-70.0, 20.0),
                rng.uniform(-0.8 * z_half, -0.1 * z_half),  # below the lungs
            ]
        )
        found.append((centre, radii))
    return found


def phantom(spec: ClinicalSpec, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Case ``index``: its volume in HU (int16) and its lesion label (uint8), x, y, z."""
    rng = np.random.default_rng(spec.seed + index)
    x, y, z = _axes(spec.shape, spec.spacing)
    z_half = spec.shape[2] * spec.spacing[2] / 2
    wobble = 1.0 + 0.05 * rng.standard_normal()  # body size varies between patients
    a, b = 170.0 * wobble, 120.0 * wobble
    body2d = (x / a) ** 2 + (y / b) ** 2 < 1  # (nx, ny, 1): broadcast along z
    inner2d = (x / (a - 15)) ** 2 + (y / (b - 15)) ** 2 < 1
    hu = np.full(spec.shape, AIR, dtype=np.float32)
    hu[np.broadcast_to(body2d, spec.shape)] = FAT
    hu[np.broadcast_to(inner2d, spec.shape)] = SOFT
    for side in (-1, 1):  # lungs in the upper part of the volume
        lung = ((x - side * 70) / 55) ** 2 + ((y + 10) / 70) ** 2 + (
            (z - 0.5 * z_half) / (0.6 * z_half)
        ) ** 2 < 1
        hu[lung & inner2d] = LUNG
    spine2d = (x / 18) ** 2 + ((y - 0.7 * b) / 18) ** 2 < 1
    hu[np.broadcast_to(spine2d, spec.shape)] = BONE
    label = np.zeros(spec.shape, dtype=np.uint8)
    for centre, radii in _lesions(rng, z_half):
        inside = (
            ((x - centre[0]) / radii[0]) ** 2
            + ((y - centre[1]) / radii[1]) ** 2
            + ((z - centre[2]) / radii[2]) ** 2
        ) < 1
        label[inside] = 1
    hu[label == 1] = LESION
    hu += rng.standard_normal(spec.shape, dtype=np.float32) * np.float32(NOISE_HU)
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16), label


def affine(spec: ClinicalSpec) -> np.ndarray:
    """The grid's affine: axis-aligned, voxel size ``spacing``, centred on the origin."""
    out = np.diag([*spec.spacing, 1.0])
    out[:3, 3] = [-(n - 1) / 2 * s for n, s in zip(spec.shape, spec.spacing, strict=True)]
    return out


def write_cases(folder: Path, spec: ClinicalSpec) -> Path:
    """Write ``spec.cases`` cases as NIfTI (``images/``, ``labels/``) and the case sheet
    ``folder/cases.tsv``; returns the sheet. Files already there are written again."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(spec.cases):
        name = f"ct{i:03d}"
        hu, label = phantom(spec, i)
        image = nib.Nifti1Image(hu, affine(spec))
        image.header.set_xyzt_units("mm")
        nib.save(image, folder / "images" / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(label, affine(spec)), folder / "labels" / f"{name}.nii.gz")
        rows.append(
            {
                "image": f"images/{name}.nii.gz",
                "label": f"labels/{name}.nii.gz",
                "patient": f"clinical{i:03d}",
                "case_id": name,
            }
        )
    sheet = folder / "cases.tsv"
    pd.DataFrame(rows).to_csv(sheet, sep="\t", index=False)
    return sheet


def triple(text: str, kind: type = float) -> tuple:
    """``"512,512,120"`` -> ``(512, 512, 120)``: three numbers, comma-separated.

    Example:
        >>> triple("0.8,0.8,2.5")
        (0.8, 0.8, 2.5)
    """
    parts = [p for p in text.replace("x", ",").split(",") if p.strip()]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(
            f"expected three numbers for x, y, z (e.g. 512,512,120), got {text!r}"
        )
    return tuple(kind(p) for p in parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for the cases and cases.tsv")
    ap.add_argument("--cases", type=int, default=ClinicalSpec.cases)
    ap.add_argument("--shape", type=lambda t: triple(t, int), default=ClinicalSpec.shape)
    ap.add_argument("--spacing", type=triple, default=ClinicalSpec.spacing)
    ap.add_argument("--seed", type=int, default=ClinicalSpec.seed)
    a = ap.parse_args(argv)
    spec = ClinicalSpec(a.cases, a.shape, a.spacing, a.seed)
    print(write_cases(Path(a.out), spec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
