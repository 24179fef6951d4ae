"""The bad-input corpus: small inputs generated on the fly, each with its exact outcome.

Every entry says what the input is, what must happen to it and what the message must
say. ``test_corpus.py`` runs each one and checks, beyond that outcome, three promises:
no traceback reaches the user, no input file is modified (every file under the input
folder is hashed before and after, and no file appears or disappears there), and a file
that is set aside or refused is named in its message. ``docs/reliability.md`` shows the
corpus as a table, checked against this registry.

An entry is registered with :func:`case` on a function ``setup(root)``: it writes its
input under ``root / "in"`` and returns a function of no arguments that runs the command
(outputs under ``root / "out"``) and reports what happened as an :class:`Outcome`,
through one of the runners below (:func:`cli_outcome`, :func:`ingest_outcome`). The test
fingerprints the input between the two. Entries live in ``corpus_<area>.py``, one module
per area.

Example:
    >>> @case("example", "NIfTI", "a file that is not NIfTI", SET_ASIDE, r"cannot read",
    ...       names="a.nii.gz")  # doctest: +SKIP
    ... def _(root):
    ...     (root / "in" / "a.nii.gz").write_text("hello")
    ...     return lambda: ingest_outcome(root / "in", root / "out" / "i", "a.nii.gz")
"""

from __future__ import annotations

import hashlib
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

#: The outcomes an input can have.
SET_ASIDE = "set aside"  # listed in rejected.tsv with its reason and fix; the others carry on
ERROR = "error"  # the command stops with a one-line message (exit 1) naming file and fix
ACCEPTED = "accepted"  # used as it is (possibly with a note), nothing refused
OUTCOMES = (SET_ASIDE, ERROR, ACCEPTED)

#: The areas of the corpus, in the order of the table in docs/reliability.md.
AREAS = (
    "NIfTI",
    "NRRD / MHA",
    "case sheet",
    "DICOM",
    "RTSTRUCT / SEG",
    "config",
    "checkpoint",
    "predict",
    "outputs",
)


@dataclass
class Outcome:
    """What happened when the corpus entry ran.

    Attributes:
        kind: one of :data:`OUTCOMES`.
        message: the error message, or the rejection's reason and fix, or notes of an
            accepted input.
        traceback: the text of an unexpected exception, if one escaped.
        output: the folder the command wrote (for entries that check more).
        details: anything else the entry wants to assert on (e.g. the manifest).
    """

    kind: str
    message: str = ""
    traceback: str = ""
    output: Path | None = None
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    """One corpus entry.

    Attributes:
        name: the test id, e.g. ``nifti_nan_voxel``.
        area: one of :data:`AREAS`.
        input: one line for the docs table: what the input is.
        expect: the outcome it must have, one of :data:`OUTCOMES`.
        message: a regular expression the message must match (case-insensitive).
        names: a file name the message must mention (set aside / error entries), or "".
        setup: writes the input under ``root / "in"``; returns the function that runs it.
        check: optional further assertions on the outcome.
    """

    name: str
    area: str
    input: str
    expect: str
    message: str
    setup: Callable[[Path], Callable[[], Outcome]]
    names: str = ""
    check: Callable[[Outcome], None] | None = None


REGISTRY: dict[str, Case] = {}


def case(
    name: str,
    area: str,
    input: str,
    expect: str,
    message: str,
    names: str = "",
    check: Callable[[Outcome], None] | None = None,
):
    """Register the decorated ``setup(root) -> run`` function as a corpus entry."""
    assert area in AREAS, area
    assert expect in OUTCOMES, expect
    assert name not in REGISTRY, f"corpus entry {name!r} registered twice"

    def register(setup: Callable[[Path], Callable[[], Outcome]]):
        REGISTRY[name] = Case(name, area, input, expect, message, setup, names, check)
        return setup

    return register


# ---------------------------------------------------------------------------- runners


def run_cli(args: list[str]) -> tuple[int, str, str]:
    """Run ``medtl ARGS`` in this process; return (exit code, output, traceback text).

    The traceback text is empty unless an exception other than the CLI's own exit
    escaped (which the corpus counts as a failure: users must never see one).
    """
    from typer.testing import CliRunner

    from medtl.cli.main import app

    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=True)
    text = result.output  # click >= 8.2 mixes stderr into output
    tb = ""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        tb = "".join(traceback.format_exception(result.exception))
    return result.exit_code, text, tb


def cli_outcome(args: list[str]) -> Outcome:
    """A command that either works (exit 0: accepted) or stops with a message (error)."""
    code, text, tb = run_cli(args)
    if tb:
        return Outcome(ERROR, text, tb)
    if code == 0:
        return Outcome(ACCEPTED, text)
    return Outcome(ERROR, text)


def ingest_outcome(
    source: Path, out: Path, target: str | Path, extra: list[str] | tuple[str, ...] = ()
) -> Outcome:
    """Run ``medtl ingest SOURCE --out OUT`` and report what became of ``target``.

    ``target`` is a path (or a file-name fragment) of the input under test: the outcome is
    *set aside* when a row of ``rejected.tsv`` names it (the message is that row's reason
    and fix), *error* when the command stopped, else *accepted* (the message then holds
    every rejection and the manifest's notes). ``details["manifest"]`` and
    ``details["rejected"]`` hold the two tables when they were written.
    """
    code, text, tb = run_cli(["ingest", source, "--out", out, "--quiet", *extra])
    if tb:
        return Outcome(ERROR, text, tb, out)
    details = {}
    for table in ("manifest", "rejected"):
        path = out / f"{table}.tsv"
        if path.is_file():
            details[table] = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    if code != 0:
        return Outcome(ERROR, text, "", out, details)
    rejected = details.get("rejected", pd.DataFrame(columns=["path", "reason", "fix"]))
    needle = Path(target).name if isinstance(target, Path) else str(target)
    hits = rejected[rejected["path"].str.contains(needle, regex=False)]
    if len(hits):
        message = " | ".join(f"{r.path}: {r.reason}. Fix: {r.fix}" for r in hits.itertuples())
        return Outcome(SET_ASIDE, message, "", out, details)
    notes = [f"{r.path}: {r.reason}" for r in rejected.itertuples()]
    manifest = details.get("manifest")
    if manifest is not None and "note" in manifest:
        notes += [f"{r.case_id}: {r.note}" for r in manifest.itertuples() if r.note]
    return Outcome(ACCEPTED, " | ".join(notes), "", out, details)


# ----------------------------------------------------------------- input fingerprints


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path → SHA-256 of its bytes)."""
    out = {}
    if not folder.exists():
        return out
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\s+File \".*\", line \d+", re.M)


# ------------------------------------------------------------------ input builders


def write_nifti(path: Path, array=None, affine=None, dtype: str = "int16") -> Path:
    """A small NIfTI volume (default: 8×8×6 voxels of a gradient, 2 mm isotropic)."""
    import nibabel as nib
    import numpy as np

    if array is None:
        array = np.arange(8 * 8 * 6).reshape(8, 8, 6) % 50
    if affine is None:
        affine = np.diag([2.0, 2.0, 2.0, 1.0])
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array).astype(dtype), affine), str(path))
    return path


def good_nifti_case(folder: Path, name: str = "good") -> tuple[Path, Path]:
    """A usable labelled case ``images/<name>.nii.gz`` + ``labels/<name>.nii.gz``, so that
    a bad input beside it is set aside while this one carries on."""
    import numpy as np

    label = np.zeros((8, 8, 6), dtype=np.uint8)
    label[2:5, 2:5, 2:4] = 1
    return (
        write_nifti(folder / "images" / f"{name}.nii.gz"),
        write_nifti(folder / "labels" / f"{name}.nii.gz", label, dtype="uint8"),
    )
