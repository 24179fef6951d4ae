"""The sliding window's size for one case: the training patch, the whole case, or given.

A convolutional network trained on patches takes any input whose sides are multiples of
its downsampling factor, so a small case can run in fewer, larger windows
(``predict.window: image``): the demo's 48 × 48 × 24 cases take 8 windows of the
32 × 32 × 16 patch, each voxel computed up to 8 times, or 2 windows of 48 × 48 × 16.
Per axis the side is chosen that computes the fewest voxels (windows × side): the
largest window that fits is not it, as a 137-voxel axis takes 2 windows of 128 (256
voxels) but also 2 of 96 (192). The window never exceeds the case: padding a case out to
a window (48 × 48 × 32, a quarter of it zeros) lowered the demo's Dice from 0.93 to 0.78,
where 48 × 48 × 16 kept it (docs/benchmarks.md). :func:`prediction_window` decides; it
needs no torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from medtl.kernel.errors import ConfigError

#: ``image`` uses one window over the case while it has at most this many times the
#: patch's voxels; a larger case (a CT volume) would need gigabytes for its activations
#: and runs with the patch.
IMAGE_WINDOW_CAP = 8


def windows_along(side: int, window: int, overlap: float) -> int:
    """Windows of ``window`` voxels that MONAI's sliding window places along a ``side``.

    Example:
        >>> windows_along(137, 128, 0.5), windows_along(137, 96, 0.5), windows_along(20, 32, 0.5)
        (2, 2, 1)
    """
    if side <= window:
        return 1
    step = max(int(window * (1 - overlap)), 1)
    return math.ceil((side - window) / step) + 1


def fewest_voxels(side: int, patch: int, multiple: int, overlap: float) -> int:
    """The window side, a multiple of ``multiple`` from ``patch`` up to ``side``, that
    computes the fewest voxels along one axis (windows × side; the larger on a tie).

    Example:
        >>> fewest_voxels(137, 64, 16, 0.5), fewest_voxels(48, 32, 16, 0.5)
        (96, 48)
    """
    sizes = range(patch, max(patch, int(side)) + 1, multiple)
    return min(sizes, key=lambda w: (windows_along(side, w, overlap) * w, -w))


def prediction_window(
    image_shape: Sequence[int],
    patch: Sequence[int],
    window: str | Sequence[int],
    multiple: int,
    overlap: float = 0.5,
) -> list[int]:
    """The window to slide over a case of ``image_shape`` (spatial sides).

    Args:
        image_shape: the case's spatial shape on the preprocessed grid.
        patch: the training patch.
        window: ``predict.window``: ``patch``; ``image``, per axis the multiple of
            ``multiple`` between the patch and the case's side that computes the fewest
            voxels (:func:`fewest_voxels`; the patch's voxels times at most
            :data:`IMAGE_WINDOW_CAP`, else the patch); or three sides.
        multiple: what every side of the network's input must be a multiple of; 0 when
            the network takes only its patch (``primus``).
        overlap: ``predict.overlap``, which sets how many windows a side takes.

    Raises:
        ConfigError: three sides that the network cannot take.

    Example:
        >>> prediction_window((48, 48, 24), (32, 32, 16), "image", 16)
        [48, 48, 16]
        >>> prediction_window((137, 137, 50), (64, 64, 32), "image", 16)
        [96, 96, 48]
        >>> prediction_window((48, 48, 24), (32, 32, 16), "patch", 16)
        [32, 32, 16]
        >>> prediction_window((512, 512, 120), (32, 32, 16), "image", 16)  # too large
        [32, 32, 16]
        >>> prediction_window((48, 48, 24), (32, 32, 16), "image", 0)  # primus
        [32, 32, 16]
    """
    patch = [int(p) for p in patch]
    if window == "patch":
        return patch
    if window == "image":
        if multiple <= 0:
            return patch
        sides = [
            fewest_voxels(int(s), p, multiple, overlap)
            for s, p in zip(image_shape, patch, strict=True)
        ]
        return sides if math.prod(sides) <= IMAGE_WINDOW_CAP * math.prod(patch) else patch
    sides = [int(w) for w in window]
    if sides == patch:
        return sides
    if multiple <= 0:
        raise ConfigError(
            f"predict.window: got {sides}; this network is built for its training patch "
            f"{patch} and takes no other window. How to fix: window: patch"
        )
    if any(s % multiple for s in sides):
        fixed = [max(multiple, round(s / multiple) * multiple) for s in sides]
        raise ConfigError(
            f"predict.window: got {sides}; the network needs every side to be a multiple "
            f"of {multiple}. How to fix: use e.g. {fixed}, or window: image"
        )
    return sides
