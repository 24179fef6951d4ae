"""Checkpoints in the published key layouts, with random weights (nothing is downloaded).

Shared by the weight tests and the bad-input corpus (``tests/reliability/corpus_checkpoint.py``,
``from tests.models.weight_layouts import ...``): Swin UNETR self-supervised (``model_swinvit.pt``),
MedicalNet (``resnet_N.pth``), nnU-Net v2 (``checkpoint_final.pth`` of a PlainConvUNet or
ResidualEncoderUNet, with its plans) and nnssl (``checkpoint_final.pth`` with its
``nnssl_adaptation_plan`` and ``adaptation_plan.json``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def swin_ssl_checkpoint(path: Path, net: torch.nn.Module) -> Path:
    """``model_swinvit.pt``: the Swin transformer as ``module.…`` with timm MLP names."""
    state = {}
    for key, value in net.state_dict().items():
        if key.startswith("swinViT."):
            key = key.removeprefix("swinViT.")
            key = key.replace(".mlp.linear1.", ".mlp.fc1.").replace(".mlp.linear2.", ".mlp.fc2.")
            state[f"module.{key}"] = value.clone()
    torch.save({"state_dict": state}, path)
    return path


def medicalnet_checkpoint(path: Path, net: torch.nn.Module) -> Path:
    """``resnet_10.pth``: ``{"state_dict": {"module.conv1.weight", "module.layer1.0…"}}``."""
    state = {
        "module." + k.removeprefix("encoder."): v.clone()
        for k, v in net.state_dict().items()
        if k.startswith("encoder.")
    }
    torch.save({"state_dict": state}, path)
    return path


#: nnU-Net's network classes as its plans name them.
_DNA_CLASSES = {
    "PlainConvUNet": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "ResidualEncoderUNet": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
}


def nnunet_plans(
    n_stages: int,
    strides: list | None = None,
    network: str = "PlainConvUNet",
    features: list[int] | None = None,
) -> dict:
    """nnU-Net v2 plans (≥ 2.4 layout) of a 3-D ``PlainConvUNet`` or ``ResidualEncoderUNet``.

    The ResidualEncoderUNet's as nnU-Net's ResEnc planners write them: residual blocks
    (1, 3, 4, 6, 6, 6, …) per stage and one convolution per decoder stage.
    """
    kwargs = {
        "n_stages": n_stages,
        "features_per_stage": features or [min(320, 32 * 2**s) for s in range(n_stages)],
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * n_stages,
        "strides": strides or [[1, 1, 1]] + [[2, 2, 2]] * (n_stages - 1),
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    if network == "ResidualEncoderUNet":
        kwargs["n_blocks_per_stage"] = [1, 3, 4, 6, 6, 6, 6, 6][:n_stages]
        kwargs["n_conv_per_stage_decoder"] = [1] * (n_stages - 1)
    else:
        kwargs["n_conv_per_stage"] = [2] * n_stages
        kwargs["n_conv_per_stage_decoder"] = [2] * (n_stages - 1)
    return {
        "plans_name": "nnUNetPlans" if network == "PlainConvUNet" else "nnUNetResEncUNetLPlans",
        "configurations": {
            "3d_fullres": {
                "patch_size": [32, 32, 32],
                "architecture": {
                    "network_class_name": _DNA_CLASSES.get(network, network),
                    "arch_kwargs": kwargs,
                    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
                },
            },
            "3d_cascade_fullres": {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"},
        },
    }


def nnunet_checkpoint(
    path: Path, net: torch.nn.Module, seed: int = 0, plans: dict | None | bool = True
) -> Path:
    """``checkpoint_final.pth`` of nnU-Net v2, with its aliases, extra heads and numpy logs.

    ``net`` is a network medtl builds with dynamic-network-architectures (``plainconvunet``
    or ``resencunet``): its state dict is the one nnU-Net saves, DNA's alias keys
    (``all_modules.*``, ``decoder.encoder.*``) and one segmentation layer per decoder
    stage included; ``seed`` re-draws the deep-supervision layers. ``plans``: True stores
    plans matching ``net`` in ``init_args`` (as nnU-Net does), a dict stores that dict,
    None leaves them out.
    """
    torch.manual_seed(seed)
    weights = dict(net.state_dict())  # shares storage between aliases, as nnU-Net's file does
    n_stages = len(net.encoder.stages)
    for s in range(n_stages - 2):  # deep-supervision heads: trained by nnU-Net, unused here
        for part in ("weight", "bias"):
            key = f"decoder.seg_layers.{s}.{part}"
            weights[key] = torch.randn_like(weights[key])
    if plans is True:
        features = [int(f) for f in net.encoder.output_channels]
        plans = nnunet_plans(n_stages, network=type(net).__name__, features=features)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.99, nesterov=True)
    torch.save(
        {
            "network_weights": weights,
            "optimizer_state": optimizer.state_dict(),
            "grad_scaler_state": None,
            "logging": {
                "mean_fg_dice": [np.float64(0.5), np.float64(0.61)],
                "ema_fg_dice": [np.float64(0.5), np.float64(0.51)],
                "dice_per_class_or_region": [[np.float64(0.5)], [np.float64(0.61)]],
                "train_losses": [np.float32(-0.2), np.float32(-0.4)],
                "epoch_start_timestamps": [1.0, 2.0],
            },
            "_best_ema": np.float64(0.51),
            "current_epoch": 2,
            "init_args": {
                **({"plans": plans} if plans is not None else {}),
                "configuration": "3d_fullres",
                "fold": 0,
                "dataset_json": {"labels": {"background": 0, "organ": 1}},
                "device": torch.device("cpu"),
            },
            "trainer_name": "nnUNetTrainer",
            "inference_allowed_mirroring_axes": (0, 1, 2),
        },
        path,
    )
    return path


# nnssl (OpenMind) checkpoints: what nnssl's BaseMAETrainer.save_checkpoint writes, after
# utilities/add_adaptation_plan.py popped the optimiser, grad scaler, logging, _best_ema
# and current_epoch, and converted numpy values (AbstractBaseTrainer._convert_numpy).

#: The keys of nnssl's serialised ConfigurationPlan, as the OpenMind MAE pretraining set them.
_NNSSL_CONFIGURATION = {
    "data_identifier": "nnsslPlans_onemmiso",
    "preprocessor_name": "DefaultPreprocessor",
    "spacing_style": "onemmiso",
    "normalization_schemes": ["ZScoreNormalization"],
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
    "spacing": [1, 1, 1],
    "patch_size": (160, 160, 160),
}


def nnssl_pretrain_plan() -> dict:
    """nnssl's serialised ``Plan`` with its one configuration (``onemmiso``)."""
    return {
        "dataset_name": "Dataset001_OpenMind",
        "plans_name": "nnsslPlans",
        "original_median_spacing_after_transp": [1, 1, 1],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {"onemmiso": dict(_NNSSL_CONFIGURATION)},
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


def nnssl_adaptation_plan(arch: str = "ResEncL", arch_kwargs: dict | None = None) -> dict:
    """``AdaptationPlan.serialize()`` as nnssl's MAE trainers write it.

    ``ResEncL`` is a preset (``arch_kwargs`` None); a ``ResidualEncoderUNet`` carries its
    keyword arguments and the names of those that need an import.
    """
    return {
        "architecture_plans": {
            "arch_class_name": arch,
            "arch_kwargs": arch_kwargs,
            "arch_kwargs_requiring_import": ["conv_op", "norm_op", "nonlin"]
            if arch_kwargs
            else None,
        },
        "pretrain_plan": nnssl_pretrain_plan(),
        "pretrain_num_input_channels": 1,
        "recommended_downstream_patchsize": (160, 160, 160),
        "key_to_encoder": "encoder.stages",
        "key_to_stem": "encoder.stem",
        "keys_to_in_proj": ("encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0"),
        "key_to_lpe": None,
    }


def nnssl_primus_plan(arch: str = "PrimusM", patch: tuple[int, ...] = (160, 160, 160)) -> dict:
    """``AdaptationPlan.serialize()`` as nnssl's BaseEvaMAETrainer writes it: a preset with
    no ``arch_kwargs``, the Primus's keys, and the pretraining patch it fixes (160³)."""
    plan = nnssl_adaptation_plan(arch)
    plan["pretrain_plan"]["configurations"]["onemmiso"]["patch_size"] = patch
    plan.update(
        key_to_encoder="eva",
        key_to_stem="down_projection",
        keys_to_in_proj=("down_projection.proj",),
        key_to_lpe="eva.pos_embed",
    )
    return plan


class EvaMAELayout(torch.nn.Module):
    """The names nnssl's ``EvaMAE`` (the Primus MAE pretraining network) saves: the
    Primus encoder (``down_projection``, ``eva``), its 1-channel ``up_projection``, a
    2-block ``decoder`` transformer and the ``mask_token`` parameter."""

    def __init__(self, embed_dim: int, depth: int, heads: int, patch=(160, 160, 160)) -> None:
        from medtl.models.primus import Eva, PatchDecode, PatchEmbed, PrimusSize

        super().__init__()
        grid = tuple(p // 8 for p in patch)
        self.down_projection = PatchEmbed((8, 8, 8), 1, embed_dim)
        self.eva = Eva(PrimusSize(embed_dim, depth, heads), grid)
        self.up_projection = PatchDecode((8, 8, 8), embed_dim, 1)
        self.decoder = Eva(PrimusSize(embed_dim, 2, heads), grid)
        self.mask_token = torch.nn.Parameter(torch.zeros(1, 1, embed_dim))


def nnssl_checkpoint_dict(
    net: torch.nn.Module, plan: dict | None, trainer: str = "BaseMAETrainer_BS8_1000ep"
) -> dict:
    """The published ``checkpoint_final.pth`` as a dict: exactly ``network_weights``,
    ``init_args``, ``trainer_name`` and (unless ``plan`` is None) ``nnssl_adaptation_plan``.

    ``net`` is the pretraining network (a ResEnc with a 1-channel reconstruction head):
    its state dict with DNA's aliases, as nnssl saves it.
    """
    out = {
        "network_weights": dict(net.state_dict()),
        "init_args": {
            "plan": nnssl_pretrain_plan(),
            "configuration_name": "onemmiso",
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
    trainer: str = "BaseMAETrainer_BS8_1000ep",
) -> Path:
    """``folder/checkpoint_final.pth`` and ``folder/adaptation_plan.json`` as nnssl
    publishes them: the plan in the file (``inside``) and beside it (``beside``, with
    ``trainer_name`` added, as add_adaptation_plan.py writes it)."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = nnssl_checkpoint_dict(net, plan if inside else None, trainer)
    path = folder / "checkpoint_final.pth"
    torch.save(checkpoint, path)
    if beside:
        text = json.dumps({**plan, "trainer_name": checkpoint["trainer_name"]}, indent=4)
        (folder / "adaptation_plan.json").write_text(text)
    return path
