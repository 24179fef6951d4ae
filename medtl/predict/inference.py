"""Segment preprocessed cases with one model or an ensemble of fold models."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.inferers import sliding_window_inference

from medtl.config import PredictConfig
from medtl.io.volume import Volume, spacing_of
from medtl.kernel.device import gpu_predictor, out_of_memory_hint
from medtl.kernel.files import atomic_write
from medtl.postprocess.components import apply_postprocessing
from medtl.predict.window import prediction_window, windows_along, windows_per_call
from medtl.preprocess.case import PreprocessedCase, restore_labels
from medtl.preprocess.plan import Plan
from medtl.trust.decision import TrustRule


@dataclass(frozen=True)
class Ensemble:
    """The models of one arm, ready to segment with, and what goes with them.

    Attributes:
        arm: the arm.
        plan: the run's preprocessing plan.
        members: one record per model (its arm, seed, fold and file).
        models: the networks (PyTorch modules, or ONNX Runtime sessions wrapped as such).
        patch_size: the sliding window's size.
        decision: the post-processing to apply, or None.
        device: where the networks run.
        trust: the arm's temperature and flag rule (``results/trust/<arm>.json``), or None.
        multiple: what every side of the networks' input must be a multiple of (0: they
            take only ``patch_size``); ``predict.window`` needs it.
    """

    arm: str
    plan: Plan
    members: list
    models: list[torch.nn.Module]
    patch_size: list[int]
    decision: dict | None
    device: torch.device
    trust: TrustRule | None = None
    multiple: int = 0

    @property
    def classes(self) -> dict[int, str]:
        """The plan's classes as a plain dict (the DICOM writers derive UIDs from its repr)."""
        return dict(self.plan.class_map)


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


def window_count(image_size: Sequence[int], roi_size: Sequence[int], overlap: float) -> int:
    """The number of windows ``sliding_window_inference`` runs over one image.

    Per axis: one window where the image is no larger than the window, else windows
    ``int(roi * (1 - overlap))`` apart (at least 1) with the last one flush with the end,
    as MONAI places them.

    Example:
        >>> window_count((32, 32, 16), (32, 32, 16), 0.5)
        1
        >>> window_count((64, 64, 20), (32, 32, 16), 0.5)  # 3 x 3 x 2
        18
    """
    return math.prod(
        windows_along(int(size), int(roi), overlap)
        for size, roi in zip(image_size, roi_size, strict=True)
    )


def mirror_batch(n_mirrors: int, windows: int, sw_batch_size: int) -> int:
    """How many mirrored copies of a case to run through one sliding window together.

    Copies are stacked along the batch axis only to fill a batch of ``sw_batch_size``
    windows that one copy alone leaves part empty: a case of 1 window and 4 windows per
    batch runs its 8 mirrored copies in 2 network calls instead of 8. Larger cases run
    one copy at a time: stacking would not save a network call, and the stitched output
    of a stack is as many times larger. A stack's output is thus at most
    ``sw_batch_size`` windows large.

    Example:
        >>> mirror_batch(8, windows=1, sw_batch_size=4), mirror_batch(8, 2, 4)
        (4, 2)
        >>> mirror_batch(8, windows=27, sw_batch_size=4), mirror_batch(1, 1, 4)
        (1, 1)
    """
    return max(1, min(n_mirrors, sw_batch_size // max(windows, 1)))


def _total_device(device: torch.device, nbytes: int, free_bytes: int | None = None) -> torch.device:
    """Where the running sum of probabilities is kept: on the GPU if it fits, else the CPU.

    On a CUDA device the sum stays there when it takes at most a quarter of the free
    memory (``free_bytes``, asked of the device when None), which saves a copy to the
    host for every model and mirror.

    Example:
        >>> cpu, gpu = torch.device("cpu"), torch.device("cuda")
        >>> _total_device(cpu, 10).type, _total_device(gpu, 10, free_bytes=100).type
        ('cpu', 'cuda')
        >>> _total_device(gpu, 30, free_bytes=100).type
        'cpu'
    """
    if device.type != "cuda":
        return torch.device("cpu")
    if free_bytes is None:
        free_bytes = torch.cuda.mem_get_info(device)[0]
    return device if 4 * nbytes <= free_bytes else torch.device("cpu")


def predict_probabilities(
    models: Sequence[torch.nn.Module],
    case: PreprocessedCase,
    patch_size: Sequence[int],
    cfg: PredictConfig,
    device: torch.device,
    observer: Callable[[torch.Tensor], None] | None = None,
    multiple: int = 0,
) -> torch.Tensor:
    """Mean softmax probabilities of ``models`` over a whole case (sliding window).

    With ``cfg.tta`` each model also predicts the case mirrored along every non-empty
    subset of the three spatial axes; each prediction is mirrored back and all of them (8
    per model) are averaged. A case smaller than a batch of windows runs several mirrored
    copies at once, stacked along the batch axis (:func:`mirror_batch`). Only a running
    sum is kept, so memory does not grow with the number of models or mirrors; on a GPU
    the sum stays there while it fits (:func:`_total_device`) and comes to the CPU once.

    On a CUDA device ``cfg.amp`` runs the network in bfloat16 autocast (windows are
    stitched and probabilities summed in float32) and ``cfg.channels_last`` in the
    ``channels_last_3d`` memory format; on the CPU both are ignored.

    The window is ``cfg.window`` resolved for the case by
    :func:`medtl.predict.window.prediction_window`: the patch, or with ``image`` one
    larger window that fits a small case (``multiple`` > 0: the networks take inputs whose sides are
    multiples of it).

    Args:
        observer: called with each member's float32 ``(classes, x, y, z)`` probabilities
            (one model on one mirrored copy, mirrored back; on the device) before they are
            summed, e.g. a :class:`medtl.predict.uncertainty.UncertaintyAccumulator`. It
            must not change them; the sum is the same with or without one.

    Returns:
        float32 ``(classes, x, y, z)`` probabilities on the case's (preprocessed) grid.

    Raises:
        DeviceMemoryError: the GPU ran out of memory; names ``predict.sw_batch_size``.
    """
    image = torch.from_numpy(case.image)[None].to(device)
    flips = mirror_axes(cfg.tta)
    roi = prediction_window(image.shape[2:], patch_size, cfg.window, multiple, cfg.overlap)
    windows = window_count(image.shape[2:], roi, cfg.overlap)
    per_call = windows_per_call(patch_size, roi, cfg.sw_batch_size)
    stack = mirror_batch(len(flips), windows, per_call)
    groups = [flips[i : i + stack] for i in range(0, len(flips), stack)]
    total = None
    hint = inference_hint(cfg, patch_size, roi)
    with torch.no_grad(), out_of_memory_hint("prediction", *hint):
        for model in models:
            predictor = gpu_predictor(model, device, amp=cfg.amp, layout=cfg.channels_last)
            for group in groups:
                copies = [image.flip(dims) if dims else image for dims in group]
                logits = sliding_window_inference(
                    torch.cat(copies) if len(copies) > 1 else copies[0],
                    roi_size=roi,
                    sw_batch_size=per_call,
                    predictor=predictor,
                    overlap=cfg.overlap,
                    mode=cfg.mode,
                )
                del copies
                probs = torch.softmax(logits.float(), 1)
                del logits
                for k, dims in enumerate(group):
                    p = probs[k].flip([d - 1 for d in dims]) if dims else probs[k]
                    if observer is not None:
                        observer(p)
                    if total is None:
                        where = _total_device(device, p.numel() * p.element_size())
                        total = p.to(where, copy=True)
                    else:
                        total.add_(p.to(total.device))
                del probs
    return (total / (len(models) * len(flips))).cpu()


def inference_hint(
    cfg: PredictConfig, patch_size: Sequence[int], window: Sequence[int] | None = None
) -> tuple[dict, str]:
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
    if window is not None and list(window) != list(patch_size):
        settings["predict.window"] = list(window)
    example = f", e.g. to {max(1, cfg.sw_batch_size // 2)}" if cfg.sw_batch_size > 1 else ""
    fix = (
        f"lower predict.sw_batch_size (windows run at once{example}); predict.overlap and "
        "predict.tta only change the run time. At sw_batch_size 1 the model's patch is the "
        "limit: run on a GPU with more memory or on the CPU (device: cpu), or retrain with "
        "a smaller train.patch_size"
    )
    return settings, fix


def save_on_original_grid(values: np.ndarray, meta: dict, path: Path) -> None:
    """Write an array restored to the case's original grid as NIfTI (its dtype), atomically."""
    affine = np.asarray(meta["original_affine"], dtype=float)
    vol = Volume(values, affine)
    atomic_write(path, lambda tmp: nib.save(vol.to_nifti(), str(tmp)))


def save_mask(labels: np.ndarray, meta: dict, path: Path) -> None:
    """Write a label map on the case's original grid as NIfTI, atomically."""
    save_on_original_grid(labels.astype(np.uint8), meta, path)


def segment_case(
    models: Sequence[torch.nn.Module],
    case: PreprocessedCase,
    patch_size: Sequence[int],
    cfg: PredictConfig,
    device: torch.device,
    out: Path,
    *,
    postprocess: dict | None = None,
    multiple: int = 0,
) -> np.ndarray:
    """Segment one preprocessed case and write the mask in the original image space.

    Args:
        multiple: as :func:`predict_probabilities` (for ``cfg.window``).
        postprocess: a post-processing decision (``results/postprocess/{arm}.json``, see
            :mod:`medtl.postprocess.choose`) applied to the labels on the original grid
            before they are saved; None applies nothing (cross-validation predictions,
            on which the decision is made, are never post-processed).

    Returns:
        The labels written (uint8, original grid).
    """
    probs = predict_probabilities(models, case, patch_size, cfg, device, multiple=multiple)
    return write_mask(probs, case, out, postprocess)


def write_mask(
    probs: torch.Tensor, case: PreprocessedCase, out: Path, postprocess: dict | None
) -> np.ndarray:
    """The mask of a case's probabilities on its original grid, post-processed and written.

    Returns:
        The labels written (uint8, original grid).
    """
    labels = restore_labels(probs, case.meta)
    if postprocess is not None:
        spacing = spacing_of(np.asarray(case.meta["original_affine"], dtype=float))
        labels = apply_postprocessing(labels, postprocess, spacing)
    save_mask(labels, case.meta, out)
    return labels
