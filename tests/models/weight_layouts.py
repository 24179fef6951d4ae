"""Checkpoints in the published key layouts, with random weights (nothing is downloaded).

Shared by the weight tests and the bad-input corpus (``tests/reliability/corpus_checkpoint.py``,
``from tests.models.weight_layouts import ...``): Swin UNETR self-supervised (``model_swinvit.pt``),
MedicalNet (``resnet_N.pth``) and nnU-Net v2 (``checkpoint_final.pth``, with its plans).
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


def nnunet_plans(n_stages: int, strides: list | None = None) -> dict:
    """nnU-Net v2 plans (≥ 2.4 layout) of a 3-D PlainConvUNet with ``n_stages`` stages."""
    return {
        "plans_name": "nnUNetPlans",
        "configurations": {
            "3d_fullres": {
                "patch_size": [32, 32, 32],
                "architecture": {
                    "network_class_name": (
                        "dynamic_network_architectures.architectures.unet.PlainConvUNet"
                    ),
                    "arch_kwargs": {
                        "n_stages": n_stages,
                        "conv_op": "torch.nn.modules.conv.Conv3d",
                        "kernel_sizes": [[3, 3, 3]] * n_stages,
                        "strides": strides or [[1, 1, 1]] + [[2, 2, 2]] * (n_stages - 1),
                        "n_conv_per_stage": [2] * n_stages,
                        "n_conv_per_stage_decoder": [2] * (n_stages - 1),
                    },
                },
            },
            "3d_cascade_fullres": {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"},
        },
    }


def nnunet_checkpoint(
    path: Path, net: torch.nn.Module, seed: int = 0, plans: dict | None | bool = True
) -> Path:
    """``checkpoint_final.pth`` of nnU-Net v2, with its aliases, extra heads and numpy logs.

    ``plans``: True stores plans matching ``net`` in ``init_args`` (as nnU-Net does), a
    dict stores that dict, None leaves them out.
    """
    torch.manual_seed(seed)
    canonical = {k: v.clone() for k, v in net.state_dict().items()}
    n_stages = len(net.encoder.stages)
    weights: dict[str, torch.Tensor] = {}
    for key, value in canonical.items():
        if key.startswith("decoder.seg_layers."):
            continue
        weights[key] = value
        # nnU-Net's ConvDropoutNormReLU registers conv and norm again in all_modules
        alias = key.replace(".conv.", ".all_modules.0.").replace(".norm.", ".all_modules.1.")
        if alias != key:
            weights[alias] = value
    for key in list(weights):  # the decoder keeps a reference to the encoder
        if key.startswith("encoder."):
            weights["decoder." + key] = weights[key]
    width0 = net.encoder.stages[0][0].convs[0].conv.out_channels
    n_classes = canonical[f"decoder.seg_layers.{n_stages - 2}.weight"].shape[0]
    if plans is True:
        plans = nnunet_plans(n_stages)
    for s in range(n_stages - 1):  # one segmentation layer per decoder stage (deep supervision)
        width = net.decoder.stages[s].convs[0].conv.out_channels
        weights[f"decoder.seg_layers.{s}.weight"] = torch.randn(n_classes, width, 1, 1, 1)
        weights[f"decoder.seg_layers.{s}.bias"] = torch.randn(n_classes)
    assert weights[f"decoder.seg_layers.{n_stages - 2}.weight"].shape[1] == width0
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
