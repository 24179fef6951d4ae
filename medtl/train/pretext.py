"""The pretext tasks of self-supervised pretraining and the network that learns them.

Two tasks from the literature of 3-D medical self-supervision: **inpainting** (random
cubes of each patch blanked out, the network reconstructs the whole patch) and
**rotation prediction** (each patch turned by k × 90° in the axial plane, a small head
on the deepest encoder features predicts k). :func:`pretext_network` joins the
segmentation network (one output per input channel) and the rotation head.
"""

from __future__ import annotations

import torch

from medtl.config import ModelConfig
from medtl.kernel.errors import InputError
from medtl.models.networks import build_network, get_architecture
from medtl.train import distributed


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


class DeepestFeatures:
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


class PretextNet(torch.nn.Module):
    """The network and the rotation head as one module (one DDP wrapper for both).

    ``forward`` returns the reconstruction and the rotation logits, pooled from the
    encoder's deepest features caught by ``hook``.
    """

    def __init__(
        self, model: torch.nn.Module, head: torch.nn.Module, hook: DeepestFeatures
    ) -> None:
        super().__init__()
        self.model = model
        self.head = head
        self._hook = hook

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        recon = self.model(x)
        deep = self._hook.value
        return recon, self.head(deep.mean(dim=tuple(range(2, deep.ndim))))


def pretext_network(
    model_cfg: ModelConfig, channels: int, patch_size: tuple[int, int, int], device: torch.device
) -> PretextNet:
    """The segmentation network with one output per channel, and the rotation head."""
    arch = get_architecture(model_cfg.name)
    model = distributed.sync_batchnorm(
        build_network(model_cfg, channels, channels, patch_size), device
    )
    model = model.to(device)
    hook = DeepestFeatures()
    _deepest_module(model, arch.encoder_prefixes).register_forward_hook(hook)
    rotation_head = torch.nn.LazyLinear(4).to(device)
    model.eval()  # materialise the lazy head without touching normalisation statistics
    with torch.no_grad():
        model(torch.zeros(1, channels, *patch_size, device=device))
        rotation_head(hook.value.mean(dim=tuple(range(2, hook.value.ndim))))
    model.train()
    return PretextNet(model, rotation_head, hook)
