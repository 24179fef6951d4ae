"""The training loop shared by the pretrain stage and every transfer arm."""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.utils import set_determinism
from tqdm.auto import tqdm

from medtl.config import ModelConfig, PredictConfig, TrainConfig, to_dict
from medtl.io.files import atomic_write, atomic_write_text
from medtl.models.networks import (
    Architecture,
    build_network,
    check_patch_size,
    count_parameters,
    freeze_encoder,
    get_architecture,
    param_groups,
)
from medtl.train.data import infinite_batches


@dataclass
class RunSpec:
    """Everything that defines one training run.

    Attributes:
        model: the network settings.
        train: the schedule (steps, batch, patch, lr, augmentation).
        num_classes: output channels including background.
        in_channels: input channels (image modalities / sequences).
        classes: label value → name, stored in the checkpoint.
        seed: the run's seed.
        freeze_encoder: feature extraction (encoder fixed).
        encoder_lr_scale: the encoder's share of the base learning rate.
        init_report: the pretrained-weights load report, if any.
        tags: free-form provenance (arm, fold, ...), stored in the checkpoint.
    """

    model: ModelConfig
    train: TrainConfig
    num_classes: int
    classes: dict[str, str]
    seed: int
    in_channels: int = 1
    freeze_encoder: bool = False
    encoder_lr_scale: float = 1.0
    predict: PredictConfig = field(default_factory=PredictConfig)
    tags: dict[str, Any] = field(default_factory=dict)


def checkpoint_payload(model: torch.nn.Module, spec: RunSpec, step: int, val: float) -> dict:
    """A checkpoint holding only tensors and plain data (loadable with weights_only=True)."""
    return {
        "format": "medtl",
        "state_dict": model.state_dict(),
        "model": to_dict(spec.model),
        "num_classes": spec.num_classes,
        "in_channels": spec.in_channels,
        "classes": spec.classes,
        "patch_size": list(spec.train.patch_size),
        "step": step,
        "val_dice": val,
        "tags": spec.tags,
    }


def validate(
    model: torch.nn.Module,
    cases: list[dict],
    patch_size,
    num_classes: int,
    device: torch.device,
    predict: PredictConfig,
) -> float:
    """Mean foreground Dice over validation cases (sliding window, whole volumes)."""
    model.eval()
    scores = []
    with torch.no_grad():
        for item in cases:
            logits = sliding_window_inference(
                item["image"][None].to(device),
                roi_size=list(patch_size),
                sw_batch_size=predict.sw_batch_size,
                predictor=model,
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


def _save_state(
    path: Path,
    model,
    optimizer,
    scheduler,
    step: int,
    best: float,
    best_step: int,
    fingerprint: str,
) -> None:
    state = {
        "fingerprint": fingerprint,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": step,
        "best": best,
        "best_step": best_step,
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def train_run(
    spec: RunSpec,
    train_items: list[dict],
    val_items: list[dict],
    out_dir: Path,
    device: torch.device,
    init: torch.nn.Module | None = None,
    progress: bool = True,
    fingerprint: str = "",
) -> dict[str, Any]:
    """Train one network and keep its best checkpoint.

    Writes ``best.pt`` (weights of the best validation Dice), ``last.pt`` (resumable
    state), ``curves.csv`` (step, loss, val_dice, lr, elapsed_s) into ``out_dir``. A run
    whose ``last.pt`` exists resumes from it.

    Args:
        spec: the run's definition.
        train_items: training cases from :func:`medtl.train.data.load_training_cases`.
        val_items: validation cases (whole volumes) for checkpoint selection.
        out_dir: output folder.
        device: torch device.
        init: a network already initialised (e.g. with pretrained encoder weights);
            built fresh from ``spec`` when None.
        progress: show a progress bar.
        fingerprint: identifies the settings; a ``last.pt`` of other settings is ignored.

    Returns:
        A summary (best step, best validation Dice, parameter counts, seconds).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    set_determinism(seed=spec.seed)
    arch: Architecture = get_architecture(spec.model.name)
    check_patch_size(spec.model, spec.train.patch_size)
    model = (
        init if init is not None else build_network(spec.model, spec.in_channels, spec.num_classes)
    )
    frozen = freeze_encoder(model, arch) if spec.freeze_encoder else 0
    model.to(device)
    optimizer = torch.optim.AdamW(
        param_groups(model, arch, spec.train.lr, spec.encoder_lr_scale),
        lr=spec.train.lr,
        weight_decay=spec.train.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: 0.5 * (1 + math.cos(math.pi * min(s, spec.train.steps) / spec.train.steps)),
    )
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    step, best, best_step = 0, -1.0, 0
    last = out_dir / "last.pt"
    curves_path = out_dir / "curves.csv"
    rows: list[dict[str, Any]] = []
    state = torch.load(last, map_location=device, weights_only=True) if last.exists() else None
    if state is not None and state.get("fingerprint") == fingerprint:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, best = int(state["step"]), float(state["best"])
        best_step = int(state.get("best_step", 0))
        if curves_path.exists():
            with curves_path.open() as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
    batches = infinite_batches(
        train_items,
        spec.train.patch_size,
        spec.train.batch_size,
        spec.train.augment,
        spec.train.pos_fraction,
        seed=spec.seed + step,
    )
    start = time.perf_counter()
    model.train()
    bar = tqdm(
        total=spec.train.steps,
        initial=step,
        disable=not progress,
        desc="train",
        unit="step",
        mininterval=2.0,
    )
    while step < spec.train.steps:
        batch = next(batches)
        image, label = batch["image"].to(device), batch["label"].to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(image), label)
        loss.backward()
        loss_value = loss.item()
        optimizer.step()
        scheduler.step()
        step += 1
        row = {
            "step": step,
            "loss": loss_value,
            "val_dice": "",
            "lr": scheduler.get_last_lr()[0],
            "elapsed_s": time.perf_counter() - start,
        }
        if step % spec.train.val_every == 0 or step == spec.train.steps:
            val = validate(
                model, val_items, spec.train.patch_size, spec.num_classes, device, spec.predict
            )
            row["val_dice"] = val
            if val > best:
                best, best_step = val, step
                payload = checkpoint_payload(model, spec, step, val)
                atomic_write(
                    out_dir / "best.pt", lambda tmp, payload=payload: torch.save(payload, tmp)
                )
            _save_state(last, model, optimizer, scheduler, step, best, best_step, fingerprint)
            bar.set_postfix(loss=f"{loss_value:.3f}", val_dice=f"{val:.3f}")
            tqdm.write(
                f"step {step}/{spec.train.steps}: loss {loss_value:.4f}, validation Dice "
                f"{val:.4f} (best {best:.4f} at step {best_step}), "
                f"{time.perf_counter() - start:.0f} s"
            )
        rows.append(row)
        bar.update(1)
        if step % spec.train.val_every == 0 or step == spec.train.steps:
            _write_curves(curves_path, rows)
    bar.close()
    counts = count_parameters(model, arch)
    summary = {
        "best_step": best_step,
        "best_val_dice": best,
        "steps": step,
        "parameters": counts,
        "frozen_parameters": frozen,
        "seconds": time.perf_counter() - start,
    }
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _write_curves(path: Path, rows: list[dict[str, Any]]) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["step", "loss", "val_dice", "lr", "elapsed_s"])
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write)
