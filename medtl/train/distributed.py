"""Data-parallel training on several GPUs (or CPU processes) with PyTorch DDP.

A training or pretraining job launched by ``torchrun`` (``python -m
torch.distributed.run --standalone --nproc-per-node N -m medtl train ...``) finds
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in its environment; :func:`init` then joins
the process group (``nccl`` on CUDA, ``gloo`` on the CPU) and gives each process its
device (``cuda:LOCAL_RANK``). Without those variables every helper here describes a
single process (rank 0 of 1) and does nothing, so the same code runs either way.

The design keeps a run the same as one process up to the order of floating-point sums:

* every rank draws the **same global batch** from the same seeded stream and trains on
  its own slice (samples ``rank::world_size``, see :func:`shard`), so the batch size
  must be a multiple of the number of processes (:func:`check_batch_size`);
* DDP averages the gradients of the slices, which is the gradient of the mean loss over
  the whole batch (the losses are means over samples, and the networks normalise each
  sample on its own: instance or layer norm; BatchNorm layers become ``SyncBatchNorm``
  on CUDA);
* only rank 0 (:func:`is_main`) validates, writes files and shows progress; decisions
  taken there (best checkpoint, early stop) are sent to every rank
  (:func:`broadcast_floats`), so all ranks stop together.

Two exceptions to "the same as one process": with ``model.dropout`` > 0 each rank draws
the dropout masks of its own slice (the same distribution, other masks), and BatchNorm
layers of a CPU job (gloo; ``SyncBatchNorm`` needs CUDA) normalise over the rank's slice.
The default ``basicunet`` has neither (instance norm, no dropout).

Example:
    >>> world_size(), rank(), is_main(), is_distributed()  # a plain process
    (1, 0, True, False)
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta

import torch
import torch.distributed as dist

from medtl.kernel.errors import ConfigError

#: How long a rank waits for the others (e.g. while rank 0 validates) before failing.
TIMEOUT = timedelta(minutes=int(os.environ.get("MEDTL_DIST_TIMEOUT_MIN", "120")))


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def world_size() -> int:
    """Number of processes of the job (1 without ``torchrun``)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return _env_int("WORLD_SIZE", 1)


def rank() -> int:
    """This process's rank (0 without ``torchrun``)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return _env_int("RANK", 0)


def local_rank() -> int:
    """This process's rank on its machine, i.e. the index of its GPU."""
    return _env_int("LOCAL_RANK", 0)


def is_main() -> bool:
    """Whether this process validates, writes files and reports (rank 0)."""
    return rank() == 0


def is_distributed() -> bool:
    """Whether the job runs as several processes."""
    return world_size() > 1


def init(device: torch.device) -> torch.device:
    """Join the process group when launched by ``torchrun``; returns this rank's device.

    Does nothing for a single process or when the group already exists. The backend is
    ``nccl`` for CUDA devices and ``gloo`` otherwise; on CUDA each rank uses
    ``cuda:LOCAL_RANK``.

    Args:
        device: the device the settings ask for (``cpu`` or ``cuda``).

    Returns:
        The device this rank computes on.

    Raises:
        ConfigError: a CUDA job has more processes on this machine than GPUs.
    """
    if not is_distributed():
        return device
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if local_rank() >= count:
            raise ConfigError(
                f"torchrun started {_env_int('LOCAL_WORLD_SIZE', world_size())} processes on "
                f"this machine but it has {count} GPU(s); expected one process per GPU. "
                "How to fix: give the rule as many GPUs as --nproc-per-node, or lower it"
            )
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, timeout=TIMEOUT, **kwargs)
    return device


def cleanup() -> None:
    """Leave the process group (if this process is in one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def process_group(device: torch.device) -> Iterator[torch.device]:
    """:func:`init` on entry; yields this rank's device.

    The group is left at the process's exit (:func:`cleanup` is registered with
    :mod:`atexit`), not at the end of the block: ``torchrun``'s store cannot host a
    second group in the same process, and a job may train more than once.
    """
    joined = is_distributed() and not (dist.is_available() and dist.is_initialized())
    device = init(device)
    if joined:
        atexit.register(cleanup)
    yield device


def barrier() -> None:
    """Wait until every rank gets here (no-op for one process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def check_batch_size(batch_size: int, key: str) -> None:
    """Refuse a batch that cannot be split evenly over the processes.

    Args:
        batch_size: patches per optimiser step (over all processes).
        key: the config key, for the message (``train.batch_size``).

    Raises:
        ConfigError: ``batch_size`` is not a multiple of the number of processes.

    Example:
        >>> check_batch_size(2, "train.batch_size")  # one process: anything goes
    """
    n = world_size()
    if batch_size % n:
        fixed = max(n, round(batch_size / n) * n)
        raise ConfigError(
            f"config key '{key}': got {batch_size} with {n} processes (one per GPU); the "
            f"global batch is split evenly, so expected a multiple of {n}. How to fix: set "
            f"{key} to e.g. {fixed}, or run on a number of GPUs that divides it"
        )


def shard(batch: torch.Tensor) -> torch.Tensor:
    """This rank's share of a global batch: samples ``rank::world_size``.

    Example:
        >>> shard(torch.arange(4)).tolist()  # a single process keeps the whole batch
        [0, 1, 2, 3]
    """
    n = world_size()
    return batch if n == 1 else batch[rank() :: n]


def _comm_device(device: torch.device) -> torch.device:
    """Where collective tensors live: the GPU for nccl, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return device if device.type == "cuda" else torch.device("cuda", local_rank())
    return torch.device("cpu")


def mean_over_ranks(value: float, device: torch.device) -> float:
    """The mean of a number over all ranks (the number itself for one process)."""
    if not is_distributed() or not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_comm_device(device))
    dist.all_reduce(t)
    return float(t.item()) / world_size()


def broadcast_floats(values: Sequence[float], device: torch.device) -> list[float]:
    """Rank 0's numbers, on every rank (the numbers themselves for one process).

    Used to send decisions (best step, early stop) from the rank that validates.
    """
    if not is_distributed() or not dist.is_initialized():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_comm_device(device))
    dist.broadcast(t, src=0)
    return [float(v) for v in t.cpu().tolist()]


def wrap(
    model: torch.nn.Module, device: torch.device
) -> torch.nn.Module | torch.nn.parallel.DistributedDataParallel:
    """The model as DDP for a distributed job (the model itself otherwise).

    Call again whenever the set of trainable parameters changes (stages unfrozen): DDP
    registers the parameters that require gradients when it is built.
    """
    if not is_distributed():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def sync_batchnorm(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """BatchNorm layers as ``SyncBatchNorm`` for a distributed CUDA job.

    Batch statistics then cover the global batch, as in one process. ``SyncBatchNorm``
    needs CUDA; a distributed CPU job (gloo, for tests) normalises over each rank's slice.
    The parameters are shared with the old layers, so the model keeps its weights.
    """
    if not is_distributed() or device.type != "cuda":
        return model
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model) if has_bn else model
