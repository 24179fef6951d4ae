"""The preprocessing plan, derived once from the data set's fingerprint.

Like nnU-Net's experiment planning, the plan is computed from all training cases —
their spacings and the intensities inside the labelled foreground — and saved as
``plan.json``; every case (training or new) is then preprocessed with the same plan.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from medtl.config import PreprocessConfig
from medtl.kernel.classes import ClassMap
from medtl.kernel.errors import ConfigError, InputError
from medtl.kernel.files import atomic_write_text


@dataclass(frozen=True)
class Plan:
    """How every case is brought onto one grid and intensity scale.

    Attributes:
        modality: the data set's modality (``CT``, ``MR``, ...).
        target_spacing: voxel size (mm) after resampling, in RAS axis order.
        normalization: ``ct`` (clip to the foreground's 0.5-99.5 percentiles, then
            z-score with the foreground's mean and sd) or ``zscore`` (per image, over
            its non-zero voxels).
        intensity: foreground statistics (mean, std, p005, p995).
        crop_foreground: whether cases are cropped to their non-zero bounding box.
        median_shape: median case shape after resampling.
        n_cases: number of cases in the fingerprint.
        classes: label values → names.
    """

    modality: str
    target_spacing: tuple[float, float, float]
    normalization: str
    intensity: dict[str, float]
    crop_foreground: bool
    median_shape: tuple[int, int, int]
    n_cases: int
    classes: dict[str, str]

    @property
    def class_map(self) -> ClassMap:
        """:attr:`classes` keyed by label value, checked (sorted by value)."""
        return ClassMap.parse(self.classes, "plan.json: classes")

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Plan:
        path = Path(path)
        if not path.is_file():
            raise InputError(path, "preprocessing plan not found", "run the plan stage first")
        return cls.from_dict(json.loads(path.read_text()))

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        """A plan from its JSON form (``plan.json``, or the copy an ONNX export holds)."""
        d = dict(d)
        d["target_spacing"] = tuple(d["target_spacing"])
        d["median_shape"] = tuple(d["median_shape"])
        return cls(**d)


def canonical_spacing(img: nib.Nifti1Image) -> np.ndarray:
    """Voxel size along the RAS axes after reorientation to the closest canonical frame."""
    ornt = nib.orientations.io_orientation(img.affine)
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=float)
    out = np.empty(3)
    out[ornt[:, 0].astype(int)] = zooms
    return out


def make_plan(
    manifest: pd.DataFrame,
    cfg: PreprocessConfig,
    classes: dict[int, str],
    max_voxels: int = 200_000,
    seed: int = 0,
) -> Plan:
    """Compute the plan from the manifest's labelled cases.

    Args:
        manifest: the ingest manifest (columns image, label, modality).
        cfg: the preprocess section of the config.
        classes: label values → names (background excluded).
        max_voxels: foreground voxels sampled per case for the intensity statistics.
        seed: seed for that sampling.
    """
    labelled = manifest[manifest["label"].fillna("").astype(str) != ""]
    if labelled.empty:
        raise InputError(
            "manifest.tsv",
            "no case has a label; a plan needs labelled cases",
            "give labels for the training cases (label column of the case sheet)",
        )
    rng = np.random.default_rng(seed)
    spacings, shapes, samples = [], [], []
    for row in labelled.itertuples():
        img = nib.load(row.image)
        spacing = canonical_spacing(img)
        spacings.append(spacing)
        ornt = nib.orientations.io_orientation(img.affine)
        shape = np.empty(3)
        shape[ornt[:, 0].astype(int)] = img.shape[:3]
        shapes.append(shape * spacing)
        lab = np.asarray(nib.load(row.label).dataobj) > 0
        fg = np.asarray(img.dataobj, dtype=np.float32)[lab]
        if fg.size > max_voxels:
            fg = rng.choice(fg, max_voxels, replace=False)
        samples.append(fg)
    if cfg.target_spacing == "auto":
        target = tuple(float(s) for s in np.median(np.stack(spacings), axis=0))
    elif isinstance(cfg.target_spacing, tuple):
        target = tuple(float(s) for s in cfg.target_spacing)
    else:
        raise ConfigError(
            f"config key 'preprocess.target_spacing': got {cfg.target_spacing!r}; "
            "allowed: 'auto' or three numbers in mm"
        )
    median_shape = tuple(int(round(x)) for x in np.median(np.stack(shapes), axis=0) / target)
    modalities = labelled["modality"].astype(str).unique().tolist()
    modality = modalities[0] if len(modalities) == 1 else "mixed"
    normalization = cfg.normalization
    if normalization == "auto":
        normalization = "ct" if modality == "CT" else "zscore"
    fg = np.concatenate(samples) if samples else np.zeros(1)
    intensity = {
        "mean": float(fg.mean()),
        "std": float(fg.std()),
        "p005": float(np.percentile(fg, 0.5)),
        "p995": float(np.percentile(fg, 99.5)),
    }
    return Plan(
        modality=modality,
        target_spacing=target,
        normalization=normalization,
        intensity=intensity,
        crop_foreground=cfg.crop_foreground,
        median_shape=median_shape,
        n_cases=len(labelled),
        classes={str(k): v for k, v in classes.items()},
    )
