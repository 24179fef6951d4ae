"""Build the network stored in a trained medtl checkpoint (``best.pt``), without pickles.

Shared by :mod:`medtl.predict` (PyTorch inference) and :mod:`medtl.export` (which writes
the same networks in other formats), which may not import each other.
"""

from __future__ import annotations

from pathlib import Path

import torch

from medtl.config import ModelConfig, parse_section
from medtl.kernel.errors import InputError
from medtl.models.networks import build_network, window_multiple
from medtl.models.nnunet_networks import complete_state
from medtl.models.safe_read import WeightsFileError, safe_load


def load_model(checkpoint: Path, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """Build the network stored in a medtl checkpoint and load its weights (no pickles).

    Raises:
        InputError: the checkpoint is missing, truncated, not a PyTorch checkpoint, would
            run code (naming what it asked for), or is not a medtl model checkpoint; each
            with the fix: rerun the training job that writes it.
    """
    checkpoint = Path(checkpoint)
    rerun = (
        "rerun the training job that writes it: snakemake --cores all --forcerun "
        f"{checkpoint} (or --forcerun train for every fold), or medtl train with --out "
        f"{checkpoint.parent}"
    )
    if not checkpoint.is_file():
        raise InputError(
            checkpoint,
            "model checkpoint not found",
            "train the model first (the train stage writes best.pt)",
        )
    payload = safe_load(checkpoint, remake=rerun)
    needed = ("model", "state_dict", "num_classes")
    if not isinstance(payload, dict) or payload.get("format") != "medtl":
        raise WeightsFileError(
            checkpoint,
            "is not a medtl model checkpoint (no 'format': 'medtl' entry); expected the "
            "best.pt written by the train stage",
            rerun,
        )
    lacking = [key for key in needed if key not in payload]
    if lacking:
        raise WeightsFileError(
            checkpoint, f"is a medtl checkpoint without {', '.join(lacking)}", rerun
        )
    cfg = parse_section(ModelConfig, payload["model"], "model")
    channels, classes = int(payload.get("in_channels", 1)), int(payload["num_classes"])
    model = build_network(cfg, channels, classes, payload.get("patch_size"))
    try:
        # Fills in DNA's alias names and unused deep-supervision heads, which checkpoints
        # of the hand-written plainconvunet (medtl before DNA built it) do not have.
        state, _ = complete_state(model, payload["state_dict"])
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        error = WeightsFileError(
            checkpoint,
            f"its weights do not fit the network it names ({cfg.name}): {detail}",
            rerun,
        )
        raise error from None
    model.to(device).eval()
    return model, payload


def checkpoint_multiple(payload: dict) -> int:
    """What every prediction window's side for a loaded checkpoint's network must be a
    multiple of.

    0 when the network takes only its training patch (``primus``) or the payload names
    no network, 1 when it takes any side; see
    :func:`medtl.models.networks.window_multiple`.
    """
    if not isinstance(payload.get("model"), dict):
        return 0
    return window_multiple(parse_section(ModelConfig, payload["model"], "model"))
