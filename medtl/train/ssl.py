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

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose, RandFlipd, RandSpatialCropd, SpatialPadd
from monai.utils import set_determinism
from tqdm.auto import tqdm

from medtl.config import ModelConfig, to_dict
from medtl.kernel.errors import ConfigError, InputError
from medtl.models.networks import check_patch_size
from medtl.train import distributed
from medtl.train.data import SeededStream, derive_seed
from medtl.train.engine import Checkpoints, TrainingEngine, lr_factor, write_checkpoint
from medtl.train.memory import training_hint
from medtl.train.pretext import mask_cubes, pretext_network, rotate_batch


@dataclass(frozen=True)
class SSLConfig:
    """The self-supervised schedule.

    Attributes:
        steps: optimiser steps.
        batch_size: patches per step.
        patch_size: patch in voxels (x and y equal, for the rotations).
        lr: AdamW base learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: linear learning-rate warm-up over the first N steps (0: none), then
            cosine decay to zero (:func:`medtl.train.engine.lr_factor`).
        mask_cubes: blanked cubes per patch.
        mask_fraction: side of each cube as a share of the patch side.
        masked_voxel_weight: weight of a blanked voxel in the inpainting loss (an
            unblanked voxel weighs 1).
        rotation_weight: weight of the rotation loss against the inpainting loss.
        checkpoint_every: save the full pretraining state every N steps, so that a
            killed job resumes where it stopped.
    """

    steps: int = 300
    batch_size: int = 2
    patch_size: tuple[int, int, int] = (32, 32, 16)
    lr: float = 2e-3
    weight_decay: float = 1e-5
    warmup_steps: int = 0
    mask_cubes: int = 6
    mask_fraction: float = 0.25
    masked_voxel_weight: float = 5.0
    rotation_weight: float = 0.1
    checkpoint_every: int = 50


class ImageStream(SeededStream):
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
        super().__init__(seed)
        self.images = images
        self.batch_size = min(cfg.batch_size, len(images))
        self.per_pass = len(images) // self.batch_size

    def __next__(self) -> torch.Tensor:
        epoch, pos = divmod(self.index, self.per_pass)
        g = torch.Generator().manual_seed(derive_seed(self.seed, self._ORDER, epoch))
        order = torch.randperm(len(self.images), generator=g).tolist()
        chosen = order[pos * self.batch_size : (pos + 1) * self.batch_size]
        self.transform.set_random_state(seed=derive_seed(self.seed, self._TRANSFORM, self.index))
        patches = [self.transform({"image": self.images[i]})["image"] for i in chosen]
        self.index += 1
        return torch.stack([p.as_tensor() if hasattr(p, "as_tensor") else p for p in patches])


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
    if not 0 <= cfg.warmup_steps < cfg.steps:
        raise ConfigError(
            f"config key 'pretrain_ssl.warmup_steps': got {cfg.warmup_steps}; expected 0 to "
            f"{cfg.steps - 1} (fewer than pretrain_ssl.steps = {cfg.steps}). How to fix: "
            "lower warmup_steps, e.g. to a tenth of the steps"
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
    world = distributed.world_size()
    distributed.check_batch_size(min(cfg.batch_size, len(images)), "pretrain_ssl.batch_size")
    set_determinism(seed=seed)
    check_patch_size(model_cfg, cfg.patch_size, "pretrain_ssl.patch_size")
    channels = int(images[0].shape[0])
    pretext = pretext_network(model_cfg, channels, cfg.patch_size, device)
    optimizer = torch.optim.AdamW(pretext.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg.steps, cfg.warmup_steps)
    )
    fingerprint = json.dumps(
        [to_dict(model_cfg), to_dict(cfg), int(seed), images_digest(images)], sort_keys=True
    )
    engine = TrainingEngine(
        _PretextTask(pretext, cfg, seed, device),
        modules={"model": pretext.model, "rotation_head": pretext.head},
        optimizer=optimizer,
        scheduler=scheduler,
        batches=ImageStream(images, cfg, seed),
        steps=cfg.steps,
        columns=CURVE_COLUMNS,
        checkpoints=Checkpoints(
            out,
            SSL_FILES,
            fingerprint,
            SSL_STATE_VERSION,
            cfg.checkpoint_every,
            other_runs="a run of other settings or images",
        ),
        section="pretrain_ssl",
        hint=training_hint("pretrain_ssl", cfg.batch_size, cfg.patch_size, world),
        desc="ssl pretrain",
        progress=progress,
    )
    engine.resume()
    engine.run(on_step)
    rows = engine.rows
    tail = rows[-min(20, len(rows)) :]
    summary = {
        "steps": engine.step,
        "images": len(images),
        "final_inpaint_loss": float(np.mean([r["inpaint"] for r in tail])),
        "final_rotation_loss": float(np.mean([r["rotation"] for r in tail])),
        "first_inpaint_loss": rows[0]["inpaint"],
        "processes": world,
        "seconds": engine.elapsed(),
        "config": to_dict(cfg),
    }
    payload = {
        "format": "medtl",
        "state_dict": pretext.model.state_dict(),
        "model": to_dict(model_cfg),
        "num_classes": channels,
        "in_channels": channels,
        "classes": {},
        "patch_size": list(cfg.patch_size),
        "step": engine.step,
        "val_dice": float("nan"),
        "tags": {"stage": "pretrain_ssl", "objective": "inpainting+rotation"},
    }
    engine.finish(summary, lambda: write_checkpoint(out / "checkpoint.pt", payload))
    return summary


@dataclass
class _PretextTask:
    """The pretext steps (a :class:`medtl.train.engine.StepTask`): inpainting + rotation.

    Each batch is turned and blanked with a generator of its own step; the loss is the
    inpainting L1 (blanked voxels weighted ``cfg.masked_voxel_weight``) plus
    ``cfg.rotation_weight`` times the rotation cross-entropy.
    """

    pretext: torch.nn.Module
    cfg: SSLConfig
    seed: int
    device: torch.device
    stopped: bool = False

    def __post_init__(self) -> None:
        self.net = self.pretext
        self.world = distributed.world_size()
        self.extra_weight = self.cfg.masked_voxel_weight - 1.0

    def begin(self, step: int) -> None:
        self.net = distributed.wrap(self.pretext, self.device)  # one wrapper for both parts

    def state(self) -> dict[str, Any]:
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        """Nothing of its own to restore."""

    def prepare(self, batch: torch.Tensor, step: int, run: TrainingEngine) -> tuple:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, 2, step))
        clean, ks = rotate_batch(batch, generator)
        masked, mask = mask_cubes(clean, self.cfg.mask_cubes, self.cfg.mask_fraction, generator)
        # the weighted mean over the whole batch: every rank knows the global weight sum
        total_weight = (1.0 + self.extra_weight * mask.float()).sum()
        clean, masked, mask, ks = (
            distributed.shard(t).to(self.device) for t in (clean, masked, mask, ks)
        )
        return clean, masked, mask, ks, total_weight

    def losses(self, inputs: tuple, step: int) -> dict[str, float]:
        clean, masked, mask, ks, total_weight = inputs
        recon, logits = self.net(masked)
        weights = 1.0 + self.extra_weight * mask.float()
        total = total_weight.to(self.device)
        inpaint = (weights * (recon - clean).abs()).sum() / total * self.world
        rotation = torch.nn.functional.cross_entropy(logits, ks)
        loss = inpaint + self.cfg.rotation_weight * rotation
        loss.backward()
        values = [
            distributed.mean_over_ranks(t.item(), self.device) for t in (loss, inpaint, rotation)
        ]
        return dict(zip(("loss", "inpaint", "rotation"), values, strict=True))

    def after_step(self, step: int, row: dict[str, Any], run: TrainingEngine) -> bool:
        if step % 50 == 0 or step == self.cfg.steps:
            run.say(
                f"step {step}/{self.cfg.steps}: inpainting {row['inpaint']:.4f}, "
                f"rotation {row['rotation']:.4f}"
            )
        return False


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
