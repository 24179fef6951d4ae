"""Where a command writes: never over or inside its input, and one run's files at a time.

Two promises every command that writes a folder keeps:

- **Inputs are never written.** :func:`check_separate` refuses an output folder that is an
  input, lies inside an input folder, or contains an input file, before anything is read.
- **Never two runs' files in one folder.** :func:`fresh_folder` has the command write into
  a new hidden folder beside ``out``, which replaces ``out`` as a whole only once every
  file is written. A failed run leaves the previous output as it was; a finished one
  leaves no file of an older run behind (no stale ``rejected.tsv``, no masks of cases that
  are no longer in the input).
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from medtl.kernel.errors import InputError

#: The file every folder written through :func:`fresh_folder` holds: which command wrote it.
MARKER = ".medtl-output.json"


def _resolved(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_separate(out: str | Path, inputs: Iterable[str | Path | None], option: str = "--out"):
    """Refuse an output folder that would write over or inside an input.

    Args:
        out: the output folder the command was given.
        inputs: the input files and folders (None entries are skipped).
        option: the command-line option that named ``out``, for the message.

    Raises:
        InputError: ``out`` is an input, lies inside an input folder, or contains an input.

    Example:
        >>> import tempfile
        >>> scans = Path(tempfile.mkdtemp())
        >>> check_separate(scans / "masks", [scans])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        medtl.kernel.errors.InputError: ...masks: --out lies inside the input folder ...
    """
    target = _resolved(out)
    for given in inputs:
        if given is None:
            continue
        source = _resolved(given)
        if target == source:
            reason = f"{option} is the input itself ({given})"
        elif _inside(target, source) and not source.is_file():
            reason = f"{option} lies inside the input folder {given}"
        elif _inside(source, target):
            reason = f"{option} contains the input {given}"
        else:
            continue
        raise InputError(
            out,
            f"{reason}; medtl never writes over or inside its input",
            f"give {option} a new folder that neither holds nor lies inside the input "
            f"(e.g. a sibling of {Path(given).name or given})",
        )


def _replaceable(
    out: Path, known: tuple[str, ...], command: str, signature: tuple[str, ...]
) -> bool:
    """Whether ``out`` holds nothing but an earlier output of ``command``."""
    entries = [p.name for p in out.iterdir()]
    if not entries:
        return True
    marker = out / MARKER
    if marker.is_file():
        try:
            return json.loads(marker.read_text()).get("command") == command
        except (OSError, ValueError):
            return False
    # Folders written before the marker existed: recognised by their file names only.
    if signature and not any(name in signature for name in entries):
        return False
    return all(any(fnmatch.fnmatch(name, pattern) for pattern in known) for name in entries)


@contextmanager
def fresh_folder(
    out: str | Path,
    command: str,
    known: tuple[str, ...] = (),
    option: str = "--out",
    signature: tuple[str, ...] = (),
) -> Iterator[Path]:
    """A new folder to write a command's whole output into; it becomes ``out`` on success.

    The folder is created beside ``out`` under a hidden name. When the ``with`` block ends
    without an error it replaces ``out`` (an earlier output of the same command is removed
    as a whole); on an error it is deleted and ``out`` is left as it was. ``out`` may be
    missing, empty, or an earlier output of ``command`` (it holds the :data:`MARKER`
    naming the command, or only names matching ``known``); anything else is refused,
    so a folder of the user's own files is never replaced.

    Args:
        out: the output folder.
        command: the command writing it (``predict``, ``ingest``, ...).
        known: glob patterns of the names the command writes, to recognise an output of an
            earlier medtl version that wrote no marker.
        signature: names of which such an earlier output holds at least one (e.g. its
            table), so that a folder of the user's own files that happen to match ``known``
            is not taken for one.
        option: the option that named ``out``, for the message.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "masks"
        >>> with fresh_folder(out, "predict") as tmp:
        ...     _ = (tmp / "a.txt").write_text("first run")
        >>> with fresh_folder(out, "predict") as tmp:
        ...     _ = (tmp / "b.txt").write_text("second run")
        >>> sorted(p.name for p in out.iterdir() if p.name != MARKER)
        ['b.txt']
    """
    given, out = out, _resolved(out)
    if _inside(Path.cwd().resolve(), out):
        raise InputError(
            given,
            f"{option} is the current folder (or holds it); medtl replaces its output folder as "
            "a whole",
            f"give {option} a folder of its own, e.g. {option} masks",
        )
    if out.exists() and not out.is_dir():
        raise InputError(out, f"{option} is a file, expected a folder", f"give {option} a folder")
    if out.is_dir() and not _replaceable(out, known, command, signature):
        raise InputError(
            out,
            f"{option} already holds files that `medtl {command}` did not write "
            f"(e.g. {sorted(p.name for p in out.iterdir())[0]})",
            f"give {option} a new or empty folder (medtl replaces only its own earlier output)",
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        (staging / MARKER).write_text(json.dumps({"command": command}) + "\n")
        yield staging
        os.chmod(staging, 0o755)  # mkdtemp creates 0700; results are meant to be shared
        if out.is_dir():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
            os.replace(out, old / "previous")
            os.replace(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
