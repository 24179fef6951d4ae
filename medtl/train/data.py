"""Training data: cached preprocessed cases → MONAI random patches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.data import DataLoader, Dataset, list_data_collate
from monai.transforms import (
    Compose,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandGaussianNoised,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    SpatialPadd,
)

from medtl.config import AugmentConfig
from medtl.preprocess.case import load_case


def load_training_cases(
    paths: Sequence[Path], label_map: dict[int, int] | None = None
) -> list[dict]:
    """Load preprocessed cases into memory once (no re-resampling per epoch).

    Args:
        paths: ``.npz`` files from the preprocess stage.
        label_map: optional remapping of label values (e.g. source classes → task classes).
    """
    items = []
    for p in paths:
        case = load_case(Path(p))
        if case.label is None:
            raise ValueError(f"{p}: a training case needs a label")
        label = case.label.astype(np.int64)
        if label_map:
            label = np.vectorize(lambda v: label_map.get(int(v), 0))(label)
        items.append(
            {
                "image": torch.from_numpy(case.image),
                "label": torch.from_numpy(label[None]),
                "case": Path(p).stem,
            }
        )
    return items


def training_transform(
    patch_size: Sequence[int], augment: AugmentConfig, pos_fraction: float, samples: int
) -> Compose:
    """Random patch sampling and augmentation, with MONAI's dictionary transforms."""
    keys = ["image", "label"]
    # Rotating by 90 degrees in the x-y plane swaps the patch's x and y sides, so it is
    # only applied to patches with equal x and y sides.
    rotate = (
        [RandRotate90d(keys, prob=augment.rotate90, spatial_axes=(0, 1))]
        if patch_size[0] == patch_size[1]
        else []
    )
    return Compose(
        [
            SpatialPadd(keys, spatial_size=list(patch_size)),
            RandCropByPosNegLabeld(
                keys,
                label_key="label",
                spatial_size=list(patch_size),
                pos=pos_fraction,
                neg=1.0 - pos_fraction,
                num_samples=samples,
            ),
            RandFlipd(keys, prob=augment.flip, spatial_axis=0),
            RandFlipd(keys, prob=augment.flip, spatial_axis=1),
            RandFlipd(keys, prob=augment.flip, spatial_axis=2),
            *rotate,
            RandScaleIntensityd("image", factors=augment.intensity_scale, prob=0.5),
            RandShiftIntensityd("image", offsets=augment.intensity_shift, prob=0.5),
            RandGaussianNoised("image", prob=augment.noise, std=0.1),
        ]
    )


def infinite_batches(
    items: list[dict],
    patch_size: Sequence[int],
    batch_size: int,
    augment: AugmentConfig,
    pos_fraction: float,
    seed: int,
) -> Iterator[dict]:
    """Endless stream of augmented patch batches, reproducible from ``seed``.

    Each case yields ``batch_size`` patches per visit (one case per batch), which keeps
    the loader cheap on small CPU machines.
    """
    transform = training_transform(patch_size, augment, pos_fraction, batch_size)
    transform.set_random_state(seed=seed)
    dataset = Dataset([{k: v for k, v in it.items() if k != "case"} for it in items], transform)
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        dataset,
        batch_size=1,
        shuffle=True,
        num_workers=0,
        collate_fn=list_data_collate,
        generator=generator,
    )
    while True:
        yield from loader
