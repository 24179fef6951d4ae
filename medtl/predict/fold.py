"""Held-out cases of one training run: their masks, and what calibration and failure
detection are later fitted on.

Beside the masks (``predictions/<arm>/seed<s>/fold<k>/<case>.nii.gz``) the job writes

- ``cases.tsv``: one row per held-out case: its uncertainty scores
  (:mod:`medtl.predict.uncertainty`; the members are this run's model and, with
  ``predict.tta``, its mirrored copies), the seconds it took and, on a GPU, its peak memory;
- ``calibration.npz``: the mean probabilities and reference labels of the voxels near the
  structure (:func:`medtl.trust.calibration.band_sample`), for temperature scaling;
- ``prediction.json``: the model's size and the job's peak memory.

:mod:`medtl.trust.cv` reads them for every run of an arm.
"""

from __future__ import annotations

import json
import resource
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from medtl.config import PredictConfig, TrustConfig
from medtl.kernel.device import torch_device
from medtl.kernel.files import atomic_write, atomic_write_text
from medtl.layout import (
    BEST_CHECKPOINT,
    CV_CALIBRATION_SAMPLE,
    CV_CASE_SCORES,
    CV_PREDICTION_RECORD,
)
from medtl.models.trained import checkpoint_multiple, load_model
from medtl.predict.inference import predict_probabilities, write_mask
from medtl.predict.uncertainty import UncertaintyAccumulator
from medtl.preprocess.case import PreprocessedCase, load_case
from medtl.split.folds import fold_cases, load_folds
from medtl.trust.calibration import band_sample


def predict_fold(
    run_dir: Path,
    folds_path: Path,
    fold: int,
    cases_dir: Path,
    out: Path,
    cfg: PredictConfig,
    device_name: str = "auto",
    progress: bool = True,
    trust: TrustConfig | None = None,
) -> list[Path]:
    """Segment the held-out (``test``) cases of one fold with that fold's best model.

    Masks are written as ``out/<case>.nii.gz`` on each case's original grid. They
    are never post-processed: the post-processing of the arm is chosen on them
    (:mod:`medtl.postprocess.choose`). The records beside them are described in the
    module's docstring; ``trust`` sets the calibration sample.
    """
    trust = trust or TrustConfig()
    device = torch_device(device_name)
    checkpoint = Path(run_dir) / BEST_CHECKPOINT
    model, payload = load_model(checkpoint, device)
    patch, multiple = payload["patch_size"], checkpoint_multiple(payload)
    out = Path(out)
    written, rows, sample = [], [], _Sample()
    cases = fold_cases(load_folds(folds_path), fold, "test")
    for case_id in tqdm(cases, desc=f"predict fold {fold}", disable=not progress):
        case = load_case(Path(cases_dir) / f"{case_id}.npz")
        path = out / f"{case_id}.nii.gz"
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        accumulator = UncertaintyAccumulator()
        probs = predict_probabilities(
            [model], case, patch, cfg, device, observer=accumulator, multiple=multiple
        )
        write_mask(probs, case, path, None)
        row = {"case": case_id, "seconds": time.perf_counter() - start}
        if device.type == "cuda":
            row["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        rows.append(row | accumulator.finish(probs).scores.as_row())
        sample.add(case_id, case, probs, trust)
        written.append(path)
    atomic_write_text(out / CV_CASE_SCORES, pd.DataFrame(rows).to_csv(sep="\t", index=False))
    sample.save(out / CV_CALIBRATION_SAMPLE)
    record = prediction_record(model, checkpoint, device, cfg)
    atomic_write_text(out / CV_PREDICTION_RECORD, json.dumps(record, indent=2) + "\n")
    return written


class _Sample:
    """The calibration voxels of a fold's held-out cases, gathered case by case."""

    def __init__(self) -> None:
        self.probs: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.case_index: list[np.ndarray] = []
        self.case_ids: list[str] = []

    def add(
        self, case_id: str, case: PreprocessedCase, probs: torch.Tensor, trust: TrustConfig
    ) -> None:
        """The voxels of one case near its structure (none for a case without labels).

        The subset is drawn with a generator seeded by the case's name: the same voxels
        whatever the order of the cases or the fold.
        """
        if case.label is None:
            return
        mean = probs.numpy()
        rng = np.random.default_rng(zlib.crc32(case_id.encode("utf-8")))
        where = band_sample(
            case.label, mean.argmax(0), trust.band_voxels, trust.voxels_per_case, rng
        )
        self.probs.append(mean.reshape(mean.shape[0], -1)[:, where].astype(np.float32))
        self.labels.append(case.label.reshape(-1)[where].astype(np.uint8))
        self.case_index.append(np.full(len(where), len(self.case_ids), dtype=np.int32))
        self.case_ids.append(case_id)

    def save(self, path: Path) -> None:
        """``probs`` (classes, voxels), ``labels`` and ``case`` (index into ``case_ids``)."""
        classes = self.probs[0].shape[0] if self.probs else 0
        arrays = {
            "probs": np.concatenate(self.probs, 1) if self.probs else np.zeros((classes, 0)),
            "labels": np.concatenate(self.labels) if self.labels else np.zeros(0, np.uint8),
            "case": np.concatenate(self.case_index) if self.case_index else np.zeros(0, np.int32),
            "case_ids": np.array(self.case_ids, dtype=str),
        }
        atomic_write(path, lambda tmp: _savez(tmp, arrays))


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as handle:
        np.savez_compressed(handle, **arrays)


def prediction_record(
    model: torch.nn.Module, checkpoint: Path, device: torch.device, cfg: PredictConfig
) -> dict:
    """The model's size and the prediction job's peak memory (``prediction.json``).

    ``peak_rss_mb`` is the peak resident memory of the whole process so far (Linux reports
    it in KiB): loading the model and every case, not one case alone.
    """
    return {
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "checkpoint_bytes": int(Path(checkpoint).stat().st_size),
        "device": device.type,
        "threads": torch.get_num_threads(),
        "tta": bool(cfg.tta),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mb": torch.cuda.max_memory_allocated(device) / 2**20
        if device.type == "cuda"
        else None,
    }
