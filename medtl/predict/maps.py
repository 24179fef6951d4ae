"""Segment a case and also write its uncertainty maps and mean probabilities.

``medtl predict --uncertainty`` writes ``<case>_entropy.nii.gz`` and
``<case>_mutual_info.nii.gz`` and adds the case's scores to ``predictions.tsv``
(:mod:`medtl.predict.uncertainty`); ``--save-probabilities`` writes
``<case>_probabilities.nii.gz``, one channel per class (background first). Every map lies
on the case's original grid (:func:`medtl.preprocess.case.restore_map`: trilinear). They
are float32: NIfTI has no float16 data type.

When the arm was calibrated (``results/trust/<arm>.json``), the probabilities written are
the tempered ones (:func:`medtl.trust.calibration.temper`); the mask, the uncertainty maps
and the scores are not tempered (the scores' flag threshold was chosen on untempered CV
scores, and the argmax does not change).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medtl.config import PredictConfig
from medtl.predict.inference import predict_probabilities, save_on_original_grid, write_mask
from medtl.predict.uncertainty import UncertaintyAccumulator
from medtl.preprocess.case import PreprocessedCase, restore_map
from medtl.trust.calibration import temper

#: The file names a case's maps get next to its mask, by table column.
MAP_SUFFIXES = {
    "entropy": "_entropy.nii.gz",
    "mutual_info": "_mutual_info.nii.gz",
    "probabilities": "_probabilities.nii.gz",
}


@dataclass(frozen=True)
class MapRequest:
    """Which extra outputs to write per case.

    Attributes:
        uncertainty: entropy and mutual-information maps, and the per-case scores.
        probabilities: the ensemble's mean probabilities, one channel per class.
        scores: the per-case scores without the maps (for the risk and flag columns).
    """

    uncertainty: bool = False
    probabilities: bool = False
    scores: bool = False

    @property
    def wanted(self) -> bool:
        """Whether anything beyond the mask is asked for."""
        return self.uncertainty or self.probabilities or self.scores


def save_map(values: np.ndarray, meta: dict, path: Path) -> None:
    """Write a float map on the case's original grid as float32 NIfTI, atomically."""
    save_on_original_grid(np.asarray(values, dtype=np.float32), meta, path)


def segment_case_with_maps(
    models: Sequence[torch.nn.Module],
    case: PreprocessedCase,
    patch_size: Sequence[int],
    cfg: PredictConfig,
    device: torch.device,
    mask: Path,
    request: MapRequest,
    *,
    postprocess: dict | None = None,
    listed: Path | None = None,
    temperature: float = 1.0,
    multiple: int = 0,
) -> tuple[np.ndarray, dict[str, object]]:
    """As :func:`medtl.predict.inference.segment_case`, plus the maps ``request`` asks for.

    The mask is the same: the members' probabilities are summed in the same order. Maps
    are written next to ``mask`` (``<case>_entropy.nii.gz`` ...); they are never
    post-processed, and the scores are computed on the preprocessed grid from the
    ensemble mask before post-processing.

    Args:
        listed: the folder the table names the maps in (the final output folder when
            ``mask`` is written into a staging folder); default ``mask``'s folder.
        temperature: the arm's calibration, applied to the probabilities written.
        multiple: as :func:`medtl.predict.inference.predict_probabilities`.

    Returns:
        The labels written (uint8, original grid) and the table columns: each map's
        path, and with ``request.uncertainty`` the scores (``members``, ``mean_entropy``,
        ``mean_mutual_info``, ``agreement_dice``, ``volume_cv``).
    """
    accumulator = UncertaintyAccumulator() if request.uncertainty or request.scores else None
    probs = predict_probabilities(
        models, case, patch_size, cfg, device, observer=accumulator, multiple=multiple
    )
    labels = write_mask(probs, case, mask, postprocess)
    stem = mask.name.removesuffix(".nii.gz")
    listed = Path(listed) if listed is not None else mask.parent
    columns: dict[str, object] = {}

    def write(column: str, values: np.ndarray) -> None:
        name = stem + MAP_SUFFIXES[column]
        save_map(values, case.meta, mask.parent / name)
        columns[column] = str(listed / name)

    if accumulator is not None:
        result = accumulator.finish(probs)
        if request.uncertainty:
            write("entropy", restore_map(result.entropy[None], case.meta, [0.0])[..., 0])
            write("mutual_info", restore_map(result.mutual_info[None], case.meta, [0.0])[..., 0])
        columns.update(result.scores.as_row())
    if request.probabilities:
        fill = [1.0] + [0.0] * (probs.shape[0] - 1)
        write("probabilities", restore_map(temper(probs, temperature), case.meta, fill))
    return labels, columns
