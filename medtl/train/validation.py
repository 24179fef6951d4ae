"""Validation during training: mean foreground Dice of whole volumes."""

from __future__ import annotations

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from medtl.config import PredictConfig
from medtl.kernel.device import gpu_predictor


def validate(
    model: torch.nn.Module,
    cases: list[dict],
    patch_size,
    num_classes: int,
    device: torch.device,
    predict: PredictConfig,
) -> float:
    """Mean foreground Dice over validation cases (sliding window, whole volumes).

    On a CUDA device the network runs in bfloat16 autocast with ``predict.amp``, as in
    prediction; its memory format stays the training's (``train.channels_last``).
    """
    model.eval()
    scores = []
    predictor = gpu_predictor(model, device, amp=predict.amp, layout=False)
    with torch.no_grad():
        for item in cases:
            logits = sliding_window_inference(
                item["image"][None].to(device),
                roi_size=list(patch_size),
                sw_batch_size=predict.sw_batch_size,
                predictor=predictor,
                overlap=predict.overlap,
                mode=predict.mode,
            )
            pred = logits.argmax(1)[0].cpu()
            ref = item["label"][0]
            for c in range(1, num_classes):
                p, r = pred == c, ref == c
                denom = int(p.sum() + r.sum())
                scores.append(1.0 if denom == 0 else 2.0 * int((p & r).sum()) / denom)
    model.train()
    return float(np.mean(scores)) if scores else float("nan")
