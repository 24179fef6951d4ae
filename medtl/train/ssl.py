"""Self-supervised pretraining: masked-volume inpainting plus rotation prediction.

Labels are few, images are many: every image medtl has — the target set labelled or
not, and the source set — can teach the encoder what the anatomy looks like. Two
pretext tasks, both from the literature of 3-D medical self-supervision:

* **inpainting** (Models Genesis, Swin UNETR): random cubes of each patch are blanked
  out and the network reconstructs the whole patch (L1 loss, masked voxels weighted
  more), which needs shape and context;
* **rotation prediction**: each patch is turned by 0, 90, 180 or 270 degrees in the
  axial plane and a small head on the deepest encoder features predicts which.

The network is the segmentation network itself with a reconstruction head (one output
per input channel), so its encoder keys are exactly those the arms load.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, RandFlipd, RandSpatialCropd, SpatialPadd
from monai.utils import set_determinism
from tqdm.auto import tqdm

from medtl.config import ModelConfig, to_dict
from medtl.io.errors import InputError
from medtl.io.files import atomic_write, atomic_write_text
from medtl.models.networks import build_network, check_patch_size, get_architecture


@dataclass(frozen=True)
class SSLConfig:
    """The self-supervised schedule.

    Attributes:
        steps: optimiser steps.
        batch_size: patches per step.
        patch_size: patch in voxels (x and y equal, for the rotations).
        lr: AdamW learning rate (cosine-annealed).
        mask_cubes: blanked cubes per patch.
        mask_fraction: side of each cube as a share of the patch side.
        rotation_weight: weight of the rotation loss against the inpainting loss.
    """

    steps: int = 300
    batch_size: int = 2
    patch_size: tuple[int, int, int] = (32, 32, 16)
    lr: float = 2e-3
    mask_cubes: int = 6
    mask_fraction: float = 0.25
    rotation_weight: float = 0.1


def mask_cubes(
    batch: torch.Tensor, n: int, fraction: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blank ``n`` random cubes of each patch (set to zero, the normalised mean).

    Returns:
        The masked batch and the boolean mask of blanked voxels.

    Example:
        >>> x = torch.ones(2, 1, 16, 16, 8)
        >>> masked, mask = mask_cubes(x, 2, 0.25, torch.Generator().manual_seed(0))
        >>> bool((masked[mask] == 0).all()), int(mask.sum()) > 0
        (True, True)
    """
    masked = batch.clone()
    mask = torch.zeros_like(batch, dtype=torch.bool)
    spatial = batch.shape[2:]
    sides = [max(1, int(round(s * fraction))) for s in spatial]
    for b in range(batch.shape[0]):
        for _ in range(n):
            lo = [
                int(torch.randint(0, s - c + 1, (1,), generator=generator))
                for s, c in zip(spatial, sides, strict=True)
            ]
            sl = tuple(slice(a, a + c) for a, c in zip(lo, sides, strict=True))
            mask[(b, slice(None), *sl)] = True
    masked[mask] = 0.0
    return masked, mask


def rotate_batch(
    batch: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate each patch by k × 90° in the axial (x-y) plane; returns patches and k."""
    ks = torch.randint(0, 4, (batch.shape[0],), generator=generator)
    out = torch.stack([torch.rot90(x, int(k), dims=(1, 2)) for x, k in zip(batch, ks, strict=True)])
    return out, ks


class _DeepestFeatures:
    """Forward hook that keeps the output of the encoder's deepest stage."""

    def __init__(self) -> None:
        self.value: torch.Tensor | None = None

    def __call__(self, module, inputs, output) -> None:
        self.value = output[-1] if isinstance(output, (list, tuple)) else output


def _deepest_module(model: torch.nn.Module, prefixes: tuple[str, ...]) -> torch.nn.Module:
    name = prefixes[-1].rstrip(".")
    try:
        return model.get_submodule(name)
    except AttributeError as exc:
        raise InputError(
            name,
            "the encoder's deepest stage is not a module of the network",
            "use an architecture whose last encoder prefix names a module",
        ) from exc


def _loader(images: list[torch.Tensor], cfg: SSLConfig, seed: int) -> DataLoader:
    keys = ["image"]
    transform = Compose(
        [
            SpatialPadd(keys, spatial_size=list(cfg.patch_size)),
            RandSpatialCropd(keys, roi_size=list(cfg.patch_size), random_size=False),
            RandFlipd(keys, prob=0.5, spatial_axis=0),
            RandFlipd(keys, prob=0.5, spatial_axis=2),
        ]
    )
    transform.set_random_state(seed=seed)
    data = Dataset([{"image": im} for im in images], transform)
    return DataLoader(
        data,
        batch_size=cfg.batch_size,
        shuffle=True,
        num_workers=0,
        drop_last=len(images) >= cfg.batch_size,
        generator=torch.Generator().manual_seed(seed),
    )


def pretrain_ssl(
    images: list[torch.Tensor],
    model_cfg: ModelConfig,
    cfg: SSLConfig,
    out: Path,
    seed: int,
    device: torch.device,
    progress: bool = True,
) -> dict[str, Any]:
    """Pretrain a network on unlabelled images; writes ``out/checkpoint.pt`` and curves.

    Args:
        images: preprocessed images, each ``(channels, x, y, z)``.
        model_cfg: the segmentation network (the arms' architecture).
        cfg: the schedule.
        out: output folder.
        seed: seed of every random choice.
        device: torch device.
        progress: show a progress bar.

    Returns:
        A summary (final losses, steps, seconds).
    """
    if not images:
        raise InputError(out, "no images to pretrain on", "give images in the data sets")
    if cfg.patch_size[0] != cfg.patch_size[1]:
        raise InputError(
            "pretrain_ssl.patch_size",
            f"got {list(cfg.patch_size)}; the rotation task needs equal x and y sides",
            "use e.g. [32, 32, 16]",
        )
    set_determinism(seed=seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    arch = get_architecture(model_cfg.name)
    check_patch_size(model_cfg, cfg.patch_size)
    channels = int(images[0].shape[0])
    model = build_network(model_cfg, channels, channels).to(device)
    hook = _DeepestFeatures()
    _deepest_module(model, arch.encoder_prefixes).register_forward_hook(hook)
    rotation_head = torch.nn.LazyLinear(4).to(device)
    with torch.no_grad():  # materialise the lazy head before building the optimiser
        model(torch.zeros(1, channels, *cfg.patch_size, device=device))
        rotation_head(hook.value.mean(dim=tuple(range(2, hook.value.ndim))))
    params = list(model.parameters()) + list(rotation_head.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps))
    )
    generator = torch.Generator().manual_seed(seed)
    loader = _loader(images, cfg, seed)
    rows, step, start = [], 0, time.perf_counter()
    bar = tqdm(
        total=cfg.steps, disable=not progress, desc="ssl pretrain", unit="step", mininterval=2.0
    )
    model.train()
    while step < cfg.steps:
        for batch in loader:
            if step >= cfg.steps:
                break
            clean, ks = rotate_batch(batch["image"], generator)
            masked, mask = mask_cubes(clean, cfg.mask_cubes, cfg.mask_fraction, generator)
            clean, masked, mask, ks = (t.to(device) for t in (clean, masked, mask, ks))
            recon = model(masked)
            weights = 1.0 + 4.0 * mask.float()
            inpaint = (weights * (recon - clean).abs()).sum() / weights.sum()
            pooled = hook.value.mean(dim=tuple(range(2, hook.value.ndim)))
            rotation = F.cross_entropy(rotation_head(pooled), ks)
            loss = inpaint + cfg.rotation_weight * rotation
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            rows.append(
                {
                    "step": step,
                    "loss": loss.item(),
                    "inpaint": inpaint.item(),
                    "rotation": rotation.item(),
                    "lr": scheduler.get_last_lr()[0],
                    "elapsed_s": time.perf_counter() - start,
                }
            )
            bar.update(1)
            if step % 50 == 0 or step == cfg.steps:
                tqdm.write(
                    f"step {step}/{cfg.steps}: inpainting {inpaint.item():.4f}, "
                    f"rotation {rotation.item():.4f}"
                )
    bar.close()
    payload = {
        "format": "medtl",
        "state_dict": model.state_dict(),
        "model": to_dict(model_cfg),
        "num_classes": channels,
        "in_channels": channels,
        "classes": {},
        "patch_size": list(cfg.patch_size),
        "step": step,
        "val_dice": float("nan"),
        "tags": {"stage": "pretrain_ssl", "objective": "inpainting+rotation"},
    }
    atomic_write(out / "checkpoint.pt", lambda tmp: torch.save(payload, tmp))

    def write_curves(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)

    atomic_write(out / "curves.csv", write_curves)
    tail = rows[-min(20, len(rows)) :]
    summary = {
        "steps": step,
        "images": len(images),
        "final_inpaint_loss": float(np.mean([r["inpaint"] for r in tail])),
        "final_rotation_loss": float(np.mean([r["rotation"] for r in tail])),
        "first_inpaint_loss": rows[0]["inpaint"],
        "seconds": time.perf_counter() - start,
        "config": to_dict(cfg),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def pretrain_ssl_from_manifests(
    manifests: list[Path],
    plan_path: Path,
    out: Path,
    model_cfg: ModelConfig,
    cfg: SSLConfig,
    seed: int,
    device_name: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Self-supervised pretraining on every image of the given ingest manifests.

    Images are preprocessed in memory with the target's plan (labels are not read), so
    the encoder sees the grid and intensity scale the arms will use.
    """
    from medtl.io.ingest import read_manifest
    from medtl.models.networks import torch_device
    from medtl.preprocess.case import preprocess_files
    from medtl.preprocess.plan import Plan
    from medtl.provenance import write_run_record

    plan = Plan.load(plan_path)
    images = []
    for manifest in manifests:
        df = read_manifest(manifest)
        for row in tqdm(
            list(df.itertuples()),
            desc=f"ssl data {Path(manifest).parent.name}",
            disable=not progress,
        ):
            images.append(torch.from_numpy(preprocess_files(Path(row.image), None, plan).image))
    channels = {int(im.shape[0]) for im in images}
    if len(channels) > 1:
        raise InputError(
            manifests[0],
            f"images with different channel counts {sorted(channels)}",
            "pretrain on data sets with the same channels as the target",
        )
    device = torch_device(device_name)
    write_run_record(
        Path(out) / "run.json",
        {"model": to_dict(model_cfg), "pretrain_ssl": to_dict(cfg)},
        seed=seed,
        images=len(images),
        device=str(device),
    )
    return pretrain_ssl(images, model_cfg, cfg, Path(out), seed, device, progress)
