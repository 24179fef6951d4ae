"""The one in-memory image type every reader returns and every writer takes."""

from __future__ import annotations

from dataclasses import dataclass, field

import nibabel as nib
import numpy as np


def spacing_of(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along the array axes: the column norms of the affine.

    Example:
        >>> spacing_of(np.diag([0.8, -0.8, 3.0, 1.0]))
        (0.8, 0.8, 3.0)
    """
    affine = np.asarray(affine, dtype=float)
    return tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))


@dataclass
class Volume:
    """A 3-D image (or label) on a physical grid.

    Attributes:
        array: voxel values indexed ``[i, j, k]`` (nibabel's convention), float32 for
            images, an integer type for labels.
        affine: 4x4 voxel-to-world matrix in RAS+ millimetres (nibabel's convention).
        modality: DICOM modality code (``"CT"``, ``"MR"``, ...) or ``"unknown"``.
        source_uids: DICOM UIDs the volume came from (``StudyInstanceUID``,
            ``SeriesInstanceUID``, ``FrameOfReferenceUID``); empty for NIfTI input.
        patient_key: the raw patient identifier, kept in memory only so that it can be
            hashed; never write it anywhere.
        scanner: the scanner as the DICOM headers name it (Manufacturer and
            ManufacturerModelName), ``""`` when they do not (NIfTI input).

    Example:
        >>> v = Volume(np.zeros((4, 4, 4), np.float32), np.diag([2.0, 2.0, 3.0, 1.0]))
        >>> v.spacing
        (2.0, 2.0, 3.0)
    """

    array: np.ndarray
    affine: np.ndarray
    modality: str = "unknown"
    source_uids: dict[str, str] = field(default_factory=dict)
    patient_key: str | None = None
    scanner: str = ""

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the array axes."""
        return spacing_of(self.affine)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape[:3])

    @property
    def orientation(self) -> str:
        """Axis codes of the array axes, e.g. ``"LPS"`` or ``"RAS"``."""
        return "".join(nib.orientations.aff2axcodes(self.affine))

    def to_nifti(self) -> nib.Nifti1Image:
        """The volume as a NIfTI image; the header carries no identifiers."""
        img = nib.Nifti1Image(self.array, self.affine)
        img.header.set_qform(self.affine, code=1)
        img.header.set_sform(self.affine, code=1)
        img.header["descrip"] = b"medtl"
        return img
