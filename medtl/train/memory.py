"""Out of GPU memory: fail with the setting to lower, not a CUDA traceback.

Example:
    >>> try:
    ...     with out_of_memory_hint("training", {"train.batch_size": 4}, "lower train.batch_size"):
    ...         raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    ... except DeviceMemoryError as exc:
    ...     print(exc)  # doctest: +NORMALIZE_WHITESPACE
    training ran out of device memory (CUDA out of memory. Tried to allocate 2.00 GiB);
    settings now: train.batch_size = 4. How to fix: lower train.batch_size
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch

from medtl.io.errors import MedtlError


class DeviceMemoryError(MedtlError):
    """The GPU (or other accelerator) ran out of memory; says which setting to lower."""


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether an exception is an accelerator's out-of-memory error.

    Example:
        >>> is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory."))
        True
        >>> is_out_of_memory(RuntimeError("shape mismatch"))
        False
    """
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


@contextmanager
def out_of_memory_hint(what: str, settings: Mapping[str, Any], fix: str) -> Iterator[None]:
    """Turn an out-of-memory error inside the block into a :class:`DeviceMemoryError`.

    Args:
        what: what ran out of memory, e.g. ``training (step 12)``.
        settings: the config keys that decide the memory, with their current values.
        fix: which of them to lower, and how.

    Raises:
        DeviceMemoryError: the block ran out of memory (chained to the original error).
    """
    try:
        yield
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        now = ", ".join(f"{k} = {_value(v)}" for k, v in settings.items())
        raise DeviceMemoryError(
            f"{what} ran out of device memory ({_first_line(exc)}); settings now: {now}. "
            f"How to fix: {fix}"
        ) from exc


def _value(v: Any) -> str:
    return str(list(v)) if isinstance(v, tuple) else str(v)


def training_hint(
    section: str, batch_size: int, patch_size, world_size: int = 1
) -> tuple[dict[str, Any], str]:
    """Settings and advice for a training (or pretraining) step that ran out of memory.

    Args:
        section: the config section of the schedule (``train``, ``pretrain``,
            ``pretrain_ssl``).
        batch_size: patches per step (over all processes).
        patch_size: the patch in voxels.
        world_size: processes sharing the batch.

    Example:
        >>> settings, fix = training_hint("train", 4, (32, 32, 16))
        >>> settings
        {'train.batch_size': 4, 'train.patch_size': (32, 32, 16)}
        >>> fix.split(" or ")[0]
        'lower train.batch_size (e.g. to 2)'
        >>> training_hint("train", 2, (32, 32, 16), world_size=2)[1].split("; ")[1]
        'train.batch_size is already at its least (2)'
    """
    world_size = max(world_size, 1)
    settings: dict[str, Any] = {
        f"{section}.batch_size": batch_size,
        f"{section}.patch_size": patch_size,
    }
    patch = f"{section}.patch_size (each side a multiple of the network's downsampling)"
    least = world_size  # one patch per process
    if batch_size > least:
        smaller = max(least, (batch_size // 2) // world_size * world_size)
        fix = f"lower {section}.batch_size (e.g. to {smaller}) or {patch}"
    else:
        fix = f"lower {patch}; {section}.batch_size is already at its least ({least})"
    fix += "; the job resumes from its last checkpoint"
    if world_size > 1:
        settings["processes"] = world_size
        fix += (
            f". Each of the {world_size} GPUs holds {batch_size // world_size} patch(es) of "
            "the batch"
        )
    return settings, fix


def validation_hint(section: str, patch_size, sw_batch_size: int) -> tuple[dict[str, Any], str]:
    """Settings and advice for a validation (sliding window) that ran out of memory."""
    settings = {"predict.sw_batch_size": sw_batch_size, f"{section}.patch_size": patch_size}
    example = ", e.g. to 1" if sw_batch_size > 1 else ""
    fix = (
        f"lower predict.sw_batch_size (windows run at once{example}); at 1, lower "
        f"{section}.patch_size (the validation window is the training patch)"
    )
    return settings, fix
