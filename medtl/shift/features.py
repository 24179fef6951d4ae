"""The encoder's own view of a set of cases: its pooled features on patches of each case.

For every case, a few patches (positions drawn from a seeded generator, uniformly over
the preprocessed case: the same rule for both sets, because a rule biased towards the
labels would compare different structures whenever the two sets label different things)
go through the network in eval mode under :func:`torch.inference_mode`. A forward hook
on each encoder stage (:func:`medtl.models.stages.encoder_stages`: BasicUNet's ``conv_0``,
``down_1`` … ``down_4``, nnU-Net's ``encoder.stem`` and ``encoder.stages.<i>``, …) keeps the
average and standard deviation of its output per channel, and the forward pass stops
once the deepest stage has run, so the decoder never runs. A case's feature vector is its patches'
vectors averaged: one vector per case, each stage's channels side by side.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from medtl.models.networks import Architecture
from medtl.models.stages import encoder_stages


class _DeepestStageDone(Exception):
    """Raised by the hook of the deepest stage: the rest of the network is not needed."""


def _runnable(module: nn.Module) -> nn.Module:
    """The module whose forward runs: containers that are never called give their last child."""
    while isinstance(module, nn.ModuleList | nn.ModuleDict) and len(module):
        module = list(module.children())[-1]
    return module


def stage_modules(model: nn.Module, arch: Architecture) -> list[tuple[str, nn.Module]]:
    """Each encoder stage's name and the module whose output stands for it (its last)."""
    out = []
    for stage in encoder_stages(model, arch):
        names = [p.rstrip(".") for p in stage.prefixes]
        modules = [m for n, m in model.named_modules() if n in names]
        if modules:
            out.append((stage.name, _runnable(modules[-1])))
    return out


def _pooled(output: object) -> torch.Tensor:
    """Per channel, the average and sd of a stage's output ``(batch, channels, ...)``.

    The sd matters: instance-normalised networks (BasicUNet, nnU-Net's) rescale every
    patch, so averages alone barely change with noise or contrast, while the spread does.
    """
    tensor = output[0] if isinstance(output, tuple | list) else output
    flat = tensor.float().flatten(2)
    return torch.cat([flat.mean(dim=2), flat.std(dim=2)], dim=1)


def _patch_starts(
    shape: Sequence[int], patch: Sequence[int], n: int, rng: np.random.Generator
) -> list[tuple[int, ...]]:
    """``n`` corners of patches inside a case of ``shape`` (0 where the case is smaller)."""
    highs = [max(0, s - p) for s, p in zip(shape, patch, strict=True)]
    return [tuple(int(rng.integers(0, h + 1)) for h in highs) for _ in range(n)]


def _patch(image: np.ndarray, start: Sequence[int], patch: Sequence[int]) -> np.ndarray:
    """One patch of a ``(channels, x, y, z)`` image, zero-padded where the image is smaller."""
    sl = (slice(None), *(slice(s, s + p) for s, p in zip(start, patch, strict=True)))
    cut = image[sl]
    pad = [(0, 0)] + [(0, p - c) for p, c in zip(patch, cut.shape[1:], strict=True)]
    return np.pad(cut, pad)


def case_features(
    model: nn.Module,
    arch: Architecture,
    images: Sequence[np.ndarray],
    patch: Sequence[int],
    patches_per_case: int,
    seed: int,
) -> np.ndarray:
    """Pooled encoder features of each case, ``(cases, features)``.

    Args:
        model: the network holding the pretrained encoder (its decoder never runs).
        arch: its architecture (which parameters are the encoder, its stages).
        images: preprocessed cases, each ``(channels, x, y, z)``.
        patch: patch size in voxels (the training patch).
        patches_per_case: patches per case, averaged.
        seed: seed of the patch positions (case ``i`` draws from ``(seed, i)``).

    Example:
        >>> from medtl.config import ModelConfig
        >>> from medtl.models.networks import build_network, get_architecture
        >>> cfg = ModelConfig(features=(2, 2, 2, 2, 2, 2))
        >>> net = build_network(cfg, 1, 2)
        >>> x = [np.zeros((1, 40, 20, 20), np.float32)]
        >>> case_features(net, get_architecture("basicunet"), x, (32, 16, 16), 2, 0).shape
        (1, 20)
    """
    stages = stage_modules(model, arch)
    pooled: dict[int, torch.Tensor] = {}
    deepest = len(stages) - 1

    def hook(index: int):
        def keep(module, inputs, output):
            pooled[index] = _pooled(output)
            if index == deepest:
                raise _DeepestStageDone

        return keep

    handles = [m.register_forward_hook(hook(i)) for i, (_, m) in enumerate(stages)]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    rows = []
    try:
        with torch.inference_mode():
            for i, image in enumerate(images):
                rng = np.random.default_rng([seed, i])
                starts = _patch_starts(image.shape[1:], patch, patches_per_case, rng)
                batch = np.stack([_patch(image, s, patch) for s in starts])
                pooled.clear()
                with contextlib.suppress(_DeepestStageDone):
                    model(torch.from_numpy(batch).float().to(device))
                per_patch = torch.cat([pooled[k] for k in sorted(pooled)], dim=1)
                rows.append(per_patch.mean(dim=0).cpu().numpy().astype(np.float64))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return np.stack(rows)
