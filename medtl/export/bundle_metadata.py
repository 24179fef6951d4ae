"""The MONAI bundle's ``configs/metadata.json`` and ``docs/README.md``.

What the bundle holds (versions, task, input and output format, medtl's provenance of
the model) and, for people, how to run it and how it differs from ``medtl predict``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import monai
import numpy
import torch

from medtl import __version__
from medtl.preprocess.plan import Plan

#: The version written into the bundle's ``metadata.json`` (the bundle format, not medtl).
BUNDLE_VERSION = "0.1.0"


def _input_value_range(plan: Plan) -> list[float]:
    """The network input's value range: bounded for ``ct``, unbounded (empty) for ``zscore``."""
    if plan.normalization != "ct":
        return []
    std = max(float(plan.intensity["std"]), 1e-8)
    mean = float(plan.intensity["mean"])
    return [(plan.intensity["p005"] - mean) / std, (plan.intensity["p995"] - mean) / std]


def _version(package: str) -> str:
    try:
        return importlib_metadata.version(package)
    except importlib_metadata.PackageNotFoundError:
        return "not installed"


def _source_medtl_version(fold_dir: Path) -> str:
    """The medtl version that trained the fold, from its ``run.json`` (``unknown`` without)."""
    record = fold_dir / "run.json"
    if record.is_file():
        try:
            return str(json.loads(record.read_text())["versions"]["medtl"])
        except (ValueError, KeyError, TypeError):
            pass
    return "unknown"


def metadata_config(
    plan: Plan,
    payload: dict[str, Any],
    arm: str,
    fold: int,
    n_folds: int,
    fold_dir: Path,
    checkpoint_sha256: str,
) -> dict[str, Any]:
    """The bundle's ``configs/metadata.json`` as a dict."""
    classes = plan.class_map
    num_classes = int(payload["num_classes"])
    channel_def = {"0": "background"}
    channel_def.update({str(k): classes.get(k, f"class {k}") for k in range(1, num_classes)})
    in_channels = int(payload.get("in_channels", 1))
    patch = [int(p) for p in payload["patch_size"]]
    names = ", ".join(channel_def[str(k)] for k in range(1, num_classes))
    if n_folds > 1:
        ensemble = (
            f"This bundle holds the model of fold {fold}; 'medtl predict' averages the "
            f"{n_folds} fold models of the arm, so its masks can differ."
        )
    else:
        ensemble = f"This bundle holds the arm's only model (fold {fold})."
    return {
        "version": BUNDLE_VERSION,
        "changelog": {
            BUNDLE_VERSION: f"exported by medtl {__version__} from arm {arm!r}, fold {fold}"
        },
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__,
        "numpy_version": numpy.__version__,
        "required_packages_version": {"nibabel": _version("nibabel")},
        "name": f"medtl {arm} segmentation",
        "task": f"{plan.modality} segmentation of {names}",
        "description": (
            f"3-D segmentation of {names} in {plan.modality} images, trained with medtl "
            f"(arm {arm!r}). {ensemble} Inference reproduces medtl's preprocessing with "
            "MONAI transforms (see docs/README.md for the remaining differences)."
        ),
        "authors": "exported by medtl export-bundle; fill in the people who trained the model",
        "copyright": "Copyright (c) the authors of the trained model",
        "intended_use": "research use only; not for clinical decisions",
        "data_type": "nibabel",
        "image_classes": f"{in_channels} channel(s) {plan.modality} image, NIfTI",
        "label_classes": ", ".join(f"{k}: {v}" for k, v in channel_def.items()),
        "pred_classes": ", ".join(f"{k}: {v}" for k, v in channel_def.items()),
        "eval_metrics": {"val_mean_dice": payload.get("val_dice")},
        "network_data_format": _network_data_format(
            plan, in_channels, num_classes, patch, channel_def
        ),
        "medtl": {
            "arm": arm,
            "fold": fold,
            "folds_in_run": n_folds,
            "ensemble": False,
            "model": payload["model"],
            "patch_size": patch,
            "plan": asdict(plan),
            "checkpoint_sha256": checkpoint_sha256,
            "checkpoint_step": payload.get("step"),
            "trained_with_medtl": _source_medtl_version(fold_dir),
            "exported_with_medtl": __version__,
        },
    }


def _network_data_format(
    plan: Plan, in_channels: int, num_classes: int, patch: list[int], channel_def: dict[str, str]
) -> dict[str, Any]:
    """The network's input image and output probabilities, as the bundle format says."""
    return {
        "inputs": {
            "image": {
                "type": "image",
                "format": "hounsfield" if plan.normalization == "ct" else "magnitude",
                "modality": plan.modality,
                "num_channels": in_channels,
                "spatial_shape": patch,
                "dtype": "float32",
                "value_range": _input_value_range(plan),
                "is_patch_data": True,
                "channel_def": {str(c): f"channel {c}" for c in range(in_channels)},
            }
        },
        "outputs": {
            "pred": {
                "type": "image",
                "format": "segmentation",
                "num_channels": num_classes,
                "spatial_shape": patch,
                "dtype": "float32",
                "value_range": [0, 1],
                "is_patch_data": True,
                "channel_def": channel_def,
            }
        },
    }


#: The README's section on running the bundle (the same for every bundle).
_README_RUNNING = """\
## Running

Put the NIfTI images (`*.nii.gz`) in one folder, then, from the bundle's folder:

```bash
python -m monai.bundle run --config_file configs/inference.json \\
    --bundle_root . --dataset_dir /path/to/images --output_dir /path/to/masks
```

or in Python:

```python
from monai.bundle import run
run(config_file="configs/inference.json", bundle_root=".",
    dataset_dir="/path/to/images", output_dir="/path/to/masks")
```

Each image `<name>.nii.gz` gives `<name>_seg.nii.gz`, a label map on the image's own grid.
`run` uses MONAI's `SupervisedEvaluator`, which needs pytorch-ignite
(`pip install "monai[ignite,nibabel]"`; the command line also needs `fire`). Without
ignite, run the same inference with `run_id="run_without_ignite"`.

"""


def readme(plan: Plan, meta: dict[str, Any], config: dict[str, Any]) -> str:
    """``docs/README.md``: what the bundle is, how to run it, how it differs from medtl."""
    m = meta["medtl"]
    channels = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    classes = "\n".join(f"| {k} | {v} |" for k, v in channels.items())
    norm = (
        "clip to the data set's 0.5-99.5 foreground percentiles, then z-score with its "
        "foreground mean and sd (`ScaleIntensityRanged`)"
        if plan.normalization == "ct"
        else "per image and channel, z-score every voxel with the mean and sd of the "
        "non-zero voxels (a `Lambdad` config expression)"
    )
    crop = (
        "crop to the non-zero bounding box (`CropForegroundd`, margin 0)"
        if plan.crop_foreground
        else "no cropping"
    )
    spacing = ", ".join(f"{s:g}" for s in plan.target_spacing)
    empty = (
        "* An image without any non-zero voxel is not supported (its crop would be empty).\n"
        if plan.crop_foreground
        else ""
    )
    return f"""# {meta["name"]}

{meta["description"]}

Exported by medtl {m["exported_with_medtl"]} from arm `{m["arm"]}`, fold {m["fold"]} of \
{m["folds_in_run"]} (checkpoint sha256 `{m["checkpoint_sha256"][:16]}...`, trained with medtl \
version {m["trained_with_medtl"]}).

## Classes

| channel | class |
| --- | --- |
{classes}

{_README_RUNNING}## Processing

1. load the NIfTI image (`NibabelReader`), channel first;
2. reorient to RAS (`Orientationd`);
3. {crop};
4. resample to {spacing} mm (`Spacingd`, bilinear);
5. normalise: {norm};
6. sliding-window inference, patch {m["patch_size"]}, overlap \
{config["inferer"]["overlap"]}, {config["inferer"]["mode"]} weighting;
7. softmax, resample the probabilities back to the original grid (`Invertd`), argmax, save.

## Differences from `medtl predict`

* **One fold, not the ensemble.** A plain bundle holds one network; this is fold \
{m["fold"]}. `medtl predict` averages the probabilities of all fold models of the arm \
({m["folds_in_run"]} in the exported run).
* **Resampling.** `Spacingd` resamples to exactly the plan's spacing; medtl maps the cropped \
extent onto the same (rounded) grid with torch's trilinear interpolation, so its spacing \
differs from the plan's by the rounding (at most half a voxel over the cropped extent). The \
grid's shape and first voxel agree; the shift changes some voxels at the masks' borders. \
Images whose voxels already have the plan's spacing are segmented exactly as by medtl.
{empty}
## Intended use

{meta["intended_use"]}.
"""
