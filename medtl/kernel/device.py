"""The device a job runs on, and the GPU settings every stage shares.

* :func:`torch_device`: ``auto`` / ``cpu`` / ``cuda`` to a device, with a clear error
  where CUDA is asked for and missing;
* :func:`autocast`, :func:`channels_last`, :func:`gpu_predictor`: bfloat16 autocast and
  the ``channels_last_3d`` memory format on CUDA, nothing elsewhere;
* :func:`out_of_memory_hint`: out of GPU memory fails with the setting to lower, not a
  CUDA traceback.

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

import contextlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch

from medtl.kernel.errors import ConfigError, MedtlError


def torch_device(name: str) -> torch.device:
    """Resolve ``auto`` / ``cpu`` / ``cuda`` to a device, with a clear error for missing CUDA."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            "config key 'device': got 'cuda' but this machine has no usable CUDA device "
            "(torch.cuda.is_available() is False). How to fix: set device: auto or cpu, "
            "or run on a GPU node."
        )
    return torch.device(name)


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on a CUDA device when ``enabled``; a context doing nothing elsewhere.

    bfloat16 keeps float32's range, so no gradient scaling is needed in training.

    Example:
        >>> with autocast(torch.device("cpu")):
        ...     torch.is_autocast_enabled()
        False
        >>> isinstance(autocast(torch.device("cuda"), enabled=False), contextlib.nullcontext)
        True
    """
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def channels_last(value, device: torch.device, enabled: bool = True):
    """A network or 5-D tensor in the ``channels_last_3d`` memory format on a CUDA device.

    Elsewhere, or unless ``enabled``, ``value`` itself (unchanged). A network is converted
    in place (as by ``Module.to``).

    Example:
        >>> x = torch.zeros(1, 2, 3, 4, 5)
        >>> channels_last(x, torch.device("cpu")) is x
        True
        >>> y = channels_last(x, torch.device("cuda"))  # the layout alone: no GPU needed
        >>> y.is_contiguous(memory_format=torch.channels_last_3d), y.stride()
        (True, (120, 1, 40, 10, 2))
    """
    if enabled and device.type == "cuda":
        return value.to(memory_format=torch.channels_last_3d)
    return value


def gpu_predictor(
    model: torch.nn.Module, device: torch.device, *, amp: bool, layout: bool
) -> Callable:
    """The network as a sliding-window predictor, with the GPU settings asked for.

    On a CUDA device: bfloat16 autocast (``amp``, config ``predict.amp``) and the
    ``channels_last_3d`` memory format (``layout``, config ``predict.channels_last``; the
    network is converted in place). Elsewhere, or with both off, the network itself.

    Example:
        >>> net = torch.nn.Conv3d(1, 2, 1)
        >>> gpu_predictor(net, torch.device("cpu"), amp=True, layout=True) is net
        True
    """
    amp = amp and device.type == "cuda"
    layout = layout and device.type == "cuda"
    if not (amp or layout):
        return model
    if layout:
        channels_last(model, device)

    def predict(x: torch.Tensor) -> torch.Tensor:
        with autocast(device, amp):
            return model(channels_last(x, device, layout))

    return predict


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


def check_devices(device: str, gpus: int) -> dict[str, Any]:
    """Whether the device a config asks for exists here: what was found, or why not.

    Args:
        device: the config's ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``).
        gpus: the GPUs per job the config asks for.

    Returns:
        ``device``, ``gpus_asked``, ``gpus_found``, ``name`` (of GPU 0, else ``CPU``),
        ``torch`` and ``cuda`` (the versions).

    Raises:
        ConfigError: CUDA asked for and none seen, or more GPUs asked for than found.

    Example:
        >>> check_devices("cpu", 0)["gpus_asked"]
        0
    """
    asked = f"device {device}" if device != "auto" else f"{gpus} GPU(s)"
    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if (device.startswith("cuda") or gpus > 0) and found == 0:
        raise ConfigError(
            f"the config asks for {asked} "
            "but PyTorch sees no CUDA device. How to fix: set device: auto and gpus: 0 to run "
            "on CPU, or run on a GPU node with a CUDA build of PyTorch"
        )
    if gpus > found > 0:
        raise ConfigError(
            f"the config asks for {gpus} GPUs per job but this node has {found}. How to "
            f"fix: set gpus: {found} or fewer, or ask the scheduler for a larger node"
        )
    return {
        "device": device,
        "gpus_asked": gpus,
        "gpus_found": found,
        "name": torch.cuda.get_device_name(0) if found else "CPU",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }
