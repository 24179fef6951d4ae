"""Segment preprocessed cases with one model or an ensemble of fold models."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.inferers import sliding_window_inference

from medtl.config import ModelConfig, PredictConfig, parse_section
from medtl.io.errors import InputError
from medtl.io.files import atomic_write
from medtl.io.volume import Volume
from medtl.models.networks import build_network
from medtl.models.transfer import WeightsError
from medtl.preprocess.case import PreprocessedCase, restore_labels


def load_model(checkpoint: Path, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """Build the network stored in a medtl checkpoint and load its weights (no pickles)."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise InputError(
            checkpoint,
            "model checkpoint not found",
            "train the model first (the train stage writes best.pt)",
        )
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != "medtl":
        raise WeightsError(
            f"{checkpoint}: not a medtl model checkpoint; expected the best.pt "
            "written by the train stage"
        )
    cfg = parse_section(ModelConfig, payload["model"], "model")
    model = build_network(cfg, int(payload.get("in_channels", 1)), int(payload["num_classes"]))
    model.load_state_dict(payload["state_dict"])
    model.to(device).eval()
    return model, payload


def predict_probabilities(
    models: Sequence[torch.nn.Module],
    case: PreprocessedCase,
    patch_size: Sequence[int],
    cfg: PredictConfig,
    device: torch.device,
) -> torch.Tensor:
    """Mean softmax probabilities of ``models`` over a whole case (sliding window)."""
    image = torch.from_numpy(case.image)[None].to(device)
    total = None
    with torch.no_grad():
        for model in models:
            logits = sliding_window_inference(
                image,
                roi_size=list(patch_size),
                sw_batch_size=cfg.sw_batch_size,
                predictor=model,
                overlap=cfg.overlap,
                mode=cfg.mode,
            )
            probs = torch.softmax(logits.float(), 1)[0].cpu()
            total = probs if total is None else total + probs
    return total / len(models)


def save_mask(labels: np.ndarray, meta: dict, path: Path) -> None:
    """Write a label map on the case's original grid as NIfTI, atomically."""
    affine = np.asarray(meta["original_affine"], dtype=float)
    vol = Volume(labels.astype(np.uint8), affine)
    atomic_write(path, lambda tmp: nib.save(vol.to_nifti(), str(tmp)))


def segment_case(
    models: Sequence[torch.nn.Module],
    case: PreprocessedCase,
    patch_size: Sequence[int],
    cfg: PredictConfig,
    device: torch.device,
    out: Path,
) -> np.ndarray:
    """Segment one preprocessed case and write the mask in the original image space."""
    probs = predict_probabilities(models, case, patch_size, cfg, device)
    labels = restore_labels(probs, case.meta)
    save_mask(labels, case.meta, out)
    return labels
