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
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import Compose, RandFlipd, RandSpatialCropd, SpatialPadd
from monai.utils import set_determinism
from tqdm.auto import tqdm

from medtl.config import ModelConfig, to_dict
from medtl.kernel.device import out_of_memory_hint
from medtl.kernel.errors import ConfigError, InputError
from medtl.kernel.files import atomic_write, atomic_write_text
from medtl.models.networks import build_network, check_patch_size, get_architecture
from medtl.train import distributed
from medtl.train.data import derive_seed
from medtl.train.health import check_finite_loss
from medtl.train.memory import training_hint
from medtl.train.state import (
    curves_up_to,
    load_state,
    remove_stale_temporaries,
    rng_state,
    save_state,
    set_rng_state,
)


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
        checkpoint_every: save the full pretraining state every N steps, so that a
            killed job resumes where it stopped.
    """

    steps: int = 300
    batch_size: int = 2
    patch_size: tuple[int, int, int] = (32, 32, 16)
    lr: float = 2e-3
    mask_cubes: int = 6
    mask_fraction: float = 0.25
    rotation_weight: float = 0.1
    checkpoint_every: int = 50


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


class ImageStream:
    """Endless, resumable stream of batches of random patches of whole images.

    Every pass visits the images in a new random order, ``batch_size`` at a time (the
    remainder of a pass is dropped; with fewer images than ``batch_size`` a batch holds
    them all). Each image is padded to the patch, cropped at random and flipped at
    random. Batch ``i`` depends only on ``(seed, i)``, so the stream's state is the
    number of batches drawn (:meth:`state_dict`).

    Args:
        images: preprocessed images, each ``(channels, x, y, z)``.
        cfg: the schedule (batch and patch size).
        seed: the stream's seed.

    Example:
        >>> images = [torch.randn(1, 40, 40, 20) for _ in range(3)]
        >>> a = ImageStream(images, SSLConfig(batch_size=2, patch_size=(32, 32, 16)), 0)
        >>> _ = next(a); saved = a.state_dict(); second = next(a)
        >>> b = ImageStream(images, SSLConfig(batch_size=2, patch_size=(32, 32, 16)), 0)
        >>> b.load_state_dict(saved)
        >>> torch.equal(next(b), second), tuple(second.shape)
        (True, (2, 1, 32, 32, 16))
    """

    _ORDER, _TRANSFORM = 0, 1

    def __init__(self, images: list[torch.Tensor], cfg: SSLConfig, seed: int) -> None:
        keys = ["image"]
        self.transform = Compose(
            [
                SpatialPadd(keys, spatial_size=list(cfg.patch_size)),
                RandSpatialCropd(keys, roi_size=list(cfg.patch_size), random_size=False),
                RandFlipd(keys, prob=0.5, spatial_axis=0),
                RandFlipd(keys, prob=0.5, spatial_axis=2),
            ]
        )
        self.images = images
        self.batch_size = min(cfg.batch_size, len(images))
        self.per_pass = len(images) // self.batch_size
        self.seed = int(seed)
        self.index = 0

    def __iter__(self) -> ImageStream:
        return self

    def __next__(self) -> torch.Tensor:
        epoch, pos = divmod(self.index, self.per_pass)
        g = torch.Generator().manual_seed(derive_seed(self.seed, self._ORDER, epoch))
        order = torch.randperm(len(self.images), generator=g).tolist()
        chosen = order[pos * self.batch_size : (pos + 1) * self.batch_size]
        self.transform.set_random_state(seed=derive_seed(self.seed, self._TRANSFORM, self.index))
        patches = [self.transform({"image": self.images[i]})["image"] for i in chosen]
        self.index += 1
        return torch.stack([p.as_tensor() if hasattr(p, "as_tensor") else p for p in patches])

    def state_dict(self) -> dict[str, int]:
        """The stream's position (plain integers)."""
        return {"seed": self.seed, "index": self.index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a position saved by :meth:`state_dict`."""
        if int(state["seed"]) != self.seed:
            raise ValueError(
                f"ImageStream: the saved stream has seed {state['seed']}, this one "
                f"{self.seed}; expected the same seed"
            )
        self.index = int(state["index"])


class _PretextNet(torch.nn.Module):
    """The network and the rotation head as one module (one DDP wrapper for both).

    ``forward`` returns the reconstruction and the rotation logits, pooled from the
    encoder's deepest features caught by ``hook``.
    """

    def __init__(
        self, model: torch.nn.Module, head: torch.nn.Module, hook: _DeepestFeatures
    ) -> None:
        super().__init__()
        self.model = model
        self.head = head
        self._hook = hook

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        recon = self.model(x)
        deep = self._hook.value
        return recon, self.head(deep.mean(dim=tuple(range(2, deep.ndim))))


#: The files the stage writes into its folder.
SSL_FILES = ("checkpoint.pt", "last.pt", "curves.csv", "summary.json", "run.json")

#: Version of the ``last.pt`` layout; a state of another version is not resumed.
SSL_STATE_VERSION = 1


def images_digest(images: list[torch.Tensor]) -> str:
    """SHA-256 of the images' shapes and voxels (identifies the data of a resumable run).

    Example:
        >>> images_digest([torch.zeros(1, 2, 2, 2)]) == images_digest([torch.zeros(1, 2, 2, 2)])
        True
    """
    h = hashlib.sha256()
    for im in images:
        arr = im.detach().cpu().contiguous().numpy()
        h.update(f"{arr.dtype}{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def pretrain_ssl(
    images: list[torch.Tensor],
    model_cfg: ModelConfig,
    cfg: SSLConfig,
    out: Path,
    seed: int,
    device: torch.device,
    progress: bool = True,
    on_step: Callable[[int, torch.nn.Module], None] | None = None,
) -> dict[str, Any]:
    """Pretrain a network on unlabelled images; writes ``out/checkpoint.pt`` and curves.

    Resumable and data-parallel like :func:`medtl.train.loop.train_run`: the full state
    (network, rotation head, optimiser, schedule, step, curve rows, every random
    generator and the position of the patch stream) is saved atomically to
    ``out/last.pt`` every ``cfg.checkpoint_every`` steps and at the end; a run whose
    ``last.pt`` was saved with the same settings, seed and images continues from it and
    ends exactly as an uninterrupted run (on the CPU). Under ``torchrun`` every rank
    draws the same batch and trains on its slice; rank 0 alone writes.

    Args:
        images: preprocessed images, each ``(channels, x, y, z)``.
        model_cfg: the segmentation network (the arms' architecture).
        cfg: the schedule.
        out: output folder.
        seed: seed of every random choice.
        device: torch device (``cuda`` becomes ``cuda:LOCAL_RANK`` under ``torchrun``).
        progress: show a progress bar (rank 0 only).
        on_step: called as ``on_step(step, model)`` after each optimiser step (and its
            saving, if any), e.g. to watch or interrupt the run.

    Returns:
        A summary (final losses, steps, seconds).

    Raises:
        InputError: no images, or a patch the rotation task cannot use.
        ConfigError: a batch the processes cannot share.
        DeviceMemoryError: the GPU ran out of memory (names the settings to lower).
    """
    if not images:
        raise InputError(out, "no images to pretrain on", "give images in the data sets")
    if cfg.patch_size[0] != cfg.patch_size[1]:
        raise InputError(
            "pretrain_ssl.patch_size",
            f"got {list(cfg.patch_size)}; the rotation task needs equal x and y sides",
            "use e.g. [32, 32, 16]",
        )
    if cfg.checkpoint_every < 1:
        raise ConfigError(
            f"config key 'pretrain_ssl.checkpoint_every': got {cfg.checkpoint_every}; "
            "expected 1 or more steps. How to fix: set e.g. checkpoint_every: 50"
        )
    with distributed.process_group(device) as rank_device:
        return _pretrain(images, model_cfg, cfg, Path(out), seed, rank_device, progress, on_step)


def _pretrain(
    images: list[torch.Tensor],
    model_cfg: ModelConfig,
    cfg: SSLConfig,
    out: Path,
    seed: int,
    device: torch.device,
    progress: bool,
    on_step: Callable[[int, torch.nn.Module], None] | None,
) -> dict[str, Any]:
    """The body of :func:`pretrain_ssl`, in the process group (if any)."""
    main = distributed.is_main()
    say = tqdm.write if main else (lambda *a, **k: None)
    world = distributed.world_size()
    distributed.check_batch_size(min(cfg.batch_size, len(images)), "pretrain_ssl.batch_size")
    set_determinism(seed=seed)
    arch = get_architecture(model_cfg.name)
    check_patch_size(model_cfg, cfg.patch_size, "pretrain_ssl.patch_size")
    channels = int(images[0].shape[0])
    model = distributed.sync_batchnorm(build_network(model_cfg, channels, channels), device)
    model = model.to(device)
    hook = _DeepestFeatures()
    _deepest_module(model, arch.encoder_prefixes).register_forward_hook(hook)
    rotation_head = torch.nn.LazyLinear(4).to(device)
    model.eval()  # materialise the lazy head without touching normalisation statistics
    with torch.no_grad():
        model(torch.zeros(1, channels, *cfg.patch_size, device=device))
        rotation_head(hook.value.mean(dim=tuple(range(2, hook.value.ndim))))
    model.train()
    pretext = _PretextNet(model, rotation_head, hook)
    optimizer = torch.optim.AdamW(pretext.parameters(), lr=cfg.lr, weight_decay=1e-5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps))
    )
    stream = ImageStream(images, cfg, seed)
    fingerprint = json.dumps(
        [to_dict(model_cfg), to_dict(cfg), int(seed), images_digest(images)], sort_keys=True
    )
    rows: list[dict[str, Any]] = []
    step, elapsed_before = 0, 0.0
    last = out / "last.pt"
    if main:
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out, SSL_FILES)
    state = load_state(last)
    if state is not None and (
        state.get("fingerprint") != fingerprint or state.get("version") != SSL_STATE_VERSION
    ):
        say(f"{last}: saved by a run of other settings or images; starting over")
        state = None
    if state is not None:
        model.load_state_dict(state["model"])
        rotation_head.load_state_dict(state["rotation_head"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = int(state["step"])
        rows = curves_up_to(state["curves"], step)
        elapsed_before = float(state["elapsed_s"])
        stream.load_state_dict(state["stream"])
        set_rng_state(state["rng"])
        say(f"resuming from {last} at step {step} of {cfg.steps}")
    start = time.perf_counter()

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - start

    def save() -> None:
        _write_curves(out / "curves.csv", rows)
        save_state(
            last,
            {
                "version": SSL_STATE_VERSION,
                "fingerprint": fingerprint,
                "model": model.state_dict(),
                "rotation_head": rotation_head.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": step,
                "curves": rows,
                "stream": stream.state_dict(),
                "rng": rng_state(),
                "elapsed_s": elapsed(),
                "world_size": world,
            },
        )

    hint = training_hint("pretrain_ssl", cfg.batch_size, cfg.patch_size, world)
    net = distributed.wrap(pretext, device)
    bar = tqdm(
        total=cfg.steps,
        initial=step,
        disable=not (progress and main),
        desc="ssl pretrain",
        unit="step",
        mininterval=2.0,
    )
    while step < cfg.steps:
        generator = torch.Generator().manual_seed(derive_seed(seed, 2, step))
        clean, ks = rotate_batch(next(stream), generator)
        masked, mask = mask_cubes(clean, cfg.mask_cubes, cfg.mask_fraction, generator)
        # the weighted mean over the whole batch: every rank knows the global weight sum
        total_weight = (1.0 + 4.0 * mask.float()).sum()
        clean, masked, mask, ks = (
            distributed.shard(t).to(device) for t in (clean, masked, mask, ks)
        )
        with out_of_memory_hint(f"pretrain_ssl step {step + 1}", *hint):
            recon, logits = net(masked)
            weights = 1.0 + 4.0 * mask.float()
            inpaint = (weights * (recon - clean).abs()).sum() / total_weight.to(device) * world
            rotation = F.cross_entropy(logits, ks)
            loss = inpaint + cfg.rotation_weight * rotation
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            values = [
                distributed.mean_over_ranks(t.item(), device) for t in (loss, inpaint, rotation)
            ]
            check_finite_loss(values[0], step + 1, "pretrain_ssl")
            optimizer.step()
        scheduler.step()
        step += 1
        rows.append(
            {
                "step": step,
                "loss": values[0],
                "inpaint": values[1],
                "rotation": values[2],
                "lr": scheduler.get_last_lr()[0],
                "elapsed_s": elapsed(),
            }
        )
        bar.update(1)
        if step % 50 == 0 or step == cfg.steps:
            say(f"step {step}/{cfg.steps}: inpainting {values[1]:.4f}, rotation {values[2]:.4f}")
        if main and (step % cfg.checkpoint_every == 0 or step == cfg.steps):
            save()
        if on_step is not None:
            on_step(step, model)
    bar.close()
    tail = rows[-min(20, len(rows)) :]
    summary = {
        "steps": step,
        "images": len(images),
        "final_inpaint_loss": float(np.mean([r["inpaint"] for r in tail])),
        "final_rotation_loss": float(np.mean([r["rotation"] for r in tail])),
        "first_inpaint_loss": rows[0]["inpaint"],
        "processes": world,
        "seconds": elapsed(),
        "config": to_dict(cfg),
    }
    if main:
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
        _write_curves(out / "curves.csv", rows)
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    distributed.barrier()
    return summary


def _write_curves(path: Path, rows: list[dict[str, Any]]) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CURVE_COLUMNS)
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write)


#: The columns of the stage's ``curves.csv``.
CURVE_COLUMNS = ["step", "loss", "inpaint", "rotation", "lr", "elapsed_s"]


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
    from medtl.io.manifest import read_manifest
    from medtl.kernel.device import torch_device
    from medtl.preprocess.case import preprocess_files
    from medtl.preprocess.plan import Plan
    from medtl.provenance import write_run_record

    plan = Plan.load(plan_path)
    images, image_files = [], []
    for manifest in manifests:
        df = read_manifest(manifest)
        for row in tqdm(
            list(df.itertuples()),
            desc=f"ssl data {Path(manifest).parent.name}",
            disable=not progress,
        ):
            images.append(torch.from_numpy(preprocess_files(Path(row.image), None, plan).image))
            image_files.append(Path(row.image))
    channels = {int(im.shape[0]) for im in images}
    if len(channels) > 1:
        raise InputError(
            manifests[0],
            f"images with different channel counts {sorted(channels)}",
            "pretrain on data sets with the same channels as the target",
        )
    device = torch_device(device_name)
    if distributed.is_main():
        write_run_record(
            Path(out) / "run.json",
            {"model": to_dict(model_cfg), "pretrain_ssl": to_dict(cfg)},
            inputs={"images": image_files, "plan": [Path(plan_path)]},
            seed=seed,
            images=len(images),
            device=str(device),
            processes=distributed.world_size(),
        )
    return pretrain_ssl(images, model_cfg, cfg, Path(out), seed, device, progress)
