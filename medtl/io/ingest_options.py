"""How cases are ingested: :class:`IngestOptions` and the default class names."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from medtl.kernel.errors import ConfigError

#: The classes DICOM ROI / segment names are matched to when none are given.
DEFAULT_CLASSES = {1: "foreground"}


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
        compress: write ``.nii.gz``; off for a temporary copy read once (``medtl
            predict`` ingests into a temporary folder: gzip took 1.5 s of a 512 × 512 ×
            120 CT case's 10).
    """

    salt: str
    modality: str | None = None
    classes: dict[int, str] | None = None
    synonyms: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    workers: int = 4
    progress: bool = True
    labels: bool = True
    compress: bool = True

    @property
    def name_map(self) -> dict[str, int]:
        """Normalised ROI / segment name → class value (see :mod:`medtl.io.roi_names`)."""
        from medtl.io.roi_names import build_name_map

        try:
            return build_name_map(self.classes or DEFAULT_CLASSES, self.synonyms)
        except ValueError as exc:
            raise ConfigError(f"classes / label_synonyms (--classes, --synonyms): {exc}") from exc


__all__ = ["DEFAULT_CLASSES", "IngestOptions"]
