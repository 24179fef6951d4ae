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

# nnssl (OpenMind) checkpoints: one writer, in benchmarks/ (make bench-transfer writes one
# from medtl's pretraining); the tests use it with random weights.
from nnssl_checkpoint import (  # noqa: F401  (re-exported for the tests)
    nnssl_adaptation_plan,
    nnssl_checkpoint,
    nnssl_checkpoint_dict,
    nnssl_configuration,
    nnssl_pretrain_plan,
    nnssl_resenc_kwargs,
)


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


def nnssl_primus_plan(arch: str = "PrimusM", patch: tuple[int, ...] = (160, 160, 160)) -> dict:
    """``AdaptationPlan.serialize()`` as nnssl's BaseEvaMAETrainer writes it: a preset with
    no ``arch_kwargs``, the Primus's keys, and the pretraining patch it fixes (160³)."""
    plan = nnssl_adaptation_plan(arch)
    plan["pretrain_plan"] = nnssl_pretrain_plan(nnssl_configuration(patch_size=patch))
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
