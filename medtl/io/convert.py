"""Convert every image series under a DICOM folder to NIfTI, one file per series.

:func:`convert_dicom` finds the series with :func:`medtl.io.dicom.discover` (headers only,
in parallel), then reads, checks and writes the series in a pool of worker processes, one
series per worker at a time, so memory stays at about one series per worker. Each series
goes through :func:`medtl.io.dicom.load_series_checked` with all its checks (ordering by
position along the slice normal, missing slices, uniform spacing, tilt, localizers and
duplicates set aside); a series that fails them is set aside with the reason and the
others carry on.

The output folder gets:

* one ``<patient>_<series>.nii.gz`` (or ``.nii``) per series: both parts keyed hashes
  (:func:`medtl.io.deid.hash_id`) of the PatientID (StudyInstanceUID when there is none)
  and of the SeriesInstanceUID, so names hold no patient identifier and stay the same
  from run to run whatever else the folder holds;
* ``series.tsv``: one row per written file (hashed patient, SeriesInstanceUID, modality,
  shape, spacing, orientation, data type, slices);
* ``rejected.tsv``: every file or series set aside, with the reason and how to fix it
  (paths relative to the input folder); label objects (RTSTRUCT, SEG) are listed there
  too, since only ``medtl ingest`` turns them into label maps.

Values are ``stored * RescaleSlope + RescaleIntercept``. When slope and intercept are
integers (CT, most MR) the exact values are written as integers in the smallest type that
holds them (int16 for CT), as dcm2niix does, rather than as float32: half the bytes to
compress and write. Otherwise the image is float32, as ``medtl ingest`` writes it.

Example:
    >>> options = ConvertOptions(salt="s3cret", workers=4)
    >>> result = convert_dicom(Path("export"), Path("nifti"), options)  # doctest: +SKIP
    >>> [(row.file, row.shape) for row in result.series]  # doctest: +SKIP
    [('5c0e1a29bd_8f3b2a10.nii.gz', '512x512x120')]
"""

from __future__ import annotations

import gzip
import multiprocessing
import sys
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack
from dataclasses import astuple, dataclass, field, fields
from pathlib import Path

from tqdm import tqdm

from medtl.io.deid import hash_id
from medtl.io.outputs import check_separate, fresh_folder
from medtl.kernel.errors import InputError, MedtlError, Rejection
from medtl.kernel.files import atomic_write, atomic_write_text

# nibabel's own default for .nii.gz (nibabel.openers.Opener.default_compresslevel).
DEFAULT_LEVEL = 1
REJECTED_COLUMNS = ["path", "reason", "fix"]  # as ingest's rejected.tsv
_LABEL_FIX = (
    "nothing to do if you only need the images; to turn RTSTRUCT / DICOM-SEG labels into "
    "label maps on their series' grid, run `medtl ingest` on the folder"
)


@dataclass(frozen=True)
class ConvertOptions:
    """How :func:`convert_dicom` converts.

    Attributes:
        salt: key of the hashes in file names and ``patient_id``.
        workers: processes converting series in parallel (and threads reading headers).
        compress: write ``.nii.gz`` (gzip) rather than ``.nii``.
        level: gzip level, 1 (fastest) to 9 (smallest); nibabel's default is 1.
        progress: show progress bars on stderr.
    """

    salt: str
    workers: int = 2
    compress: bool = True
    level: int = DEFAULT_LEVEL
    progress: bool = False


@dataclass(frozen=True)
class ConvertedSeries:
    """One written NIfTI file: a row of ``series.tsv``.

    Attributes:
        file: the file name (in the output folder).
        patient_id: keyed hash of the PatientID (of the StudyInstanceUID without one).
        series_uid: SeriesInstanceUID.
        modality: Modality, ``"unknown"`` if absent.
        shape: voxels along the array axes, ``"512x512x120"``.
        spacing: voxel size in mm along the array axes, ``"0.700x0.700x2.500"``.
        orientation: axis codes of the array axes, e.g. ``"LPS"``.
        dtype: the NIfTI data type, e.g. ``"int16"``.
        slices: slices in the volume.
        set_aside: files or frames of the series left out (listed in ``rejected.tsv``).
        note: what was done to the slices, e.g. variable slice spacing resampled to
            equidistant slices; ``""`` when nothing was.
    """

    file: str
    patient_id: str
    series_uid: str
    modality: str
    shape: str
    spacing: str
    orientation: str
    dtype: str
    slices: int
    set_aside: int
    note: str = ""


SERIES_COLUMNS = [f.name for f in fields(ConvertedSeries)]


@dataclass
class ConvertResult:
    """What :func:`convert_dicom` wrote.

    Attributes:
        series: the written files, in discovery order (patient, study, series number).
        rejected: the files and series set aside, with reasons.
        series_tsv: path of ``series.tsv``.
        rejected_tsv: path of ``rejected.tsv``.
    """

    series: list[ConvertedSeries] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    series_tsv: Path | None = None
    rejected_tsv: Path | None = None


@dataclass(frozen=True)
class _Task:
    """One series to convert, as sent to a worker process."""

    index: int
    series: object  # medtl.io.dicom.SeriesInfo
    path: Path
    patient_id: str
    compress: bool
    level: int


def convert_dicom(root: Path, out: Path, options: ConvertOptions) -> ConvertResult:
    """Write one NIfTI per image series under ``root`` into ``out``, with the lists.

    The output is written into a hidden folder beside ``out`` that replaces ``out`` as a
    whole once complete (:func:`medtl.io.outputs.fresh_folder`): a failed run leaves an
    earlier output as it was, and a finished one never mixes in files of an earlier run.

    Args:
        root: the DICOM folder (any tree; hidden files are listed as set aside).
        out: the output folder: new, empty, or an earlier output of ``medtl convert``;
            never inside ``root``, nor holding it.
        options: salt, workers, compression.

    Returns:
        The written series and the rejections; both are also in ``out/series.tsv`` and
        ``out/rejected.tsv``.

    Raises:
        InputError: ``root`` is not a folder; ``out`` is, holds or lies inside ``root``,
            or holds files ``medtl convert`` did not write; or no series could be
            converted (the reasons are in ``rejected.tsv``, which is written first).
        ValueError: ``workers`` below 1 or ``level`` outside 1-9.
        MedtlError: a worker process died (e.g. killed for lack of memory).
    """
    root, out = Path(root), Path(out)
    if options.workers < 1:
        raise ValueError(
            f"expected workers >= 1, got {options.workers}; fix: pass --workers 1 or more"
        )
    if not 1 <= options.level <= 9:
        raise ValueError(
            f"expected a gzip level from 1 to 9, got {options.level}; fix: pass --level 1 "
            "(fastest, nibabel's default) to 9 (smallest)"
        )
    check_separate(out, [root])
    known = ("series.tsv", "rejected.tsv", "*.nii", "*.nii.gz")
    with fresh_folder(out, "convert", known=known) as staging:
        result, found = _convert_into(root, staging, options)
    result.series_tsv, result.rejected_tsv = out / "series.tsv", out / "rejected.tsv"
    if not result.series:
        raise InputError(
            root,
            f"expected at least one DICOM image series that can be converted, found none "
            f"({found}; {len(result.rejected)} files or series set aside in all)",
            f"see the reasons in {result.rejected_tsv}; point convert at the folder that "
            "holds the DICOM series",
        )
    return result


def _convert_into(root: Path, out: Path, options: ConvertOptions) -> tuple[ConvertResult, str]:
    """Convert into ``out`` (the staging folder); the result and what discovery looked at."""
    from medtl.io.dicom import discover

    results: dict[int, ConvertedSeries] = {}
    with ExitStack() as stack:
        # One pool for the header reads and the series: forked once, after the imports.
        pool = stack.enter_context(_pool(options.workers)) if options.workers > 1 else None
        inventory = discover(
            root, workers=options.workers, progress=options.progress, executor=pool
        )
        rejected = list(inventory.rejected)
        rejected += [
            Rejection(
                str(label.path),
                f"{label.kind} label object, not an image series: convert writes images only",
                _LABEL_FIX,
            )
            for label in inventory.labels
        ]
        tasks = _tasks(inventory.series, root, out, options)
        for index, row, rejections in _run(tasks, pool, options.progress):
            rejected += rejections
            if row is not None:
                results[index] = row
    result = ConvertResult(
        series=[results[i] for i in sorted(results)],
        rejected=sorted(rejected, key=lambda r: r.path),
    )
    atomic_write_text(out / "series.tsv", _tsv(SERIES_COLUMNS, [astuple(r) for r in result.series]))
    atomic_write_text(
        out / "rejected.tsv",
        _tsv(
            REJECTED_COLUMNS,
            [(_relative(r.path, root), r.reason, r.fix) for r in result.rejected],
        ),
    )
    return result, inventory.summary()


def _tasks(series: list, root: Path, out: Path, options: ConvertOptions) -> list[_Task]:
    """A task per series, with its output name.

    Names are ``<hash of patient>_<hash of series>``; multi-frame files of one series
    (each a series of its own) hash the SeriesInstanceUID with the file's path.
    """
    suffix = ".nii.gz" if options.compress else ".nii"
    uses = Counter(s.series_uid for s in series)
    tasks = []
    for index, s in enumerate(series):
        key = s.series_uid
        if uses[key] > 1:
            key = f"{key}/{_relative(str(s.files[0]), root)}"
        patient = hash_id(s.patient_key or s.study_uid, options.salt)
        name = f"{patient}_{hash_id(key, options.salt, 8)}{suffix}"
        tasks.append(_Task(index, s, out / name, patient, options.compress, options.level))
    return tasks


def _run(
    tasks: list[_Task], pool: Executor | None, progress: bool
) -> Iterator[tuple[int, ConvertedSeries | None, list[Rejection]]]:
    """Convert the tasks on ``pool`` (one series per worker at a time), or here if None."""
    with tqdm(total=len(tasks), desc="convert", unit="series", disable=not progress) as bar:
        if pool is None:
            for task in tasks:
                yield _convert_series(task)
                bar.update()
            return
        futures = [pool.submit(_convert_series, task) for task in tasks]
        try:
            for future in as_completed(futures):
                yield future.result()
                bar.update()
        except BrokenProcessPool:
            raise MedtlError(
                "a worker process converting a series died (expected it to finish; found it "
                "killed, most often by the system running out of memory). How to fix: run "
                "again with fewer --workers, each worker holds one series in memory"
            ) from None


def _pool(workers: int) -> Executor:
    """Worker processes; forked on Linux, so they start with the modules already imported."""
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else None)
    return ProcessPoolExecutor(max_workers=workers, mp_context=context)


def _convert_series(task: _Task) -> tuple[int, ConvertedSeries | None, list[Rejection]]:
    """Read, check and write one series (in a worker); a series that fails is set aside."""
    from medtl.io.dicom import load_series_with_notes

    try:
        loaded = load_series_with_notes(task.series, keep_integers=True)
    except InputError as err:
        return task.index, None, [err.to_rejection()]
    except Exception as exc:  # one odd series must not stop the others
        where = task.series.files[0].parent if task.series.files else task.series.series_uid
        return (
            task.index,
            None,
            [
                Rejection(
                    str(where),
                    f"expected a readable DICOM image series, found one that could not be "
                    f"read ({type(exc).__name__}: {exc})",
                    "copy the series again from the source (PACS export, CD); if it stays "
                    "unreadable, report it with the error",
                )
            ],
        )
    volume, set_aside = loaded.volume, loaded.set_aside
    image = volume.to_nifti()
    atomic_write(task.path, lambda tmp: _save(image, tmp, task.compress, task.level))
    row = ConvertedSeries(
        file=task.path.name,
        patient_id=task.patient_id,
        series_uid=task.series.series_uid,
        modality=volume.modality,
        shape="x".join(str(s) for s in volume.shape),
        spacing="x".join(f"{s:.3f}" for s in volume.spacing),
        orientation=volume.orientation,
        dtype=str(volume.array.dtype),
        slices=volume.shape[2],
        set_aside=len(set_aside),
        note="; ".join(loaded.notes),
    )
    return task.index, row, set_aside


def _save(image, path: Path, compress: bool, level: int) -> None:
    """Write a NIfTI image, gzipped at ``level`` (no name or time in the gzip header)."""
    with open(path, "wb") as raw:
        if not compress:
            image.to_stream(raw)
            return
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=level, mtime=0) as gz:
            image.to_stream(gz)


def _relative(path: str, root: Path) -> str:
    """A path relative to the input folder (no machine paths in the output)."""
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return path


def _tsv(columns: list[str], rows: list[tuple]) -> str:
    """Tab-separated text; tabs and line breaks inside a value become spaces."""

    def cell(value: object) -> str:
        return " ".join(str(value).split()) if isinstance(value, str) else str(value)

    lines = ["\t".join(columns)] + ["\t".join(cell(v) for v in row) for row in rows]
    return "\n".join(lines) + "\n"


__all__ = [
    "DEFAULT_LEVEL",
    "REJECTED_COLUMNS",
    "SERIES_COLUMNS",
    "ConvertOptions",
    "ConvertResult",
    "ConvertedSeries",
    "convert_dicom",
]
