"""Atomic file writes: a killed job never leaves a file that looks complete."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

# What tempfile.mkstemp / mkdtemp put between prefix and suffix: 8 of [a-z0-9_].
_RANDOM = r"[a-z0-9_]{8}"
# atomic_write's temporary: ".<name>.<random>.tmp<suffixes of name>".
_TEMPORARY_FILE = re.compile(rf"^\.(?P<name>.+)\.{_RANDOM}\.tmp(?P<suffix>.*)$")
# medtl.io.outputs.fresh_folder's staging and retired folders: ".<name>.partial-<random>".
_STAGING_FOLDER = re.compile(rf"^\..+\.(partial|old)-{_RANDOM}$")


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


def is_temporary(path: str | Path) -> bool:
    """Whether ``path`` is named like a temporary of medtl's own writes.

    :func:`atomic_write` writes ``.<name>.<random>.tmp<suffixes>`` beside ``name`` and
    renames it when complete; :func:`medtl.io.outputs.fresh_folder` stages a folder as
    ``.<name>.partial-<random>``. A process killed mid-write leaves one behind: never an
    input, never a result.

    Example:
        >>> is_temporary("cache/1.2.3/.4.5.dcm.k2j_x9a0.tmp.5.dcm")
        True
        >>> is_temporary(".DS_Store"), is_temporary("IM0001.dcm")
        (False, False)
    """
    name = Path(path).name
    match = _TEMPORARY_FILE.match(name)
    if match is not None:
        return "".join(Path(match["name"]).suffixes) == match["suffix"]
    return _STAGING_FOLDER.match(name) is not None


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write text atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_between_markers(path: str | Path, body: str, start: str, end: str) -> bool:
    r"""Replace the text between the lines ``start`` and ``end`` of the file ``path`` with
    ``body`` (atomically); False, and nothing written, when it lacks either marker.

    For generated tables inside hand-written docs (the benchmarks' and studies' results).

    Example:
        >>> import tempfile
        >>> doc = Path(tempfile.mkdtemp()) / "doc.md"
        >>> _ = doc.write_text("intro\n<!-- a -->\nold\n<!-- b -->\nmore\n")
        >>> write_between_markers(doc, "new\n", "<!-- a -->", "<!-- b -->"), doc.read_text()
        (True, 'intro\n<!-- a -->\nnew\n<!-- b -->\nmore\n')
        >>> write_between_markers(doc, "x\n", "<!-- c -->", "<!-- b -->")
        False
    """
    path = Path(path)
    text = path.read_text() if path.is_file() else ""
    if start not in text or end not in text:
        return False
    head, tail = text[: text.index(start)], text[text.index(end) + len(end) :]
    atomic_write_text(path, f"{head}{start}\n{body}{end}{tail}")
    return True


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write bytes atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_save_dicom(ds, path: str | Path) -> Path:
    """Save a pydicom dataset atomically, as a standard DICOM file (preamble, file meta)."""
    return atomic_write(path, lambda tmp: ds.save_as(tmp, enforce_file_format=True))


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """:func:`torch.save` atomically, the same object always to the same bytes.

    Saved through an open file, the archive inside is named ``archive`` rather than after
    the (randomly named) temporary file, so a checkpoint's SHA-256 in the provenance
    depends on its content alone.

    Example:
        >>> import hashlib, tempfile, torch
        >>> folder = Path(tempfile.mkdtemp())
        >>> a = atomic_torch_save({"w": torch.ones(2)}, folder / "a.pt")
        >>> b = atomic_torch_save({"w": torch.ones(2)}, folder / "b.pt")
        >>> a.read_bytes() == b.read_bytes()
        True
    """
    import torch

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)

    return atomic_write(path, save)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, hex.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x"; _ = p.write_bytes(b"abc")
        >>> sha256_file(p)[:12]
        'ba7816bf8f01'
    """
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
