"""Write a trained medtl arm as a MONAI bundle.

A MONAI bundle is a folder that MONAI's own tools (``monai.bundle``, MONAI Deploy,
MONAI Label) load and run without medtl::

    <bundle>/
        configs/metadata.json    versions, task, input/output format, medtl provenance
        configs/inference.json   network, preprocessing, inferer, postprocessing, run
        configs/logging.conf     console logging, as in MONAI model-zoo bundles
        models/model.pt          the network's plain state dict
        docs/README.md           what the bundle does and how to run it

The inference config uses MONAI components and config expressions only, so it runs
where only MONAI (with nibabel) is installed. It follows medtl's preprocessing
(:mod:`medtl.preprocess.case`) as closely as MONAI's transforms allow:

* reorientation to RAS, cropping to the non-zero bounding box and intensity
  normalisation are exact (the ``zscore`` normalisation is a config expression,
  because MONAI's ``NormalizeIntensityd(nonzero=True)`` leaves zero voxels at zero where
  medtl shifts them too);
* resampling is ``Spacingd`` with ``scale_extent=True``: the same output grid shape and
  first voxel as medtl, but exactly the plan's spacing where medtl stretches the
  cropped extent onto the rounded grid (a sub-voxel difference; masks are not
  bit-identical to ``medtl predict``).

A plain bundle holds one network, so the bundle carries one fold's model (fold 0 by
default); ``medtl predict`` averages all folds of the arm. An ensemble would need code
beyond MONAI's components, which the bundle is meant to avoid.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import asdict
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import monai
import numpy
import torch

from medtl import __version__
from medtl.config import ModelConfig, PredictConfig, parse_section
from medtl.io.outputs import check_separate
from medtl.kernel.errors import InputError, MedtlError
from medtl.layout import trained_runs
from medtl.models.safe_read import WeightsFileError, safe_load
from medtl.preprocess.plan import Plan

#: Architectures the export can write as a MONAI ``network_def``.
SUPPORTED_ARCHITECTURES = ("basicunet", "flexibleunet", "swinunetr")

#: Swin UNETR's feature_size when ``model.features`` is left at its default (as medtl builds it).
_SWINUNETR_DEFAULT_FEATURE_SIZE = 48

#: The version written into the bundle's ``metadata.json`` (the bundle format, not medtl).
BUNDLE_VERSION = "0.1.0"

#: Per channel: the non-zero voxels (all voxels when none), as medtl's zscore uses them.
_ZSCORE_VALUES = "$lambda c: c[c != 0] if bool((c != 0).any()) else c.reshape(-1)"

#: medtl's ``zscore``: every voxel of each channel minus the mean of the channel's non-zero
#: voxels, divided by their standard deviation (population, floored at 1e-8).
_ZSCORE = (
    "$lambda x: (x - torch.tensor([float(@zscore_values(c).mean()) for c in x])"
    ".reshape(-1, 1, 1, 1)) / torch.tensor([max(float(@zscore_values(c).std(unbiased=False)), "
    "1e-8) for c in x]).reshape(-1, 1, 1, 1)"
)

_LOGGING_CONF = """\
[loggers]
keys=root

[handlers]
keys=consoleHandler

[formatters]
keys=fullFormatter

[logger_root]
level=INFO
handlers=consoleHandler

[handler_consoleHandler]
class=StreamHandler
level=INFO
formatter=fullFormatter
args=(sys.stdout,)

[formatter_fullFormatter]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""


class BundleExportError(MedtlError):
    """A trained model that cannot be written as a MONAI bundle, or a refused output folder."""


def network_definition(cfg: ModelConfig, in_channels: int, out_channels: int) -> dict[str, Any]:
    """The bundle's ``network_def``: the MONAI class and the exact arguments medtl built it with.

    Mirrors :mod:`medtl.models.networks`; the export checks the result by loading the
    checkpoint's state dict into it strictly. Architectures that are not MONAI classes
    (medtl's own) cannot be written without medtl code and are refused.

    Example:
        >>> network_definition(ModelConfig(features=(4, 4, 8, 8, 16, 4)), 1, 2)["_target_"]
        'monai.networks.nets.BasicUNet'
    """
    if cfg.name == "basicunet":
        return {
            "_target_": "monai.networks.nets.BasicUNet",
            "spatial_dims": 3,
            "in_channels": in_channels,
            "out_channels": out_channels,
            "features": [int(f) for f in cfg.features],
            "dropout": float(cfg.dropout),
        }
    if cfg.name == "flexibleunet":
        return {
            "_target_": "monai.networks.nets.FlexibleUNet",
            "in_channels": in_channels,
            "out_channels": out_channels,
            "backbone": cfg.backbone,
            # Never True: MONAI would download ImageNet weights; ours come from model.pt.
            "pretrained": False,
            "spatial_dims": 3,
            "dropout": float(cfg.dropout),
        }
    if cfg.name == "swinunetr":
        default = tuple(cfg.features) == ModelConfig().features
        return {
            "_target_": "monai.networks.nets.SwinUNETR",
            "in_channels": in_channels,
            "out_channels": out_channels,
            "feature_size": _SWINUNETR_DEFAULT_FEATURE_SIZE if default else int(cfg.features[0]),
            "drop_rate": float(cfg.dropout),
            "spatial_dims": 3,
        }
    raise BundleExportError(
        f"model.name: expected one of {', '.join(SUPPORTED_ARCHITECTURES)} for a MONAI bundle "
        f"export, found {cfg.name!r}. How to fix: export an arm trained with a supported "
        "architecture, or add its MONAI constructor to medtl.export.bundle.network_definition"
    )


def _preprocessing(plan: Plan, in_channels: int) -> list[dict[str, Any]]:
    """MONAI dictionary transforms reproducing :func:`medtl.preprocess.case.preprocess_arrays`."""
    keys = "image"
    channel = {"channel_dim": -1} if in_channels > 1 else {}
    transforms: list[dict[str, Any]] = [
        {
            "_target_": "monai.transforms.LoadImaged",
            "keys": keys,
            "reader": "NibabelReader",
            "image_only": False,
            "dtype": "$numpy.float32",
        },
        {"_target_": "monai.transforms.EnsureChannelFirstd", "keys": keys, **channel},
        {
            "_target_": "monai.transforms.Orientationd",
            "keys": keys,
            "axcodes": "RAS",
            # Axis labels from the image's space (RAS for NIfTI), MONAI's coming default.
            "labels": None,
        },
    ]
    if plan.crop_foreground:
        transforms.append(
            {
                "_target_": "monai.transforms.CropForegroundd",
                "keys": keys,
                "source_key": keys,
                "select_fn": "$lambda x: x != 0",
                "margin": 0,
                "allow_smaller": True,
            }
        )
    transforms.append(
        {
            "_target_": "monai.transforms.Spacingd",
            "keys": keys,
            "pixdim": [float(s) for s in plan.target_spacing],
            "mode": "bilinear",
            "padding_mode": "border",
            # The output grid's shape from the field of view (medtl rounds n * s / t) and
            # its first voxel where medtl's torch interpolation puts it.
            "scale_extent": True,
            "align_corners": True,
            "dtype": "$numpy.float32",
        }
    )
    if plan.normalization == "ct":
        if in_channels != 1:
            raise BundleExportError(
                f"plan normalization 'ct' with {in_channels} input channels: expected one "
                "channel (medtl z-scores the extra channels per image, which the export does "
                "not express). How to fix: export a one-channel CT model"
            )
        lo, hi = float(plan.intensity["p005"]), float(plan.intensity["p995"])
        mean, std = float(plan.intensity["mean"]), max(float(plan.intensity["std"]), 1e-8)
        # Clip to [p005, p995] and map linearly: (x - mean) / std, exactly medtl's "ct".
        transforms.append(
            {
                "_target_": "monai.transforms.ScaleIntensityRanged",
                "keys": keys,
                "a_min": lo,
                "a_max": hi,
                "b_min": (lo - mean) / std,
                "b_max": (hi - mean) / std,
                "clip": True,
            }
        )
    elif plan.normalization == "zscore":
        transforms.append(
            {"_target_": "monai.transforms.Lambdad", "keys": keys, "func": "@zscore_normalize"}
        )
    else:
        raise BundleExportError(
            f"plan normalization: expected 'ct' or 'zscore', found {plan.normalization!r}. "
            "How to fix: re-run the plan stage with a supported normalization"
        )
    transforms.append(
        {"_target_": "monai.transforms.EnsureTyped", "keys": keys, "dtype": "$torch.float32"}
    )
    return transforms


def inference_config(plan: Plan, payload: dict[str, Any], cfg: ModelConfig) -> dict[str, Any]:
    """The bundle's ``configs/inference.json`` as a dict (MONAI components only).

    ``run`` is the model-zoo evaluator (``SupervisedEvaluator``, which needs
    pytorch-ignite); ``run_without_ignite`` does the same inference with a plain loop,
    for installations of MONAI without ignite.
    """
    in_channels = int(payload.get("in_channels", 1))
    num_classes = int(payload["num_classes"])
    predict = PredictConfig()
    config: dict[str, Any] = {
        "imports": ["$import collections", "$import glob"],
        "bundle_root": ".",
        "dataset_dir": "$@bundle_root + '/data'",
        "output_dir": "$@bundle_root + '/eval'",
        "datalist": "$list(sorted(glob.glob(@dataset_dir + '/*.nii.gz')))",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "num_workers": 0,
        "network_def": network_definition(cfg, in_channels, num_classes),
        "network": "$@network_def.to(@device)",
    }
    if plan.normalization == "zscore":
        config["zscore_values"] = _ZSCORE_VALUES
        config["zscore_normalize"] = _ZSCORE
    config.update(
        {
            "preprocessing": {
                "_target_": "monai.transforms.Compose",
                "transforms": _preprocessing(plan, in_channels),
            },
            "dataset": {
                "_target_": "monai.data.Dataset",
                "data": "$[{'image': i} for i in @datalist]",
                "transform": "@preprocessing",
            },
            "dataloader": {
                "_target_": "monai.data.DataLoader",
                "dataset": "@dataset",
                "batch_size": 1,
                "shuffle": False,
                "num_workers": "@num_workers",
            },
            "inferer": {
                "_target_": "monai.inferers.SlidingWindowInferer",
                "roi_size": [int(p) for p in payload["patch_size"]],
                "sw_batch_size": predict.sw_batch_size,
                "overlap": predict.overlap,
                "mode": predict.mode,
            },
            # medtl's order: probabilities are resampled back to the original grid, then
            # the argmax is taken there (medtl.preprocess.case.restore_labels).
            "postprocessing": {
                "_target_": "monai.transforms.Compose",
                "transforms": [
                    {"_target_": "monai.transforms.Activationsd", "keys": "pred", "softmax": True},
                    {
                        "_target_": "monai.transforms.Invertd",
                        "keys": "pred",
                        "transform": "@preprocessing",
                        "orig_keys": "image",
                        "meta_keys": "pred_meta_dict",
                        "orig_meta_keys": "image_meta_dict",
                        "nearest_interp": False,
                        "to_tensor": True,
                    },
                    {"_target_": "monai.transforms.AsDiscreted", "keys": "pred", "argmax": True},
                    {
                        "_target_": "monai.transforms.SaveImaged",
                        "keys": "pred",
                        "meta_keys": "pred_meta_dict",
                        "output_dir": "@output_dir",
                        "output_postfix": "seg",
                        "output_ext": ".nii.gz",
                        "output_dtype": "$numpy.uint8",
                        "resample": False,
                        "separate_folder": False,
                        "squeeze_end_dims": True,
                        "writer": "NibabelWriter",
                    },
                ],
            },
            "handlers": [
                {
                    "_target_": "monai.handlers.CheckpointLoader",
                    "load_path": "$@bundle_root + '/models/model.pt'",
                    "load_dict": {"model": "@network"},
                    "map_location": "@device",
                },
                {"_target_": "monai.handlers.StatsHandler", "iteration_log": False},
            ],
            "evaluator": {
                "_target_": "monai.engines.SupervisedEvaluator",
                "device": "@device",
                "val_data_loader": "@dataloader",
                "network": "@network",
                "inferer": "@inferer",
                "postprocessing": "@postprocessing",
                "val_handlers": "@handlers",
                "amp": False,
            },
            "initialize": ["$monai.utils.set_determinism(seed=0)"],
            "run": ["$@evaluator.run()"],
            "load_weights": (
                "$@network.load_state_dict(torch.load(@bundle_root + '/models/model.pt', "
                "map_location=@device, weights_only=True))"
            ),
            "run_without_ignite": [
                "$@load_weights",
                "$@network.eval()",
                # Segment and save each case; deque(..., maxlen=0) consumes without keeping.
                "$torch.no_grad()(lambda: collections.deque((@postprocessing({**d, 'pred': "
                "@inferer(d['image'][None].to(@device), @network)[0]}) for d in @dataset), "
                "maxlen=0))()",
            ],
        }
    )
    return config


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
    classes = {int(k): v for k, v in plan.classes.items()}
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
        "network_data_format": {
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
        },
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


def _readme(plan: Plan, meta: dict[str, Any], config: dict[str, Any]) -> str:
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

## Processing

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


def _fold_dir(results: Path, arm: str, fold: int | None) -> tuple[Path, int, int]:
    """The training run to export (fold ``fold`` of the arm's first seed), its fold
    number and how many folds the arm has."""
    runs = trained_runs(results, arm)
    if not runs:
        arms = sorted({r.arm for r in trained_runs(results)})
        raise InputError(
            results / "train" / arm,
            f"no trained models for arm {arm!r}"
            + (f" (arms found: {', '.join(arms)})" if arms else ""),
            "give the results folder of a finished run and an arm it trained",
        )
    first = [r for r in runs if r.seed == runs[0].seed]
    k = 0 if fold is None else int(fold)
    match = [r for r in first if r.fold == k]
    if not match:
        have = ", ".join(str(r.fold) for r in first)
        raise InputError(
            first[0].path.parent.parent / f"fold{k}" / "best.pt",
            f"arm {arm!r} has no trained model for fold {k} (folds found: {have})",
            "choose one of the folds found with --fold",
        )
    return match[0].path.parent, k, len(first)


def _load_payload(checkpoint: Path) -> dict[str, Any]:
    rerun = f"rerun the training job that writes it: snakemake --cores all --forcerun {checkpoint}"
    payload = safe_load(checkpoint, remake=rerun)
    if not isinstance(payload, dict) or payload.get("format") != "medtl":
        raise WeightsFileError(
            checkpoint,
            "is not a medtl model checkpoint; expected the best.pt written by the train stage",
            rerun,
        )
    return payload


def _check_network(network_def: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> None:
    """Build ``network_def`` as MONAI will and load the weights strictly into it."""
    from monai.bundle import ConfigParser

    net = ConfigParser({"network_def": network_def}).get_parsed_content("network_def")
    try:
        net.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise BundleExportError(
            f"network_def {network_def['_target_']}: expected it to take the checkpoint's "
            f"weights, found a mismatch ({str(e).splitlines()[0]}). How to fix: report this "
            "as a medtl bug (the export's network arguments differ from training's)"
        ) from e


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _refuse_existing(out: Path, overwrite: bool) -> None:
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise BundleExportError(
            f"{out}: expected a new output folder, found one that already exists. How to fix: "
            "choose another folder, or pass overwrite=True (--overwrite) to replace it"
        )


def export_bundle(
    results: Path, arm: str, out: Path, fold: int | None = None, overwrite: bool = False
) -> Path:
    """Write one fold of a trained arm as a MONAI bundle.

    The bundle (see the module docstring) runs with ``monai.bundle`` alone. It is built
    in a hidden folder beside ``out`` and renamed into place, so an interrupted export
    never leaves a folder that looks complete.

    Args:
        results: the results folder of a finished medtl run (holds ``preprocess/plan.json``
            and ``train/<arm>/fold<k>/best.pt``).
        arm: the trained arm to export, e.g. ``finetune``.
        out: the bundle folder to write.
        fold: the fold whose model goes into the bundle; fold 0 when None. A bundle holds
            one network, so the fold ensemble of ``medtl predict`` is not exported.
        overwrite: replace ``out`` if it exists (otherwise that is an error).

    Returns:
        The bundle folder, ``out``.

    Raises:
        InputError: the plan or the arm's checkpoint is missing.
        BundleExportError: the architecture or normalisation cannot be expressed, or
            ``out`` exists and ``overwrite`` is False.
    """
    results, out = Path(results), Path(out)
    check_separate(out, [results])
    plan = Plan.load(results / "preprocess" / "plan.json")
    fold_dir, k, n_folds = _fold_dir(results, arm, fold)
    checkpoint = fold_dir / "best.pt"
    payload = _load_payload(checkpoint)
    cfg = parse_section(ModelConfig, payload["model"], "model")
    config = inference_config(plan, payload, cfg)
    _check_network(config["network_def"], payload["state_dict"])
    meta = metadata_config(plan, payload, arm, k, n_folds, fold_dir, _sha256(checkpoint))
    _refuse_existing(out, overwrite)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        (tmp / "configs").mkdir()
        (tmp / "models").mkdir()
        (tmp / "docs").mkdir()
        (tmp / "configs" / "inference.json").write_text(json.dumps(config, indent=4) + "\n")
        (tmp / "configs" / "metadata.json").write_text(json.dumps(meta, indent=4) + "\n")
        (tmp / "configs" / "logging.conf").write_text(_LOGGING_CONF)
        state = {name: t.detach().cpu().contiguous() for name, t in payload["state_dict"].items()}
        torch.save(state, tmp / "models" / "model.pt")
        (tmp / "docs" / "README.md").write_text(_readme(plan, meta, config))
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; results are meant to be shared
        _refuse_existing(out, overwrite)  # again: another export may have finished meanwhile
        if out.exists() or out.is_symlink():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out, old)
            os.replace(tmp, out)
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink()
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out
