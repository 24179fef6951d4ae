"""The settings to lower when training or validation runs out of GPU memory.

The error itself is :func:`medtl.kernel.device.out_of_memory_hint`.
"""

from __future__ import annotations

from typing import Any


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
