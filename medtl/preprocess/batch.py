"""Preprocess many cases in one process pool, so the workflow starts Python once.

Each case costs a fraction of a second, while starting Python and importing PyTorch
costs seconds; one job per case spent nearly all its time starting up. Here one job
preprocesses every case: each worker process reads, preprocesses and writes its own
cases (atomically, with :func:`~medtl.preprocess.case.save_case`) and hands back only a
small summary, so memory stays at about ``workers`` cases at a time. A case that cannot
be read does not stop the others; the failures are raised together at the end.
"""

from __future__ import annotations

import multiprocessing
import re
import sys
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from nibabel.filebasedimages import ImageFileError
from tqdm.auto import tqdm

from medtl.kernel.errors import InputError, MedtlError
from medtl.preprocess.case import preprocess_files, save_case
from medtl.preprocess.plan import Plan

#: Case ids become file names: letters, digits, ``_ . -`` (as ingest writes them).
_SAFE_ID = re.compile(r"[A-Za-z0-9_.-]+")

#: What reading a broken or truncated NIfTI file raises besides medtl's own errors.
_READ_ERRORS = (ImageFileError, OSError, EOFError, zlib.error, ValueError)


@dataclass(frozen=True)
class CaseDone:
    """A case written: its id, its shape on the plan's grid, and its file."""

    case_id: str
    shape: tuple[int, int, int]
    path: Path


@dataclass(frozen=True)
class CaseFailed:
    """A case that could not be preprocessed: the offending file, what was wrong, the fix."""

    case_id: str
    path: str
    reason: str
    fix: str


class PreprocessError(MedtlError):
    """Some cases could not be preprocessed (the others were written).

    Attributes:
        done: the cases written.
        failed: the cases that failed, each with its file, reason and fix.
    """

    def __init__(self, done: list[CaseDone], failed: list[CaseFailed]) -> None:
        self.done = done
        self.failed = failed
        total = len(done) + len(failed)
        lines = [
            f"{len(failed)} of {total} cases could not be preprocessed "
            f"({len(done)} written, none for these):"
        ]
        lines += [f"  {f.case_id}: {f.path}: {f.reason}. How to fix: {f.fix}" for f in failed]
        super().__init__("\n".join(lines))


def _one_case(case_id: str, image: str, label: str, plan: Plan, out: Path) -> CaseDone | CaseFailed:
    """Read, preprocess and write one case; a bad input file becomes a :class:`CaseFailed`."""
    try:
        case = preprocess_files(Path(image), Path(label) if label else None, plan)
    except InputError as exc:
        return CaseFailed(case_id, exc.path, exc.reason, exc.fix)
    except MedtlError as exc:
        return CaseFailed(case_id, image, str(exc), "fix the input, then rerun preprocess")
    except _READ_ERRORS as exc:
        culprit = _unreadable(image, label)
        if culprit is None:  # both files read fine: not a bad file but a bug, so say so
            raise
        return CaseFailed(
            case_id,
            culprit,
            f"cannot be read as NIfTI ({type(exc).__name__}: {exc})",
            "replace the file with a readable copy (or rerun ingest), then rerun preprocess",
        )
    save_case(out, case)
    return CaseDone(case_id, tuple(int(n) for n in case.image.shape[1:]), out)


def _unreadable(image: str, label: str) -> str | None:
    """The first of a case's files that nibabel cannot read through, or None."""
    for path in (image, label):
        if not path:
            continue
        try:
            np.asarray(nib.load(path).dataobj)
        except Exception:  # noqa: BLE001 - only naming the file; the caller has the error
            return path
    return None


def _single_thread() -> None:
    """Worker start-up: one PyTorch thread per worker (the workers are the parallelism)."""
    torch.set_num_threads(1)


def _pool_context() -> multiprocessing.context.BaseContext:
    """``fork`` on Linux, where workers then share the parent's imports instead of importing
    PyTorch again (seconds each); the platform's default elsewhere (fork is unsafe on macOS).
    """
    if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context()


def _jobs(manifest: pd.DataFrame, cases: Iterable[str] | None, labelled_only: bool) -> pd.DataFrame:
    """The manifest rows to preprocess, checked: known, unique, file-name-safe case ids."""
    missing = {"case_id", "image", "label"} - set(manifest.columns)
    if missing:
        raise InputError(
            "manifest.tsv",
            f"expected columns case_id, image, label; missing {sorted(missing)}",
            "regenerate it with the ingest stage",
        )
    table = manifest.astype({"case_id": str, "image": str}).copy()
    table["label"] = table["label"].fillna("").astype(str)
    dup = sorted(table.loc[table["case_id"].duplicated(), "case_id"].unique())
    if dup:
        raise InputError(
            "manifest.tsv",
            f"case ids {dup} appear more than once (each case is written to <case>.npz)",
            "give every case its own case_id (rerun ingest)",
        )
    bad = [c for c in table["case_id"] if not _SAFE_ID.fullmatch(c) or c in {".", ".."}]
    if bad:
        raise InputError(
            "manifest.tsv",
            f"case ids {bad[:5]} are not plain file names (letters, digits, _ . - only)",
            "rename the cases (case_id column of the case sheet) and rerun ingest",
        )
    if cases is not None:
        wanted = list(dict.fromkeys(cases))
        unknown = sorted(set(wanted) - set(table["case_id"]))
        if unknown:
            raise InputError("manifest.tsv", f"cases {unknown} not in the manifest", "rerun ingest")
        table = table.set_index("case_id", drop=False).loc[wanted].reset_index(drop=True)
    if labelled_only:
        table = table[table["label"] != ""]
    return table


def preprocess_cases(
    manifest_df: pd.DataFrame,
    plan: Plan,
    out_dir: str | Path,
    workers: int = 1,
    progress: bool = False,
    cases: Iterable[str] | None = None,
    labelled_only: bool = False,
    on_done: Callable[[CaseDone | CaseFailed], None] | None = None,
) -> list[CaseDone]:
    """Preprocess the manifest's cases in parallel into ``out_dir/<case_id>.npz``.

    Labelled cases keep their label in the file, unlabelled ones are written without.
    The output does not depend on ``workers``: every case is computed with one PyTorch
    thread, alone, by the same code.

    Args:
        manifest_df: the ingest manifest (columns ``case_id``, ``image``, ``label``; an
            empty label is an unlabelled case).
        plan: the preprocessing plan.
        out_dir: folder of the ``.npz`` files (created if needed). Files of other cases
            already there are left alone.
        workers: processes preprocessing at once; 1 runs in this process, without a pool.
        progress: show a progress bar (tqdm, on stderr).
        cases: only these case ids (default: every case of the manifest).
        labelled_only: skip unlabelled cases (the training workflow needs only the
            labelled ones).
        on_done: called in this process with each case's outcome as it finishes.

    Returns:
        The cases written, in manifest order.

    Raises:
        InputError: the manifest lacks columns, repeats a case id, has a case id that is
            not a plain file name, or ``cases`` names a case it does not have.
        PreprocessError: some cases failed (their files unreadable or inconsistent); all
            the others were written, and no ``.npz`` is left for a failed case. The
            message lists each failed case with its file, the reason and the fix.
        MedtlError: a worker process died (e.g. killed for memory); fewer workers help.
        ValueError: ``workers`` is less than 1.

    Example:
        >>> done = preprocess_cases(read_manifest("manifest.tsv"), Plan.load("plan.json"),
        ...                         "cases", workers=2)  # doctest: +SKIP
    """
    if workers < 1:
        raise ValueError(f"expected workers >= 1, found {workers}; fix: pass workers=1 or more")
    table = _jobs(manifest_df, cases, labelled_only)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [
        (row.case_id, row.image, row.label, plan, out_dir / f"{row.case_id}.npz")
        for row in table.itertuples(index=False)
    ]
    _clear_leftovers(out_dir, jobs)
    results: dict[str, CaseDone | CaseFailed] = {}

    def record(result: CaseDone | CaseFailed, bar) -> None:
        results[result.case_id] = result
        if on_done is not None:
            on_done(result)
        bar.update()

    n = min(workers, len(jobs))
    if n <= 1:
        _in_this_process(jobs, progress, record)
    else:
        _in_pool(jobs, n, progress, record)
    return _written(results, jobs, out_dir)


def _clear_leftovers(out_dir: Path, jobs: list[tuple]) -> None:
    """Remove the temporary files a killed earlier run left of these cases."""
    for job in jobs:
        # atomic_write's names
        for tmp in out_dir.glob(f".{job[0]}.npz.*.tmp.npz"):
            tmp.unlink(missing_ok=True)


def _in_this_process(jobs: list[tuple], progress: bool, record: Callable) -> None:
    """Run the jobs one after the other here, with one PyTorch thread as in the pool."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tqdm(total=len(jobs), desc="preprocess", unit="case", disable=not progress) as bar:
            for job in jobs:
                record(_one_case(*job), bar)
    finally:
        torch.set_num_threads(threads)


def _written(
    results: dict[str, CaseDone | CaseFailed], jobs: list[tuple], out_dir: Path
) -> list[CaseDone]:
    """The cases written, in the jobs' order; no file is left of a failed case.

    Raises:
        PreprocessError: some cases failed.
    """
    for failed in (r for r in results.values() if isinstance(r, CaseFailed)):
        # An older file of this case would not match this plan: leave none.
        (out_dir / f"{failed.case_id}.npz").unlink(missing_ok=True)
    ordered = [results[job[0]] for job in jobs]
    done = [r for r in ordered if isinstance(r, CaseDone)]
    failed = [r for r in ordered if isinstance(r, CaseFailed)]
    if failed:
        raise PreprocessError(done, failed)
    return done


def _in_pool(jobs: list[tuple], workers: int, progress: bool, record: Callable) -> None:
    """Run the jobs in a process pool of ``workers``, handing each result to ``record``."""
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=_pool_context(), initializer=_single_thread
    )
    futures: dict[Future, str] = {}
    finished_ids: set[str] = set()
    try:
        # Submit everything before the progress bar starts its monitor thread: with fork,
        # the workers start at the first submit, from a process without threads.
        futures = {pool.submit(_one_case, *job): job[0] for job in jobs}
        with tqdm(total=len(jobs), desc="preprocess", unit="case", disable=not progress) as bar:
            pending = set(futures)
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    record(future.result(), bar)
                    finished_ids.add(futures[future])
    except BrokenProcessPool as exc:
        left = sorted({job[0] for job in jobs} - finished_ids)
        raise MedtlError(
            f"a preprocessing worker died (cases not done: {', '.join(left[:10])}"
            f"{' ...' if len(left) > 10 else ''}); it was most likely killed for memory. "
            "How to fix: use fewer workers (--workers, config key preprocess.workers) or "
            "give the job more memory, then rerun"
        ) from exc
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
