"""Segment preprocessed cases with one model or an ensemble of fold models."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.inferers import sliding_window_inference

from medtl.config import ModelConfig, PredictConfig, parse_section
from medtl.io.errors import InputError
from medtl.io.files import atomic_write
from medtl.io.volume import Volume, spacing_of
from medtl.models.networks import build_network
from medtl.models.transfer import WeightsError
from medtl.postprocess.components import apply_postprocessing
from medtl.preprocess.case import PreprocessedCase, restore_labels
from medtl.train.memory import out_of_memory_hint


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


#: The spatial dimensions of a ``(batch, channel, x, y, z)`` tensor.
SPATIAL_DIMS = (2, 3, 4)


def mirror_axes(tta: bool) -> list[tuple[int, ...]]:
    """The flips a prediction is averaged over: none, or every subset of the spatial dims.

    With ``tta`` the 7 non-empty subsets of the three spatial dimensions of a
    ``(batch, channel, x, y, z)`` tensor follow the identity (as nnU-Net's mirroring).

    Example:
        >>> mirror_axes(False)
        [()]
        >>> len(mirror_axes(True)), mirror_axes(True)[:4]
        (8, [(), (2,), (3,), (4,)])
    """
    if not tta:
        return [()]
    return [
        dims
        for r in range(len(SPATIAL_DIMS) + 1)
        for dims in itertools.combinations(SPATIAL_DIMS, r)
    ]


def predict_probabilities(
    models: Sequence[torch.nn.Module],
    case: PreprocessedCase,
    patch_size: Sequence[int],
    cfg: PredictConfig,
    device: torch.device,
) -> torch.Tensor:
    """Mean softmax probabilities of ``models`` over a whole case (sliding window).

    With ``cfg.tta`` each model also predicts the case mirrored along every non-empty
    subset of the three spatial axes; each prediction is mirrored back and all of them (8
    per model) are averaged. Only a running sum is kept (on the CPU), so memory does not
    grow with the number of models or mirrors.

    Returns:
        float32 ``(classes, x, y, z)`` probabilities on the case's (preprocessed) grid.

    Raises:
        DeviceMemoryError: the GPU ran out of memory; names ``predict.sw_batch_size``.
    """
    image = torch.from_numpy(case.image)[None].to(device)
    flips = mirror_axes(cfg.tta)
    total = None
    with torch.no_grad(), out_of_memory_hint("prediction", *inference_hint(cfg, patch_size)):
        for model in models:
            for dims in flips:
                logits = sliding_window_inference(
                    image.flip(dims) if dims else image,
                    roi_size=list(patch_size),
                    sw_batch_size=cfg.sw_batch_size,
                    predictor=model,
                    overlap=cfg.overlap,
                    mode=cfg.mode,
                )
                probs = torch.softmax(logits.float(), 1)
                if dims:
                    probs = probs.flip(dims)
                probs = probs[0].cpu()
                total = probs if total is None else total.add_(probs)
                del logits
    return total / (len(models) * len(flips))


def inference_hint(cfg: PredictConfig, patch_size: Sequence[int]) -> tuple[dict, str]:
    """Settings and advice for a sliding-window prediction that ran out of memory.

    The peak memory is set by ``sw_batch_size`` windows of the model's patch (fixed when
    it was trained) plus the whole case's probabilities; ``overlap`` and ``tta`` change
    the run time (more windows, mirrored copies), not the peak.

    Example:
        >>> settings, fix = inference_hint(PredictConfig(sw_batch_size=4), (32, 32, 16))
        >>> settings["predict.sw_batch_size"], fix.split(";")[0]
        (4, 'lower predict.sw_batch_size (windows run at once, e.g. to 2)')
    """
    settings = {
        "predict.sw_batch_size": cfg.sw_batch_size,
        "predict.overlap": cfg.overlap,
        "predict.tta": cfg.tta,
        "patch (from training)": list(patch_size),
    }
    example = f", e.g. to {max(1, cfg.sw_batch_size // 2)}" if cfg.sw_batch_size > 1 else ""
    fix = (
        f"lower predict.sw_batch_size (windows run at once{example}); predict.overlap and "
        "predict.tta only change the run time. At sw_batch_size 1 the model's patch is the "
        "limit: run on a GPU with more memory or on the CPU (device: cpu), or retrain with "
        "a smaller train.patch_size"
    )
    return settings, fix


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
    *,
    postprocess: dict | None = None,
) -> np.ndarray:
    """Segment one preprocessed case and write the mask in the original image space.

    Args:
        postprocess: a post-processing decision (``results/postprocess/{arm}.json``, see
            :mod:`medtl.postprocess.choose`) applied to the labels on the original grid
            before they are saved; None applies nothing (cross-validation predictions,
            on which the decision is made, are never post-processed).

    Returns:
        The labels written (uint8, original grid).
    """
    probs = predict_probabilities(models, case, patch_size, cfg, device)
    labels = restore_labels(probs, case.meta)
    if postprocess is not None:
        spacing = spacing_of(np.asarray(case.meta["original_affine"], dtype=float))
        labels = apply_postprocessing(labels, postprocess, spacing)
    save_mask(labels, case.meta, out)
    return labels
