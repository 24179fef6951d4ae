"""Load pretrained encoder weights into a network and report what happened."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medtl.io.errors import MedtlError
from medtl.models.networks import Architecture


class WeightsError(MedtlError):
    """A weights file that cannot be used for the chosen network."""


@dataclass
class LoadReport:
    """What a checkpoint initialised in the network's encoder.

    Attributes:
        source: the checkpoint file.
        format: the weight format recognised.
        loaded: encoder keys copied from the checkpoint.
        missing: encoder keys the checkpoint lacks (left at random init).
        unexpected: checkpoint encoder keys the network does not have.
        shape_mismatch: keys present in both with different shapes.
        dropped: checkpoint keys outside the encoder (old decoder and head), not used.
        encoder_params_total / encoder_params_loaded: parameter counts.
    """

    source: str
    format: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    encoder_params_total: int = 0
    encoder_params_loaded: int = 0

    @property
    def fraction_loaded(self) -> float:
        return self.encoder_params_loaded / max(self.encoder_params_total, 1)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fraction_loaded"] = self.fraction_loaded
        return d


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """Read a state dict from a file without executing code.

    Accepts medtl checkpoints (``{"format": "medtl", "state_dict": ...}``), plain state
    dicts and ``{"state_dict": ...}`` wrappers, and ``.safetensors`` files.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"{path}: pretrained weights file not found. How to fix: set pretrain.checkpoint "
            "to an existing file, or leave it empty to run the pretrain stage"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path)), "safetensors"
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError or RuntimeError
        raise WeightsError(
            f"{path}: cannot be read as weights without running code from the file ({exc}). "
            "medtl only loads tensors (torch.load(weights_only=True)). How to fix: re-save the "
            "file as a state dict: torch.save(model.state_dict(), 'weights.pt')"
        ) from exc
    if isinstance(obj, dict) and obj.get("format") == "medtl":
        return obj["state_dict"], "medtl"
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        return obj["state_dict"], "state_dict"
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, "state_dict"
    raise WeightsError(
        f"{path}: expected a state dict (names → tensors), got {type(obj).__name__}. "
        "How to fix: save the weights with torch.save(model.state_dict(), path)"
    )


def load_encoder(
    model: nn.Module, arch: Architecture, path: Path, min_fraction: float = 0.9
) -> LoadReport:
    """Copy the encoder part of a checkpoint into ``model``.

    Args:
        model: the freshly built network (its head already sized for the task).
        arch: the network's architecture description.
        path: the checkpoint file.
        min_fraction: refuse when less than this share of encoder parameters loads.

    Returns:
        The load report.

    Raises:
        WeightsError: when too little of the encoder matches, listing the mismatches.
    """
    state, fmt = read_checkpoint(path)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    report = LoadReport(source=str(path), format=fmt)
    update = {}
    for key, value in own.items():
        if arch.part_of(key) != "encoder":
            continue
        is_param = key in dict(model.named_parameters())
        if is_param:
            report.encoder_params_total += value.numel()
        if key not in state:
            report.missing.append(key)
        elif tuple(state[key].shape) != tuple(value.shape):
            report.shape_mismatch.append(
                {"key": key, "checkpoint": list(state[key].shape), "model": list(value.shape)}
            )
        else:
            update[key] = state[key].to(value.dtype)
            report.loaded.append(key)
            if is_param:
                report.encoder_params_loaded += value.numel()
    for key in state:
        if arch.part_of(key) == "encoder":
            if key not in own:
                report.unexpected.append(key)
        else:
            report.dropped.append(key)
    if report.fraction_loaded < min_fraction:
        lines = [
            f"    {m['key']}: checkpoint {m['checkpoint']}, model {m['model']}"
            for m in report.shape_mismatch[:10]
        ]
        raise WeightsError(
            f"{path}: only {report.fraction_loaded:.0%} of the encoder's parameters could be "
            f"loaded (need {min_fraction:.0%}); {len(report.missing)} missing, "
            f"{len(report.unexpected)} unexpected, {len(report.shape_mismatch)} of other shape"
            + ("\n" + "\n".join(lines) if lines else "")
            + "\nHow to fix: choose model settings (model.name, model.features) that match "
            "the network the checkpoint was trained with, or lower pretrain.min_loaded_fraction"
        )
    model.load_state_dict(update, strict=False)
    return report
