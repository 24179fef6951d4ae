"""Resumable training state: random generators and checkpoint files, without pickles.

A job killed at any point restarts from its last full-state checkpoint (``last.pt``)
and, on the CPU with deterministic settings, ends exactly where an uninterrupted run
ends. That needs every random generator the run draws from: torch's (CPU and CUDA),
NumPy's global one, Python's :mod:`random`, and the batch stream's own position
(:class:`medtl.train.data.PatchStream`). Everything is stored as tensors and plain
Python values, so ``torch.load(..., weights_only=True)`` reads it back and no pickled
code ever runs.

Example:
    >>> import random
    >>> state = rng_state()
    >>> a = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    >>> set_rng_state(state)
    >>> a == (random.random(), float(np.random.rand()), float(torch.rand(1)))
    True
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medtl.kernel.files import atomic_torch_save


def rng_state() -> dict[str, Any]:
    """The state of every global random generator, as tensors and plain values."""
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": int(version),
            "state": [int(v) for v in internal],
            "gauss_next": None if gauss_next is None else float(gauss_next),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # the current GPU's only: touching the others would open a context on each of them
        state["cuda"] = torch.cuda.get_rng_state(torch.cuda.current_device()).cpu()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators saved by :func:`rng_state`.

    The CUDA state (of the GPU the saving process used) goes to this process's current
    GPU; every rank of a data-parallel job gets rank 0's, which all ranks share anyway
    (they are seeded alike and draw alike).
    """
    torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    n = state["numpy"]
    np.random.set_state(
        (
            n["name"],
            n["keys"].cpu().numpy().astype(np.uint32),
            int(n["pos"]),
            int(n["has_gauss"]),
            float(n["cached_gaussian"]),
        )
    )
    p = state["python"]
    random.setstate((int(p["version"]), tuple(int(v) for v in p["state"]), p["gauss_next"]))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda.cpu().to(torch.uint8), torch.cuda.current_device())


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write a state dict atomically: a killed job leaves the previous file or the new one.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "last.pt"
        >>> save_state(p, {"step": 3, "rng": rng_state()})
        >>> load_state(p)["step"]
        3
    """
    atomic_torch_save(state, path)


def load_state(path: Path) -> dict[str, Any] | None:
    """Read a state written by :func:`save_state` (tensors on the CPU); None if absent."""
    path = Path(path)
    if not path.is_file():
        return None
    from medtl.models.safe_read import safe_load

    return safe_load(
        path,
        remake=f"delete {path} and rerun: the run then starts again from step 0 instead of "
        "resuming",
    )


def remove_stale_temporaries(folder: Path, names: Iterable[str]) -> list[Path]:
    """Delete the temporary files a killed job left beside its outputs.

    :func:`medtl.kernel.files.atomic_write` writes ``.<name>.<random>.tmp<suffix>`` and
    renames it; a job killed in between leaves that file behind. Only the temporaries
    of the given output names are removed.

    Returns:
        The files removed.
    """
    removed = []
    for name in names:
        for p in Path(folder).glob(f".{name}.*.tmp*"):
            if p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def curves_up_to(rows: Iterable[dict[str, Any]], step: int) -> list[dict[str, Any]]:
    """The curve rows of steps ``1 … step`` (a resumed run drops what it redoes).

    Example:
        >>> curves_up_to([{"step": 1}, {"step": "2"}, {"step": 3}], 2)
        [{'step': 1}, {'step': '2'}]
    """
    return [dict(r) for r in rows if int(r["step"]) <= step]
