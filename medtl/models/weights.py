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
* ``nnunet``: nnU-Net v2 ``checkpoint_final.pth``; ``network_weights`` with nnU-Net's
  alias keys dropped (``plainconvunet``).

``auto`` detects the format from the file or folder. Loading the renamed tensors into a
network, and the load report, are :mod:`medtl.models.transfer`'s job.

Example:
    >>> weights = read_weights(Path("model_swinvit.pt"))  # doctest: +SKIP
    >>> weights.format, next(iter(weights.state))  # doctest: +SKIP
    ('swinunetr_ssl', 'swinViT.patch_embed.proj.weight')
"""

from __future__ import annotations

import io
import pickletools
import re
import warnings
import zipfile
from collections.abc import Collection, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medtl.kernel.errors import InputError, MedtlError

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
}

#: Prefixes that wrap a whole state dict (torch.compile, bundle and Lightning wrappers).
_WRAPPER_PREFIXES = ("_orig_mod.", "model.", "network.", "net.")

_BUNDLE_CONFIGS = ("inference.json", "train.json", "inference.yaml", "train.yaml")

_SWIN_TOP = re.compile(r"^(patch_embed|layers\d+|norm)\.")
_RESNET_TOP = re.compile(r"^(conv1|bn1|layer[1-4])\.")


class WeightsError(MedtlError):
    """A weights file that cannot be used for the chosen network."""


@dataclass
class Weights:
    """A checkpoint's tensors, renamed to medtl's parameter names.

    Attributes:
        source: the file or folder read.
        format: the format recognised (one of :data:`FORMATS`, never ``auto``).
        state: parameter name → tensor, in the naming of the medtl network that fits.
        notes: what was renamed, dropped or differs from the pretraining network.
    """

    source: Path
    format: str
    state: dict[str, torch.Tensor]
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- safe reading

#: How to get a good copy of a pretrained weights file (the default advice of :func:`safe_load`).
REMAKE_WEIGHTS = (
    "download or copy the file again and compare its size with the original's; a file you "
    "wrote yourself can be saved again with torch.save(model.state_dict(), path) or "
    "safetensors.torch.save_file(tensors, path)"
)

#: What medtl reads, for the messages that refuse a file.
SAFE_FILE = (
    "medtl reads weights only as tensors, with torch.load(weights_only=True) or safetensors, "
    "and never runs code from a weights file: a usable file is a state dict (parameter names "
    "→ tensors) saved with torch.save(model.state_dict(), path), or a .safetensors file"
)

_ZIP_MAGIC = b"PK\x03\x04"
_SCAN_LIMIT = 64 << 20  # bytes of a pickle read to name what it imports


class WeightsFileError(WeightsError, InputError):
    """A weights file that cannot be read: missing, truncated, not a checkpoint, or unsafe.

    Both a :class:`WeightsError` and an :class:`~medtl.kernel.errors.InputError` (``path``,
    ``reason``, ``fix``), so the CLI prints it as one line naming the file and the fix.
    """


def _numpy_safe_globals() -> list[Any]:
    """numpy scalar and numeric dtype constructors, as nnU-Net pickles them in its logs.

    They only rebuild numbers (``np.float64(0.83)``); no other class is allowed.
    """
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        return []
    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    allowed: list[Any] = [np.dtype, scalar]
    # numpy 1.x writes the scalar constructor as numpy.core.multiarray.scalar
    allowed.append((scalar, "numpy.core.multiarray.scalar"))
    numeric = "bool_ int8 int16 int32 int64 uint8 uint16 uint32 uint64 float16 float32 float64"
    allowed.extend(type(np.dtype(getattr(np, name))) for name in numeric.split())
    return allowed


def _allowed_global_names(extra: list[Any]) -> set[str] | None:
    """``module.name`` of every global ``torch.load(weights_only=True)`` rebuilds here.

    None when this torch does not say (its list is private), so nothing is named unsafe
    by guesswork.
    """
    try:
        from torch import _weights_only_unpickler as unpickler

        names = set(unpickler._get_allowed_globals())
    except (ImportError, AttributeError):  # pragma: no cover - depends on torch's internals
        return None
    for item in extra:
        if isinstance(item, tuple):
            names.add(item[1])
        else:
            names.add(f"{item.__module__}.{item.__qualname__}")
    return names


def _pickle_of(path: Path, head: bytes) -> bytes | None:
    """The pickled object table of a torch file (``data.pkl`` of its zip), or the file."""
    if head.startswith(_ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as archive:
                name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                return archive.read(name)[:_SCAN_LIMIT] if name else None
        except (zipfile.BadZipFile, OSError, KeyError):
            return None
    with path.open("rb") as f:
        return f.read(_SCAN_LIMIT)


_STRING_OPS = {
    "SHORT_BINUNICODE",
    "BINUNICODE",
    "BINUNICODE8",
    "UNICODE",
    "STRING",
    "BINSTRING",
    "SHORT_BINSTRING",
}


def pickle_globals(data: bytes) -> list[str]:
    """The ``module.name`` globals a pickle imports, read without unpickling anything.

    The opcodes are only parsed (:func:`pickletools.genops`); module and name strings
    that ``STACK_GLOBAL`` takes from the stack are followed through the memo. Several
    pickles in a row (older torch files) are read one after the other.

    Example:
        >>> import os, pickle
        >>> class Evil:
        ...     def __reduce__(self):
        ...         return (os.system, ("echo pwned",))
        >>> pickle_globals(pickle.dumps(Evil())) in (["posix.system"], ["nt.system"])
        True
    """
    found: list[str] = []
    stream = io.BytesIO(data)
    while stream.tell() < len(data):
        recent: list[str | None] = []  # what each opcode pushed (None: not a string)
        memo: dict[int, str | None] = {}
        try:
            for op, arg, _ in pickletools.genops(stream):
                name = op.name
                if name in ("GLOBAL", "INST"):
                    found.append(str(arg).replace(" ", ".", 1))
                    recent.append(None)
                elif name == "STACK_GLOBAL":
                    module, attr = (recent[-2], recent[-1]) if len(recent) >= 2 else (None, None)
                    if module and attr:
                        found.append(f"{module}.{attr}")
                    recent.append(None)
                elif name in _STRING_OPS:
                    recent.append(arg if isinstance(arg, str) else None)
                elif name == "MEMOIZE":
                    memo[len(memo)] = recent[-1] if recent else None
                elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[int(arg)] = recent[-1] if recent else None
                elif name in ("GET", "BINGET", "LONG_BINGET"):
                    recent.append(memo.get(int(arg)))
                elif op.stack_after:
                    recent.append(None)
        except Exception:  # the rest is not a pickle (storages of an old torch file)
            break
    return found


def _display(name: str) -> str:
    """A global's name as a user knows it (``posix.system`` is ``os.system``)."""
    name = name.replace("__builtin__.", "builtins.", 1)
    module, _, attr = name.rpartition(".")
    if module in ("posix", "nt"):
        return f"os.{attr} ({name})"
    return name


def _unreadable(path: Path, exc: Exception, allow: list[Any], remake: str) -> WeightsFileError:
    """The error for a file ``torch.load(weights_only=True)`` refused or failed to read."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(512)
    text = str(exc)
    allowed = _allowed_global_names(allow)
    data = _pickle_of(path, head)
    scanned = pickle_globals(data) if data and allowed is not None else []
    asked = [g for g in scanned if allowed is not None and g not in allowed]
    if not asked:
        m = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"got <class '([\w.]+)'>", text)
        asked = [m.group(1)] if m else []
    if asked:
        names = list(dict.fromkeys(_display(g) for g in asked))
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        return WeightsFileError(
            path,
            f"refused: reading it would import and call {shown}, and a pickle can run any code "
            f"that way; nothing of it was run. {SAFE_FILE}",
            "do not use this file. Ask its publisher for the weights as a state dict or a "
            ".safetensors file; a file you made yourself can be saved again that way: "
            "torch.save(model.state_dict(), path)",
        )
    if size == 0:
        return WeightsFileError(
            path, "is empty (0 bytes): truncated, not a PyTorch checkpoint", remake
        )
    if head.startswith(_ZIP_MAGIC):
        return WeightsFileError(
            path,
            f"is truncated or corrupt: it starts like a PyTorch checkpoint (the zip archive "
            f"torch.save writes) but the archive cannot be read ({size:,} bytes)",
            remake,
        )
    if head.startswith(b"\x80"):
        return WeightsFileError(
            path,
            f"is truncated or corrupt: it starts like a pickle but cannot be read to its end "
            f"({size:,} bytes)",
            remake,
        )
    if head.startswith(b"version https://git-lfs"):
        return WeightsFileError(
            path,
            "is a Git LFS pointer (a few lines of text), not the weights it stands for",
            "fetch the file's content in its repository (git lfs pull), or download it again",
        )
    kind = "text" if _looks_like_text(head) else "other data"
    return WeightsFileError(
        path,
        f"is not a PyTorch checkpoint: it holds {kind}, neither the zip archive torch.save "
        "writes nor a pickle of tensors",
        remake,
    )


def _looks_like_text(head: bytes) -> bool:
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a character cut at the end of the sample is fine
        if exc.start < len(head) - 3:
            return False
        decoded = head[: exc.start].decode("utf-8")
    return all(c.isprintable() or c in "\t\r\n" for c in decoded)


def safe_load(path: Path, remake: str = REMAKE_WEIGHTS) -> Any:
    """``torch.load`` that never runs code from the file, with a clear error when it fails.

    Only tensors, plain Python containers and numbers, ``torch.device`` and numpy scalars
    are rebuilt (``weights_only=True`` plus the numpy scalar types nnU-Net stores). Every
    ``torch.load`` of medtl goes through here.

    Args:
        path: the file.
        remake: how to get an intact copy: the fix when the file is missing, empty,
            truncated or not a checkpoint (e.g. "rerun the training job that writes it").

    Raises:
        WeightsFileError: the file is missing or a folder; it would import anything else
            (naming what it asked for, e.g. ``os.system``; nothing is run); or it is
            empty, truncated, text or another kind of file. torch's own advice (to load
            it unsafely) is never passed on.
    """
    path = Path(path)
    if not path.exists():
        raise WeightsFileError(path, "not found (no such file)", remake)
    if path.is_dir():
        raise WeightsFileError(path, "is a folder; expected a PyTorch checkpoint file", remake)
    allow = _numpy_safe_globals()
    scoped = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    guard = scoped(allow) if allow and scoped is not None else nullcontext()
    try:
        with guard, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pickle protocol.*")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, KeyError…
        error = _unreadable(path, exc, allow, remake)
    raise error  # outside the except block: torch's text (and its advice) is not chained


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        with path.open("rb") as f:
            head = f.read(4)
        if path.suffix != ".safetensors" or head.startswith((_ZIP_MAGIC, b"\x80")):
            error = WeightsFileError(
                path,
                f"expected a .safetensors file (format: safetensors), but it cannot be read as "
                f"one (safetensors says: {detail})",
                "set format: auto, or the format the file was saved in",
            )
        else:
            error = WeightsFileError(
                path,
                f"is not a readable .safetensors file: its header is corrupt or the file is "
                f"truncated (safetensors says: {detail})",
                "download or copy the file again and compare its size with the original's",
            )
    raise error


def _tensor_dict(obj: Any) -> dict[str, torch.Tensor] | None:
    """``obj`` itself when it maps names to tensors (allowing an empty dict), else None."""
    if isinstance(obj, Mapping) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        return dict(obj)
    return None


def _unwrap(obj: Any) -> dict[str, torch.Tensor] | None:
    """The state dict in a plain, ``{"state_dict"}``, ``{"model"}`` or ``{"network"}`` file.

    An empty one (``{}`` or ``{"state_dict": {}}``) is returned as ``{}``, for
    :func:`read_weights` to refuse by name; None when there is no state dict at all.
    """
    direct = _tensor_dict(obj)
    if direct:
        return direct
    empty = direct
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "network"):
            inner = _tensor_dict(obj.get(key))
            if inner:
                return inner
            if inner is not None and key in obj:
                empty = inner
    return empty


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        keys = [str(k) for k in list(obj)[:6]]
        more = ", …" if len(obj) > 6 else ""
        return f"a dict with keys [{', '.join(keys)}{more}]"
    return f"a {type(obj).__name__}"


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
        return _load_safetensors(path), "safetensors"
    obj = safe_load(path)
    if isinstance(obj, Mapping) and obj.get("format") == "medtl":
        return dict(obj["state_dict"]), "medtl"
    state = _unwrap(obj)
    if state is None:
        raise WeightsError(
            f"{path}: expected a state dict (names → tensors), got {_describe(obj)}. "
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


# --------------------------------------------------------------------------- layouts


def _strip_module(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove DataParallel's ``module.`` from every key that has it."""
    return {k.removeprefix("module."): v for k, v in state.items()}


def _is_swin_ssl(keys: Collection[str]) -> bool:
    return any(
        k.startswith(("patch_embed.", "swin_vit.", "encoder.patch_embed."))
        or re.match(r"^(encoder\.)?layers\d+\.0\.(0\.)?blocks\.", k)
        for k in keys
    )


def _is_medicalnet(keys: Collection[str]) -> bool:
    return "conv1.weight" in keys and any(k.startswith("layer1.") for k in keys)


def _layout_of(state: Mapping[str, torch.Tensor]) -> str | None:
    keys = set(_strip_module(state))
    if _is_swin_ssl(keys):
        return "swinunetr_ssl"
    if _is_medicalnet(keys):
        return "medicalnet"
    return None


def _detect(path: Path, obj: Any) -> str:
    """The format of a file's content (not for folders)."""
    if path.suffix == ".safetensors":
        return "safetensors"
    if isinstance(obj, Mapping) and obj.get("format") == "medtl":
        return "medtl"
    if isinstance(obj, Mapping) and isinstance(obj.get("network_weights"), Mapping):
        return "nnunet"
    state = _unwrap(obj)
    if state is None:
        raise WeightsError(
            f"{path}: expected weights (a state dict, or one of the formats "
            f"{', '.join(FORMATS[1:])}), got {_describe(obj)}. How to fix: save the weights "
            "with torch.save(model.state_dict(), path)"
        )
    return _layout_of(state) or "state_dict"


def _swin_name(key: str) -> str | None:
    """A Swin UNETR self-supervised key under MONAI ``SwinUNETR``'s name (None: not Swin)."""
    if key.startswith("swin_vit."):
        key = "swinViT." + key.removeprefix("swin_vit.")
    elif key.startswith("encoder.") and _SWIN_TOP.match(key.removeprefix("encoder.")):
        # Disruptive-autoencoder layout (MONAI's filter_swinunetr): encoder.layers1.0.0.blocks
        rest = key.removeprefix("encoder.")
        rest = re.sub(r"^(layers\d+\.0)\.0\.", r"\1.", rest)
        key = "swinViT." + rest
    elif _SWIN_TOP.match(key):
        key = "swinViT." + key
    elif not key.startswith("swinViT."):
        return None
    # the pretraining code's MLP (timm naming) is MONAI's MLPBlock
    return key.replace(".mlp.fc1.", ".mlp.linear1.").replace(".mlp.fc2.", ".mlp.linear2.")


def _from_swin_ssl(state: Mapping[str, torch.Tensor], notes: list[str]) -> dict:
    out: dict[str, torch.Tensor] = {}
    renamed = 0
    for key, value in _strip_module(state).items():
        new = _swin_name(key)
        renamed += new is not None and new != key
        out[new or key] = value
    notes.append(
        f"renamed {renamed} keys from the self-supervised layout to MONAI SwinUNETR's "
        "(module./swin_vit. → swinViT., mlp.fc1/fc2 → mlp.linear1/linear2)"
    )
    return out


def _from_medicalnet(state: Mapping[str, torch.Tensor], notes: list[str]) -> dict:
    out = {
        ("encoder." + k if _RESNET_TOP.match(k) else k): v for k, v in _strip_module(state).items()
    }
    notes.append(
        "MedicalNet trained layer3/layer4 with stride 1 and dilation 2/4; MONAI's FlexibleUNet "
        "ResNet encoder uses stride 2 without dilation there. The weights load by name and "
        "shape (stem: 7×7×7 conv, stride 2, then max-pool, as in MedicalNet), but those two "
        "stages now see a coarser grid than during pretraining"
    )
    return out


def _from_nnunet(obj: Mapping[str, Any], path: Path, notes: list[str]) -> dict:
    state = _tensor_dict(obj.get("network_weights"))
    if state is None:
        raise WeightsError(
            f"{path}: 'network_weights' of this nnU-Net checkpoint is not a state dict "
            f"(got {_describe(obj.get('network_weights'))}). How to fix: use the "
            "checkpoint_final.pth or checkpoint_best.pth that nnU-Net v2 wrote"
        )
    state = {k.removeprefix("_orig_mod."): v for k, v in _strip_module(state).items()}
    aliases = [k for k in state if ".all_modules." in k or k.startswith("decoder.encoder.")]
    for key in aliases:
        del state[key]
    if aliases:
        notes.append(
            f"ignored {len(aliases)} alias keys (convs.*.all_modules.* and decoder.encoder.*): "
            "nnU-Net names each tensor there a second time"
        )
    trainer = obj.get("trainer_name")
    init_args = obj.get("init_args")
    config = init_args.get("configuration") if isinstance(init_args, Mapping) else None
    if isinstance(trainer, str) or isinstance(config, str):
        notes.append(f"nnU-Net trainer {trainer!s}, configuration {config!s}")
    from medtl.models.nnunet_plans import check_plans  # it imports this module's errors

    notes.append(check_plans(obj, path))
    return state


def _align_prefix(
    state: dict[str, torch.Tensor], model_keys: Collection[str], notes: list[str]
) -> dict[str, torch.Tensor]:
    """Remove whole-dict wrapper prefixes (``network.``, ``model.``…) when that matches better.

    A prefix shared by every key is stripped only if the stripped names match at least
    as many of the model's names (a MONAI ``UNet`` legitimately names all keys ``model.…``).
    """
    best, best_hits, stripped, best_stripped = state, len(state.keys() & model_keys), [], []
    current = state
    while current:
        prefix = next((p for p in _WRAPPER_PREFIXES if all(k.startswith(p) for k in current)), None)
        if prefix is None:
            break
        current = {k.removeprefix(prefix): v for k, v in current.items()}
        stripped.append(prefix)
        hits = len(current.keys() & model_keys)
        if hits >= best_hits:
            best, best_hits, best_stripped = current, hits, list(stripped)
    if best_stripped:
        notes.append(f"removed the key prefix {''.join(best_stripped)!r} from every key")
    return best


def _read_bundle(folder: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``models/model.pt`` of a MONAI bundle. Its configs are only looked for, never parsed."""
    configs = folder / "configs"
    found = [name for name in _BUNDLE_CONFIGS if (configs / name).is_file()]
    weights = folder / "models" / "model.pt"
    if not found or not weights.is_file():
        present = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())[:10]
        hint = (
            " (models/model.ts is TorchScript, which medtl does not load: export the state "
            "dict to models/model.pt)"
            if (folder / "models" / "model.ts").is_file()
            else ""
        )
        raise WeightsError(
            f"{folder}: expected a MONAI bundle folder with configs/inference.json or "
            f"configs/train.json and models/model.pt; found {present}{hint}. How to fix: "
            "point to the bundle's root folder, or to a weights file with its own format"
        )
    obj = safe_load(weights)
    state = _unwrap(obj)
    if state is None:
        raise WeightsError(
            f"{weights}: expected a state dict in the bundle's models/model.pt, got "
            f"{_describe(obj)}. How to fix: re-export the bundle's weights as a state dict"
        )
    notes = [f"MONAI bundle: weights from models/model.pt (configs seen: {', '.join(found)})"]
    return state, notes


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
            without plans (or with plans of a network medtl does not rebuild).

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
        state, notes = _read_bundle(source)
        state = _align_prefix(_strip_module(state), model_keys, notes)
        return Weights(source, "monai_bundle", state, notes)
    if fmt == "monai_bundle":
        raise WeightsError(
            f"{source}: format 'monai_bundle' expects {_DESCRIPTIONS['monai_bundle']}, found a "
            "file. How to fix: point to the bundle's root folder, or set format: auto"
        )

    if source.suffix == ".safetensors" or fmt == "safetensors":
        obj: Any = _load_safetensors(source)
    else:
        obj = safe_load(source)
    detected = _detect(source, obj)
    if fmt == "auto":
        fmt = detected
    elif fmt != detected and not _compatible(fmt, obj):
        raise WeightsError(
            f"{source}: format {fmt!r} expects {_DESCRIPTIONS[fmt]}, found {_describe(obj)}, "
            f"which looks like {detected!r}: {_DESCRIPTIONS[detected]}. How to fix: set "
            f"format: {detected} (or auto)"
        )

    if fmt == "nnunet":
        return Weights(source, fmt, _from_nnunet(obj, source, notes), notes)
    if fmt == "medtl":
        inner = _tensor_dict(obj.get("state_dict"))
        if inner is None:
            raise WeightsError(
                f"{source}: this medtl checkpoint's 'state_dict' is not a state dict (got "
                f"{_describe(obj.get('state_dict'))}). How to fix: use a checkpoint written "
                "by medtl's training (best.pt or last.pt)"
            )
        return Weights(source, fmt, _strip_module(inner), notes)
    state = _unwrap(obj)
    assert state is not None  # _detect refused anything else
    if fmt == "swinunetr_ssl":
        return Weights(source, fmt, _from_swin_ssl(state, notes), notes)
    if fmt == "medicalnet":
        return Weights(source, fmt, _from_medicalnet(state, notes), notes)
    state = _align_prefix(_strip_module(state), model_keys, notes)
    return Weights(source, fmt, state, notes)


def _compatible(fmt: str, obj: Any) -> bool:
    """Whether an explicitly requested ``fmt`` can read ``obj`` (detected as another)."""
    state = _unwrap(obj)
    if fmt == "state_dict":  # any state dict can be read as is
        return state is not None
    if fmt == "safetensors":
        return isinstance(obj, dict) and _tensor_dict(obj) is not None
    if fmt == "swinunetr_ssl":
        return state is not None and _is_swin_ssl(set(_strip_module(state)))
    if fmt == "medicalnet":
        return state is not None and _is_medicalnet(set(_strip_module(state)))
    return False
