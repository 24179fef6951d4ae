"""The sliding window's size for one case: the training patch, the whole case, or given.

A convolutional network trained on patches takes larger inputs, so a case can run in
fewer, larger windows (``predict.window: image``): fewer voxels computed twice where
windows overlap. Per axis a side is chosen from the patch up to the case's side, and the
three together compute the fewest voxels (windows × side per axis) while one window
holds at most :data:`IMAGE_WINDOW_CAP` times the patch's voxels. The largest window that
fits is not it: a 137-voxel axis takes 2 windows of 128 (256 voxels) but also 2 of 96
(192). A network that takes any side (``basicunet``, which pads where a pooled side is
odd) runs on the case's own sides, one window when it fits: a CT case of 137 × 137 × 50
at 3 × 3 × 6 mm in one pass instead of 8 windows of 96 × 96 × 48 (4× less time for the
network). Others take multiples of their downsampling factor. The window never exceeds
the case: padding a case out to a window lowered the demo's Dice (0.93 to 0.78 with
zeros; 0.91 to 0.83 with mirrored or repeated edges for one model), where the case's own
sides kept it (docs/benchmarks.md). :func:`prediction_window` decides; it needs no torch.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from medtl.kernel.errors import ConfigError

#: One window of ``image`` holds at most this many times the patch's voxels, and one
#: network call (mirrored copies stacked) as many: a basicunet window of 16 × 32 × 32 × 16
#: voxels takes about 0.5 KB a voxel on the CPU (140 MB); a whole CT volume would take
#: gigabytes, and runs in several windows.
IMAGE_WINDOW_CAP = 16


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


def side_options(side: int, patch: int, multiple: int, overlap: float) -> list[tuple[int, int]]:
    """``(window side, windows)`` along one axis: for each number of windows, the smallest
    multiple of ``multiple`` from ``patch`` up to ``side`` that covers the axis with it
    (for ``multiple`` 1, a network of any side, from the smaller of patch and side).

    Example:
        >>> side_options(137, 64, 16, 0.5)
        [(64, 4), (80, 3), (96, 2)]
        >>> side_options(137, 64, 1, 0.5)[-2:], side_options(20, 32, 16, 0.5)
        ([(92, 2), (137, 1)], [(32, 1)])
        >>> side_options(20, 32, 1, 0.5)
        [(20, 1)]
    """
    # a network of any side runs a case smaller than the patch on its own side, unpadded
    low = min(patch, int(side)) if multiple == 1 else patch
    smallest: dict[int, int] = {}
    for w in range(low, max(patch, int(side)) + 1, multiple):
        smallest.setdefault(windows_along(side, w, overlap), w)
    return sorted((w, n) for n, w in smallest.items())


def windows_per_call(patch: Sequence[int], window: Sequence[int], sw_batch_size: int) -> int:
    """How many windows one network call takes: ``predict.sw_batch_size``, but windows
    larger than the patch only as many as hold :data:`IMAGE_WINDOW_CAP` patches' voxels
    (at least one), so a larger window does not multiply the memory of a call.

    Example:
        >>> windows_per_call((32, 32, 16), (32, 32, 16), 8)
        8
        >>> windows_per_call((64, 64, 32), (137, 137, 50), 4)  # 16 patches hold 2
        2
    """
    if [int(w) for w in window] == [int(p) for p in patch]:
        return sw_batch_size
    room = IMAGE_WINDOW_CAP * math.prod(patch) // math.prod(window)
    return max(1, min(sw_batch_size, room))


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
            voxels (windows × side per axis, :func:`side_options`) in windows of at
            most :data:`IMAGE_WINDOW_CAP` times the patch's voxels; or three sides.
        multiple: what every side of the network's input must be a multiple of; 0 when
            the network takes only its patch (``primus``); 1 when it takes any side.
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
        >>> prediction_window((137, 137, 50), (64, 64, 32), "image", 1)  # any side
        [137, 137, 50]
        >>> prediction_window((164, 164, 60), (64, 64, 32), "image", 16)
        [112, 112, 48]
        >>> prediction_window((300, 300, 200), (64, 64, 32), "image", 1)  # over the cap
        [200, 300, 34]
        >>> prediction_window((48, 48, 24), (32, 32, 16), "image", 0)  # primus
        [32, 32, 16]
    """
    patch = [int(p) for p in patch]
    if window == "patch":
        return patch
    if window == "image":
        if multiple <= 0:
            return patch
        options = [
            side_options(int(s), p, multiple, overlap)
            for s, p in zip(image_shape, patch, strict=True)
        ]
        cap = IMAGE_WINDOW_CAP * math.prod(patch)
        fits = [c for c in itertools.product(*options) if math.prod(w for w, _ in c) <= cap]
        # the fewest voxels computed; on a tie the fewer windows
        best = min(fits, key=lambda c: (math.prod(w * n for w, n in c), math.prod(n for _, n in c)))
        return [w for w, _ in best]
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
