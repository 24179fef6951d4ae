"""Atomic file writes: a killed job never leaves a file that looks complete."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary name beside ``path``, then rename it to ``path``.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "x.txt"
        >>> _ = atomic_write(p, lambda tmp: tmp.write_text("hi"))
        >>> p.read_text()
        'hi'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{suffix}")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.chmod(tmp_path, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write text atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write bytes atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_save_dicom(ds, path: str | Path) -> Path:
    """Save a pydicom dataset atomically, as a standard DICOM file (preamble, file meta)."""
    return atomic_write(path, lambda tmp: ds.save_as(tmp, enforce_file_format=True))
