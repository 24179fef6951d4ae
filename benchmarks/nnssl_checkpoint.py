"""nnssl (OpenMind) checkpoints in the published layout, written from a network's weights.

nnssl, the nnU-Net group's self-supervised pretraining framework, publishes a pretrained
encoder as ``checkpoint_final.pth`` (what its ``BaseMAETrainer.save_checkpoint`` writes,
after ``utilities/add_adaptation_plan.py`` popped the optimiser, grad scaler, logging,
``_best_ema`` and ``current_epoch`` and converted numpy values) with an
``adaptation_plan.json`` beside it. No real OpenMind weights can be downloaded here, so
``make bench-transfer`` writes such a file itself from medtl's supervised pretraining
(:func:`write_from_medtl`), and the tests write tiny ones with random weights
(``tests/models/weight_layouts.py`` imports this module): one writer for both.

Hand-written because nnssl is not installable beside medtl (it pins its own torch and
nnU-Net fork); the layout follows nnssl's ``AdaptationPlan.serialize`` and
``DynamicArchitecturePlans.serialize`` field for field.

Example:
    >>> plan = nnssl_adaptation_plan("ResidualEncoderUNet", nnssl_resenc_kwargs([4, 8]))
    >>> plan["architecture_plans"]["arch_kwargs"]["strides"]
    [[1, 1, 1], [2, 2, 2]]
    >>> sorted(nnssl_pretrain_plan()["configurations"])
    ['onemmiso']
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

#: The trainer nnssl's OpenMind MAE checkpoints name.
MAE_TRAINER = "BaseMAETrainer_BS8_1000ep"
#: medtl's normalisation schemes under nnssl's (nnU-Net's) class names.
NNSSL_SCHEMES = {"zscore": "ZScoreNormalization", "ct": "CTNormalization"}


def nnssl_configuration(
    spacing: Sequence[float] = (1, 1, 1),
    patch_size: Sequence[int] = (160, 160, 160),
    normalization: str = "ZScoreNormalization",
    spacing_style: str = "onemmiso",
) -> dict[str, Any]:
    """nnssl's serialised ``ConfigurationPlan`` (defaults: the OpenMind MAE pretraining).

    ``spacing`` and ``patch_size`` are in nnssl's array order (z, y, x).
    """
    return {
        "data_identifier": f"nnsslPlans_{spacing_style}",
        "preprocessor_name": "DefaultPreprocessor",
        "spacing_style": spacing_style,
        "normalization_schemes": [normalization],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {
            "is_seg": False,
            "order": 3,
            "order_z": 0,
            "force_separate_z": None,
        },
        "resampling_fn_mask": "resample_data_or_seg_to_shape",
        "resampling_fn_mask_kwargs": {
            "is_seg": False,
            "order": 1,
            "order_z": 0,
            "force_separate_z": None,
        },
        "spacing": [float(s) if s % 1 else int(s) for s in spacing],
        "patch_size": tuple(int(p) for p in patch_size),
    }


def nnssl_pretrain_plan(
    configuration: dict[str, Any] | None = None, dataset: str = "Dataset001_OpenMind"
) -> dict[str, Any]:
    """nnssl's serialised ``Plan`` with its one configuration (default ``onemmiso``)."""
    config = configuration or nnssl_configuration()
    return {
        "dataset_name": dataset,
        "plans_name": "nnsslPlans",
        "original_median_spacing_after_transp": list(config["spacing"]),
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {config["spacing_style"]: config},
        "experiment_planner_used": "FixedResEncUNetPlanner",
    }


def nnssl_resenc_kwargs(features: list[int], blocks: list[int] | None = None) -> dict:
    """``DynamicArchitecturePlans.serialize()`` of a 3-D ResidualEncoderUNet."""
    n = len(features)
    return {
        "n_stages": n,
        "features_per_stage": list(features),
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * n,
        "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
        "n_blocks_per_stage": blocks or [1, 3, 4, 6, 6, 6, 6][:n],
        "n_conv_per_stage_decoder": [1] * (n - 1),
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.modules.activation.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }


def nnssl_adaptation_plan(
    arch: str = "ResEncL",
    arch_kwargs: dict | None = None,
    pretrain_plan: dict | None = None,
    in_channels: int = 1,
) -> dict:
    """``AdaptationPlan.serialize()`` as nnssl's MAE trainers write it.

    ``ResEncL`` is a preset (``arch_kwargs`` None); a ``ResidualEncoderUNet`` carries its
    keyword arguments and the names of those that need an import. The recommended
    downstream patch is the pretraining patch.
    """
    plan = pretrain_plan or nnssl_pretrain_plan()
    patch = next(iter(plan["configurations"].values()))["patch_size"]
    return {
        "architecture_plans": {
            "arch_class_name": arch,
            "arch_kwargs": arch_kwargs,
            "arch_kwargs_requiring_import": ["conv_op", "norm_op", "nonlin"]
            if arch_kwargs
            else None,
        },
        "pretrain_plan": plan,
        "pretrain_num_input_channels": in_channels,
        "recommended_downstream_patchsize": tuple(patch),
        "key_to_encoder": "encoder.stages",
        "key_to_stem": "encoder.stem",
        "keys_to_in_proj": ("encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0"),
        "key_to_lpe": None,
    }


def nnssl_checkpoint_dict(
    net: torch.nn.Module, plan: dict | None, trainer: str = MAE_TRAINER
) -> dict:
    """The published ``checkpoint_final.pth`` as a dict: exactly ``network_weights``,
    ``init_args``, ``trainer_name`` and (unless ``plan`` is None) ``nnssl_adaptation_plan``.

    ``net`` is the pretraining network (nnssl's: a ResEnc with a 1-channel reconstruction
    head): its state dict with DNA's aliases, as nnssl saves it.
    """
    pretrain = plan["pretrain_plan"] if plan is not None else nnssl_pretrain_plan()
    out = {
        "network_weights": dict(net.state_dict()),
        "init_args": {
            "plan": pretrain,
            "configuration_name": next(iter(pretrain["configurations"])),
            "fold": 0,
            "pretrain_json": {"collection_name": "OpenMind", "collection_index": 1},
            "device": torch.device("cuda"),
        },
        "trainer_name": trainer,
    }
    if plan is not None:
        out["nnssl_adaptation_plan"] = plan
    return out


def nnssl_checkpoint(
    folder: Path,
    net: torch.nn.Module,
    plan: dict,
    inside: bool = True,
    beside: bool = True,
    trainer: str = MAE_TRAINER,
) -> Path:
    """``folder/checkpoint_final.pth`` and ``folder/adaptation_plan.json`` as nnssl
    publishes them: the plan in the file (``inside``) and beside it (``beside``, with
    ``trainer_name`` added, as add_adaptation_plan.py writes it)."""
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = nnssl_checkpoint_dict(net, plan if inside else None, trainer)
    path = folder / "checkpoint_final.pth"
    torch.save(checkpoint, path)
    if beside:
        text = json.dumps({**plan, "trainer_name": checkpoint["trainer_name"]}, indent=4)
        (folder / "adaptation_plan.json").write_text(text)
    return path


def write_from_medtl(checkpoint: Path, plan_json: Path, folder: Path) -> Path:
    """An nnssl checkpoint of a medtl ``resencunet`` checkpoint's network.

    The medtl checkpoint (``medtl pretrain``'s ``checkpoint.pt``: canonical DNA names,
    each tensor once) is loaded into the ``ResidualEncoderUNet`` it was trained as, so
    that its state dict carries DNA's alias names as nnssl's files do. The pretraining
    plan says what medtl's ``plan.json`` says: spacing and normalisation, and the
    pretraining patch, each in nnssl's (z, y, x) order. The whole network is written
    (nnssl's files hold the MAE decoder too); medtl loads only the stem and the encoder.

    Raises:
        ValueError: the checkpoint is not a medtl ``resencunet``.
    """
    from medtl.models.nnunet_networks import complete_state, resenc_blocks, residual_encoder_unet

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model = ckpt.get("model", {})
    if ckpt.get("format") != "medtl" or model.get("name") != "resencunet":
        raise ValueError(
            f"{checkpoint}: expected a medtl checkpoint of model.name resencunet, found "
            f"format {ckpt.get('format')!r}, model {model.get('name')!r}"
        )
    features = [int(f) for f in model["features"]]
    net = residual_encoder_unet(int(ckpt["in_channels"]), int(ckpt["num_classes"]), features)
    state, _ = complete_state(net, ckpt["state_dict"])
    net.load_state_dict(state)
    medtl_plan = json.loads(Path(plan_json).read_text())
    config = nnssl_configuration(
        spacing=list(reversed(medtl_plan["target_spacing"])),
        patch_size=list(reversed(ckpt["patch_size"])),
        normalization=NNSSL_SCHEMES.get(medtl_plan["normalization"], medtl_plan["normalization"]),
        spacing_style="median",
    )
    kwargs = nnssl_resenc_kwargs(features, list(resenc_blocks(len(features))))
    plan = nnssl_adaptation_plan(
        "ResidualEncoderUNet",
        kwargs,
        nnssl_pretrain_plan(config, dataset="Dataset500_medtlsource"),
        in_channels=int(ckpt["in_channels"]),
    )
    return nnssl_checkpoint(folder, net, plan, trainer="medtlSupervisedPretraining")
