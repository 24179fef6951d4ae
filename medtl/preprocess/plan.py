"""The preprocessing plan, derived once from the data set's fingerprint.

Like nnU-Net's experiment planning, the plan is computed from all training cases —
their spacings and the intensities inside the labelled foreground — and saved as
``plan.json``; every case (training or new) is then preprocessed with the same plan.
With ``like_pretrained`` the spacing or normalisation is the pretrained checkpoint's
instead (nnU-Net's ``like_pretrained`` adaptation mode); the plan says where each came
from and warns when the data's voxels are much finer than the pretraining's.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

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
        spacing_source: where ``target_spacing`` came from: ``auto (median)``, ``fixed``
            or ``like_pretrained: <checkpoint>, <what said it>``; empty in plans written
            before it was recorded.
        normalization_source: where ``normalization`` came from (``auto (by modality)``,
            ``fixed``, ``like_pretrained: …``).
        data_spacing: the data set's median spacing (mm), whatever the target.
        pretraining_spacing: the checkpoint's pretraining spacing, when read.
        warnings: what the plan's user should know, e.g. a pretraining much coarser than
            the data.
    """

    modality: str
    target_spacing: tuple[float, float, float]
    normalization: str
    intensity: dict[str, float]
    crop_foreground: bool
    median_shape: tuple[int, int, int]
    n_cases: int
    classes: dict[str, str]
    spacing_source: str = ""
    normalization_source: str = ""
    data_spacing: tuple[float, float, float] | None = None
    pretraining_spacing: tuple[float, float, float] | None = None
    warnings: list[str] = field(default_factory=list)

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
        for key in ("data_spacing", "pretraining_spacing"):  # absent from older plans
            d[key] = tuple(d[key]) if d.get(key) else None
        return cls(**d)


class PretrainedGrid(Protocol):
    """How a pretrained checkpoint's data were preprocessed
    (:class:`medtl.models.pretraining.Pretraining` is one)."""

    @property
    def label(self) -> str: ...

    @property
    def spacing(self) -> tuple[float, float, float] | None: ...

    def medtl_normalization(self) -> str: ...


#: A data set whose voxels are finer than the pretraining's by more than this factor along
#: an axis gets a warning under like_pretrained. Resampling 2x coarser keeps fewer than
#: half of the samples along that axis: detail thinner than two of the data's voxels (small
#: lesions, thin walls) can vanish. Below 2 the change is within what the networks already
#: see: nnU-Net's scaling augmentation alone varies the scale from 0.7 to 1.4.
FINER_FACTOR = 2.0


def _need_pretrained(pretrained: PretrainedGrid | None, key: str) -> PretrainedGrid:
    if pretrained is None:
        raise ConfigError(
            f"config key 'preprocess.{key}': like_pretrained needs the pretrained checkpoint; "
            "none was given. How to fix: set pretrain.checkpoint (the workflow passes it to "
            "medtl plan as --pretrained), or give the value itself"
        )
    return pretrained


def _target_spacing(
    cfg: PreprocessConfig, median: tuple[float, float, float], pretrained: PretrainedGrid | None
) -> tuple[tuple[float, float, float], str, list[str]]:
    """The target spacing, where it came from, and the warnings it deserves."""
    if cfg.target_spacing == "auto":
        return median, "auto (median)", []
    if isinstance(cfg.target_spacing, tuple):
        return tuple(float(s) for s in cfg.target_spacing), "fixed", []  # type: ignore[return-value]
    if cfg.target_spacing != "like_pretrained":
        raise ConfigError(
            f"config key 'preprocess.target_spacing': got {cfg.target_spacing!r}; "
            "allowed: 'auto', 'like_pretrained' or three numbers in mm"
        )
    grid = _need_pretrained(pretrained, "target_spacing")
    if grid.spacing is None:
        note = "the pretraining did not resample: the data set's median"
        return median, f"like_pretrained: {grid.label} ({note})", []
    target = tuple(float(s) for s in grid.spacing)
    finer = [
        f"{axis} {d:.3g} mm vs {p:.3g} mm"
        for axis, d, p in zip("xyz", median, target, strict=True)
        if p > FINER_FACTOR * d
    ]
    warnings = []
    if finer:
        warnings.append(
            f"the data's median spacing is more than {FINER_FACTOR:g}x finer than the "
            f"pretraining's along {', '.join(finer)}: resampling to the pretraining's "
            "spacing discards detail thinner than two of the data's voxels. Consider "
            "preprocess.target_spacing: auto (or three numbers) if small structures matter"
        )
    return target, f"like_pretrained: {grid.label}", warnings  # type: ignore[return-value]


def _normalization(
    cfg: PreprocessConfig, modality: str, pretrained: PretrainedGrid | None
) -> tuple[str, str]:
    """The normalisation and where it came from."""
    if cfg.normalization == "auto":
        return ("ct" if modality == "CT" else "zscore"), "auto (by modality)"
    if cfg.normalization == "like_pretrained":
        grid = _need_pretrained(pretrained, "normalization")
        return grid.medtl_normalization(), f"like_pretrained: {grid.label}"
    return cfg.normalization, "fixed"


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
    pretrained: PretrainedGrid | None = None,
) -> Plan:
    """Compute the plan from the manifest's labelled cases.

    Args:
        manifest: the ingest manifest (columns image, label, modality).
        cfg: the preprocess section of the config.
        classes: label values → names (background excluded).
        max_voxels: foreground voxels sampled per case for the intensity statistics.
        seed: seed for that sampling.
        pretrained: how the pretrained checkpoint was preprocessed, for ``like_pretrained``
            (see :func:`medtl.models.pretraining.read_pretraining`).
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
    median = tuple(float(s) for s in np.median(np.stack(spacings), axis=0))
    target, spacing_source, warnings = _target_spacing(cfg, median, pretrained)  # type: ignore[arg-type]
    median_shape = tuple(int(round(x)) for x in np.median(np.stack(shapes), axis=0) / target)
    modalities = labelled["modality"].astype(str).unique().tolist()
    modality = modalities[0] if len(modalities) == 1 else "mixed"
    normalization, normalization_source = _normalization(cfg, modality, pretrained)
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
        spacing_source=spacing_source,
        normalization_source=normalization_source,
        data_spacing=median,  # type: ignore[arg-type]
        pretraining_spacing=pretrained.spacing if pretrained is not None else None,
        warnings=warnings,
    )
