"""Checks that a training run is still sound, made at every step.

A non-finite loss (NaN or ±Inf) means the weights are about to become garbage: one NaN
voxel in an input, a learning rate far too high, or an overflow. Training then stops at
once with a message, instead of going on to write a ``best.pt`` that predicts nothing.
"""

from __future__ import annotations

import math

from medtl.kernel.errors import MedtlError


class DivergedError(MedtlError):
    """The loss stopped being a finite number; the run cannot go on."""


def check_finite_loss(value: float, step: int, section: str) -> None:
    """Stop a run whose loss is NaN or infinite.

    Args:
        value: the loss of this step (averaged over the processes, so all stop together).
        step: the step it was computed at (1-based, as the logs count).
        section: the config section that sets the run's schedule (``train``, ``pretrain``,
            ``pretrain_ssl``), for the message.

    Raises:
        DivergedError: naming the step, the likely causes and what to change.

    Example:
        >>> check_finite_loss(0.7, 3, "train")
        >>> check_finite_loss(float("nan"), 3, "train")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        medtl.train.health.DivergedError: train: the loss is nan at step 3; ...
    """
    if math.isfinite(value):
        return
    raise DivergedError(
        f"{section}: the loss is {value} at step {step}; training stopped before the weights "
        "were updated with it, and no model of this step is saved. Likely causes: an input "
        "with NaN or infinite voxels (medtl ingest sets such cases aside; rerun ingest if the "
        f"cases predate that check), or a learning rate too high for this network. How to "
        f"fix: rerun ingest, or lower {section}.lr (e.g. to a tenth)"
    )
