"""Read published pretrained weights safely, under medtl's parameter names.

A ``pretrained:`` source is a file or folder plus a **format**. Each format is read
without running code from the file (``torch.load(weights_only=True)`` or safetensors)
and its keys are renamed to the names of the medtl network that fits it:

* ``medtl``: ``{"format": "medtl", "state_dict": ...}``, names as they are (any network);
* ``state_dict``: a state dict, maybe as ``{"state_dict": ...}``; wrappers removed;
* ``safetensors``: a ``.safetensors`` file; wrappers removed;
* ``swinunetr_ssl``: Swin UNETR self-supervised weights (``model_swinvit.pt``,
  ``module.layers1.0.blocks.0.mlp.fc1.weight``) → ``swinViT.…mlp.linear1.weight``
  (``swinunetr``);
* ``medicalnet``: MedicalNet 3-D ResNets (``resnet_18.pth``, ``module.layer1.0.conv1.weight``)
  → ``encoder.layer1.0.conv1.weight`` (``flexibleunet``);
* ``monai_bundle``: a bundle folder; ``models/model.pt`` with wrappers removed (its
  configs are never parsed);
* ``nnunet``: nnU-Net v2 ``checkpoint_final.pth``; ``network_weights`` with
  dynamic-network-architectures' alias keys dropped (``plainconvunet`` for a
  PlainConvUNet, ``resencunet`` for a ResidualEncoderUNet; its plans say which);
* ``nnssl``: a self-supervised nnssl checkpoint (the OpenMind ResEnc-L or PrimusM MAE
  weights): ``network_weights`` plus an ``nnssl_adaptation_plan`` (in the file or as
  ``adaptation_plan.json`` beside it); a ResEnc's stem and encoder go to
  ``resencunet``'s ``encoder.stem`` / ``encoder.stages``, a Primus's ``down_projection``
  and ``eva`` to ``primus``'s; the MAE decoder is never loaded.

``auto`` detects the format from the file or folder. Files are read by
:mod:`medtl.models.safe_read` and renamed by :mod:`medtl.models.weight_formats`; loading the
renamed tensors into a network, and the load report, are :mod:`medtl.models.transfer`'s job.

Example:
    >>> weights = read_weights(Path("model_swinvit.pt"))  # doctest: +SKIP
    >>> weights.format, next(iter(weights.state))  # doctest: +SKIP
    ('swinunetr_ssl', 'swinViT.patch_embed.proj.weight')
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medtl.models.nnssl_plan import PlannedPrimus, network_family, network_settings
from medtl.models.safe_read import WeightsError, WeightsFileError, load_safetensors, safe_load
from medtl.models.weight_formats import (
    align_prefix,
    describe_object,
    from_medicalnet,
    from_nnssl,
    from_nnunet,
    from_swin_ssl,
    is_medicalnet,
    is_swin_ssl,
    layout_of,
    read_bundle,
    strip_module,
    tensor_dict,
    tensors_at,
    unwrap,
)

#: The errors of reading weights live with the safe reader; named here for the callers.
__all__ = [
    "FORMATS",
    "Weights",
    "WeightsError",
    "WeightsFileError",
    "read_checkpoint",
    "read_weights",
]

#: Accepted values of a pretrained source's ``format``.
FORMATS: tuple[str, ...] = (
    "auto",
    "medtl",
    "state_dict",
    "safetensors",
    "swinunetr_ssl",
    "medicalnet",
    "monai_bundle",
    "nnunet",
    "nnssl",
)

_DESCRIPTIONS = {
    "medtl": "a medtl checkpoint ({'format': 'medtl', 'state_dict': ...})",
    "state_dict": "a state dict (names → tensors), possibly wrapped as {'state_dict': ...}",
    "safetensors": "a .safetensors file",
    "swinunetr_ssl": (
        "Swin UNETR self-supervised weights ({'state_dict': {'module.patch_embed.proj.weight', "
        "'module.layers1.0.blocks.0.…'}})"
    ),
    "medicalnet": (
        "MedicalNet 3-D ResNet weights ({'state_dict': {'module.conv1.weight', "
        "'module.layer1.0.conv1.weight', …}})"
    ),
    "monai_bundle": "a MONAI bundle folder (configs/inference.json or train.json, models/model.pt)",
    "nnunet": "an nnU-Net v2 checkpoint (a dict with 'network_weights', 'init_args', …)",
    "nnssl": (
        "an nnssl checkpoint (a dict with 'network_weights' and 'nnssl_adaptation_plan', or "
        "with an adaptation_plan.json beside it)"
    ),
}

#: Why the decoder and head of an nnssl checkpoint are never loaded.
NNSSL_SKIP_REASON = (
    "nnssl's decoder and head reconstruct the masked image (MAE pretraining); they are not "
    "a segmentation decoder"
)


@dataclass
class Weights:
    """A checkpoint's tensors, renamed to medtl's parameter names.

    Attributes:
        source: the file or folder read.
        format: the format recognised (one of :data:`FORMATS`, never ``auto``).
        state: parameter name → tensor, in the naming of the medtl network that fits.
        notes: what was renamed, dropped or differs from the pretraining network.
        family: the network the checkpoint says it holds (e.g. ``nnssl ResEncL``), when
            the file says so; empty otherwise.
        settings: the medtl ``model`` settings (``name``, ``features``) that build that
            network, when the file says; a model built otherwise is refused.
        skip_reason: why the checkpoint's decoder and head are not loaded, when there is
            more to say than "only the encoder is transferred".
        token_grid: for a transformer with a learned positional embedding (Primus), the
            token grid of the patch it was pretrained on; None when not known.
    """

    source: Path
    format: str
    state: dict[str, torch.Tensor]
    notes: list[str] = field(default_factory=list)
    family: str = ""
    settings: dict[str, Any] | None = None
    skip_reason: str = ""
    token_grid: tuple[int, ...] | None = None


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """Read a state dict from a file without executing code.

    Accepts medtl checkpoints (``{"format": "medtl", "state_dict": ...}``), plain state
    dicts and ``{"state_dict": ...}`` wrappers, and ``.safetensors`` files. Keys are
    returned as stored; :func:`read_weights` also renames published layouts.

    Returns:
        The state dict and ``"medtl"``, ``"state_dict"`` or ``"safetensors"``.
    """
    path = Path(path)
    _require_exists(path)
    if path.is_dir():
        raise WeightsError(
            f"{path}: is a folder; expected a weights file. How to fix: use "
            "read_weights(path, 'monai_bundle') for a MONAI bundle"
        )
    if path.suffix == ".safetensors":
        return load_safetensors(path), "safetensors"
    obj = safe_load(path)
    if isinstance(obj, Mapping) and obj.get("format") == "medtl":
        return dict(obj["state_dict"]), "medtl"
    state = unwrap(obj)
    if state is None:
        raise WeightsError(
            f"{path}: expected a state dict (names → tensors), got {describe_object(obj)}. "
            "How to fix: save the weights with torch.save(model.state_dict(), path)"
        )
    return state, "state_dict"


def _require_exists(path: Path) -> None:
    if not path.exists():
        folder = path.parent
        hint = "" if folder.is_dir() else f" (its folder {folder} does not exist either)"
        raise WeightsFileError(
            path,
            f"pretrained weights file not found{hint}",
            "set pretrain.checkpoint to an existing file or MONAI bundle folder, or leave it "
            "empty to run the pretrain stage",
        )


def detect_format(path: Path, obj: Any) -> str:
    """The format of a file's content (not for folders)."""
    if path.suffix == ".safetensors":
        return "safetensors"
    if isinstance(obj, Mapping) and obj.get("format") == "medtl":
        return "medtl"
    if isinstance(obj, Mapping) and isinstance(obj.get("network_weights"), Mapping):
        plan_beside = (path.parent / "adaptation_plan.json").is_file()
        return "nnssl" if "nnssl_adaptation_plan" in obj or plan_beside else "nnunet"
    state = unwrap(obj)
    if state is None:
        raise WeightsError(
            f"{path}: expected weights (a state dict, or one of the formats "
            f"{', '.join(FORMATS[1:])}), got {describe_object(obj)}. How to fix: save the weights "
            "with torch.save(model.state_dict(), path)"
        )
    return layout_of(state) or "state_dict"


def read_weights(source: Path, fmt: str = "auto", model_keys: Collection[str] = ()) -> Weights:
    """Read weights of any supported format, renamed to medtl's parameter names.

    Args:
        source: the weights file, or a MONAI bundle's folder.
        fmt: one of :data:`FORMATS`; ``auto`` detects it, anything else is checked.
        model_keys: the target network's state-dict names, used to decide whether a
            prefix shared by every key (``network.``, ``model.``) is a wrapper to remove.

    Returns:
        The renamed tensors, with the format and notes on what was changed.

    Raises:
        WeightsError: missing source, unknown format, a file that is not in the requested
            format (naming the detected one), a file that would run code when read, a
            truncated or corrupt file, one that holds no tensors, or an nnU-Net checkpoint
            without plans (or with plans of a network medtl does not build).

    Example:
        >>> w = read_weights(Path("resnet_18_23dataset.pth"))  # doctest: +SKIP
        >>> w.format, "encoder.layer1.0.conv1.weight" in w.state  # doctest: +SKIP
        ('medicalnet', True)
    """
    weights = _read_weights(Path(source), fmt, model_keys)
    if not weights.state:
        where = "models/model.pt of this bundle" if weights.format == "monai_bundle" else "it"
        raise WeightsFileError(
            weights.source,
            f"holds no tensors: {where} is an empty state dict (read as {weights.format})",
            "use the file the weights were saved to: torch.save(model.state_dict(), path) "
            "writes every tensor of the network",
        )
    return weights


def _read_weights(source: Path, fmt: str, model_keys: Collection[str]) -> Weights:
    if fmt not in FORMATS:
        raise WeightsError(
            f"pretrained format {fmt!r} is unknown; allowed: {', '.join(FORMATS)}. How to fix: "
            "use format: auto to detect it"
        )
    _require_exists(source)
    model_keys = set(model_keys)
    notes: list[str] = []

    if source.is_dir():
        if fmt not in ("auto", "monai_bundle"):
            raise WeightsError(
                f"{source}: format {fmt!r} expects {_DESCRIPTIONS[fmt]}, found a folder. How "
                "to fix: point to the weights file, or set format: monai_bundle (or auto) for "
                "a MONAI bundle"
            )
        state, notes = read_bundle(source)
        state = align_prefix(strip_module(state), model_keys, notes)
        return Weights(source, "monai_bundle", state, notes)
    if fmt == "monai_bundle":
        raise WeightsError(
            f"{source}: format 'monai_bundle' expects {_DESCRIPTIONS['monai_bundle']}, found a "
            "file. How to fix: point to the bundle's root folder, or set format: auto"
        )

    if source.suffix == ".safetensors" or fmt == "safetensors":
        obj: Any = load_safetensors(source)
    else:
        obj = safe_load(source)
    detected = detect_format(source, obj)
    if fmt == "auto":
        fmt = detected
    elif fmt != detected and not _compatible(fmt, obj):
        raise WeightsError(
            f"{source}: format {fmt!r} expects {_DESCRIPTIONS[fmt]}, found {describe_object(obj)}, "
            f"which looks like {detected!r}: {_DESCRIPTIONS[detected]}. How to fix: set "
            f"format: {detected} (or auto)"
        )

    if fmt == "nnunet":
        return Weights(source, fmt, from_nnunet(obj, source, notes), notes)
    if fmt == "nnssl":
        state, plan, net = from_nnssl(obj, source, notes)
        family, settings = network_family(plan, net), network_settings(net)
        grid = net.grid if isinstance(net, PlannedPrimus) else None
        return Weights(source, fmt, state, notes, family, settings, NNSSL_SKIP_REASON, grid)
    if fmt == "medtl":
        inner = tensors_at(
            obj,
            "state_dict",
            source,
            "this medtl checkpoint's 'state_dict'",
            "use a checkpoint written by medtl's training (best.pt or last.pt)",
        )
        return Weights(source, fmt, strip_module(inner), notes)
    state = unwrap(obj)
    assert state is not None  # detect_format refused anything else
    if fmt == "swinunetr_ssl":
        return Weights(source, fmt, from_swin_ssl(state, notes), notes)
    if fmt == "medicalnet":
        return Weights(source, fmt, from_medicalnet(state, notes), notes)
    state = align_prefix(strip_module(state), model_keys, notes)
    return Weights(source, fmt, state, notes)


def _compatible(fmt: str, obj: Any) -> bool:
    """Whether an explicitly requested ``fmt`` can read ``obj`` (detected as another)."""
    state = unwrap(obj)
    if fmt == "state_dict":  # any state dict can be read as is
        return state is not None
    if fmt == "safetensors":
        return isinstance(obj, dict) and tensor_dict(obj) is not None
    if fmt == "swinunetr_ssl":
        return state is not None and is_swin_ssl(set(strip_module(state)))
    if fmt == "medicalnet":
        return state is not None and is_medicalnet(set(strip_module(state)))
    return False
