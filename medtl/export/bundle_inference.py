"""The MONAI bundle's ``configs/inference.json``: network, preprocessing, inferer, run.

MONAI components and config expressions only, so the bundle runs where only MONAI (with
nibabel) is installed; how closely they follow medtl's preprocessing is said in
:mod:`medtl.export.bundle`.
"""

from __future__ import annotations

from typing import Any

from medtl.config import ModelConfig, PredictConfig
from medtl.kernel.errors import MedtlError
from medtl.preprocess.plan import Plan

#: Architectures the export can write as a MONAI ``network_def``.
SUPPORTED_ARCHITECTURES = ("basicunet", "flexibleunet", "swinunetr")

#: Swin UNETR's feature_size when ``model.features`` is left at its default (as medtl builds it).
_SWINUNETR_DEFAULT_FEATURE_SIZE = 48

#: Per channel: the non-zero voxels (all voxels when none), as medtl's zscore uses them.
_ZSCORE_VALUES = "$lambda c: c[c != 0] if bool((c != 0).any()) else c.reshape(-1)"

#: medtl's ``zscore``: every voxel of each channel minus the mean of the channel's non-zero
#: voxels, divided by their standard deviation (population, floored at 1e-8).
_ZSCORE = (
    "$lambda x: (x - torch.tensor([float(@zscore_values(c).mean()) for c in x])"
    ".reshape(-1, 1, 1, 1)) / torch.tensor([max(float(@zscore_values(c).std(unbiased=False)), "
    "1e-8) for c in x]).reshape(-1, 1, 1, 1)"
)


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
            "postprocessing": _postprocessing(),
            **_running(),
        }
    )
    return config


def _postprocessing() -> dict[str, Any]:
    """Softmax, probabilities back to the original grid, argmax there, save.

    medtl's order: the probabilities are resampled, then the argmax is taken on the
    original grid (:func:`medtl.preprocess.case.restore_labels`).
    """
    return {
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
    }


def _running() -> dict[str, Any]:
    """How the bundle runs: MONAI's evaluator (``run``, needs ignite) or a plain loop."""
    return {
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
