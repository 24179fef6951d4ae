"""Read a weights file without running code from it: :func:`safe_load`, and its errors.

Every ``torch.load`` of medtl goes through :func:`safe_load` (``weights_only=True`` plus
the numpy scalar types nnU-Net stores); a file it refuses is named with what it would
have imported (read from the pickle's opcodes by :func:`pickle_globals`, nothing run).
``.safetensors`` files are read by :func:`load_safetensors`. Turning what was read into
medtl's parameter names is :mod:`medtl.models.weights`'s job.
"""

from __future__ import annotations

import io
import json
import pickletools
import re
import warnings
import zipfile
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from medtl.kernel.errors import InputError, MedtlError


class WeightsError(MedtlError):
    """A weights file that cannot be used for the chosen network."""


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


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
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


def json_beside(candidate: Path, fix: str) -> dict | None:
    """A JSON object read from a file beside a checkpoint (its plans), or None if absent.

    None also when the file holds something other than an object (a list, a number).

    Raises:
        WeightsFileError: the file exists but cannot be read as JSON (naming ``fix``).
    """
    if not candidate.is_file():
        return None
    try:
        found = json.loads(candidate.read_text())
    except (ValueError, OSError) as exc:
        raise WeightsFileError(candidate, f"cannot be read as JSON ({exc})", fix) from None
    return found if isinstance(found, dict) else None
