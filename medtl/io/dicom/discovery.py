"""Find the image series and label objects under a folder, reading headers only.

:func:`discover` reads headers in parallel and never raises on a bad file: every file ends
as a member of an image series, as a label object (RTSTRUCT or DICOM-SEG) or as a
:class:`~medtl.kernel.errors.Rejection` with a reason and a fix. Images are grouped
Patient -> Study -> Series (SeriesInstanceUID); a multi-frame file (enhanced CT/MR and any
file whose frames carry their own plane position) is a series of its own.

What one file is, and the checks a file must pass to count as an image slice, are in
:mod:`.inspection`.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from medtl.io.dicom.inspection import ImageEntry, LabelObjectInfo, RejectedImage, inspect_file
from medtl.kernel.errors import InputError, Rejection
from medtl.kernel.files import is_temporary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeriesInfo:
    """One image series found by :func:`discover`.

    Attributes:
        series_uid: SeriesInstanceUID.
        study_uid: StudyInstanceUID.
        patient_key: the raw PatientID; in memory only, never write it anywhere.
        modality: Modality (``"CT"``, ``"MR"``, ...), ``""`` if absent.
        description: SeriesDescription, ``""`` if absent.
        files: the series' files, sorted by path (not by slice position); one file for a
            multi-frame series.
    """

    series_uid: str
    study_uid: str
    patient_key: str
    modality: str
    description: str
    files: tuple[Path, ...]


@dataclass
class DicomInventory:
    """Everything :func:`discover` found under a folder.

    Attributes:
        series: image series, sorted by patient, study, SeriesNumber, SeriesInstanceUID.
        labels: RTSTRUCT and SEG objects, sorted by path.
        rejected: files that are neither, sorted by path, each with a reason and a fix;
            hidden files and folders (``.DS_Store``, ``.git``) among them, not read.
        files_seen: files looked at (read or rejected); 0 for an empty folder.
        temporaries: unfinished temporaries of medtl's own writes (a download or a write
            killed mid-way, see :func:`medtl.kernel.files.is_temporary`), skipped: they are
            not inputs and not rejections.
        set_aside_series: SeriesInstanceUID -> the first rejection of a file of that series
            (one that failed a header check), so that a label object drawn on a series
            whose files were all rejected can say why.
    """

    series: list[SeriesInfo] = field(default_factory=list)
    labels: list[LabelObjectInfo] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    files_seen: int = 0
    temporaries: list[Path] = field(default_factory=list)
    set_aside_series: dict[str, Rejection] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: what was looked at and what it held, e.g. for a "nothing found" message.

        Example:
            >>> DicomInventory(files_seen=3).summary()
            '3 files looked at: 0 image series, 0 label objects, 0 files set aside'
        """
        line = (
            f"{self.files_seen} file{'' if self.files_seen == 1 else 's'} looked at: "
            f"{len(self.series)} image series, {len(self.labels)} label objects, "
            f"{len(self.rejected)} files set aside"
        )
        if self.temporaries:
            line += f", {len(self.temporaries)} unfinished medtl temporaries skipped"
        return line


def discover(
    root: Path, workers: int = 4, progress: bool = False, executor: Executor | None = None
) -> DicomInventory:
    """Find the image series and label objects under ``root``, reading headers only.

    Every file ends as a series member, a label object or a rejection; one bad file never
    stops discovery. Hidden files and folders (name starting with ``.``) are not read and
    are rejected with their reason, except medtl's own: its records (``.medtl-pull.json``)
    are skipped, and the temporaries an interrupted write left are skipped, counted in
    ``temporaries`` and logged as a warning, never rejected.
    DICOMDIR index files are rejected with a reason (the images they list are found by
    walking the tree). Nothing under ``root`` is modified. The result does not depend on
    ``workers`` or ``executor``.

    Args:
        root: folder to search recursively.
        workers: threads reading headers in parallel (at least 1).
        progress: show a tqdm progress bar on stderr.
        executor: read the headers on this executor instead of ``workers`` threads, e.g. a
            process pool the caller goes on using: parsing a header is pure Python and
            holds the GIL, so threads overlap only the waiting for the disk.

    Returns:
        The inventory; all its lists are empty and ``files_seen`` is 0 when no file was
        found.

    Raises:
        InputError: ``root`` is not an existing folder.
        ValueError: ``workers`` is less than 1.

    Example:
        >>> inventory = discover(Path("dicom_in"))  # doctest: +SKIP
        >>> [(s.description, len(s.files)) for s in inventory.series]  # doctest: +SKIP
        [('T1 AX', 24)]
    """
    root = Path(root)
    if workers < 1:
        raise ValueError(f"expected workers >= 1, found {workers}; fix: pass workers=1 or more")
    if not root.is_dir():
        found = "a file" if root.exists() else "nothing"
        raise InputError(
            root,
            f"expected a folder of DICOM files, found {found} at this path",
            "point ingest at the folder that holds the DICOM series",
        )
    walk = _walk(root)
    paths = walk.files
    results = _inspect_all(paths, workers, progress, executor)
    images = [r for r in results if isinstance(r, ImageEntry)]
    if walk.temporaries:
        _warn_temporaries(root, walk.temporaries)
    failed = [r for r in results if isinstance(r, RejectedImage)]
    rejected = [r for r in results if isinstance(r, Rejection)] + walk.hidden
    rejected += [r.rejection for r in failed]
    return DicomInventory(
        series=_group_series(images),
        labels=sorted((r for r in results if isinstance(r, LabelObjectInfo)), key=_path_key),
        rejected=sorted(rejected, key=lambda r: r.path),
        files_seen=len(paths) + walk.hidden_files,
        temporaries=walk.temporaries,
        set_aside_series=_set_aside_series(failed),
    )


def _inspect_all(
    paths: list[Path], workers: int, progress: bool, executor: Executor | None
) -> list[ImageEntry | LabelObjectInfo | Rejection | RejectedImage]:
    """What each file is, in the order of ``paths``, read on ``executor`` (or threads)."""
    with ExitStack() as stack:
        if executor is None:
            executor = stack.enter_context(ThreadPoolExecutor(max_workers=workers))
        # Chunks keep the hand-over cost of a process pool small; threads ignore them.
        chunk = max(1, min(64, len(paths) // (4 * workers)))
        return list(
            tqdm(
                executor.map(inspect_file, paths, chunksize=chunk),
                total=len(paths),
                desc="DICOM headers",
                unit="file",
                disable=not progress,
            )
        )


def _warn_temporaries(root: Path, temporaries: list[Path]) -> None:
    log.warning(
        "skipped %d unfinished temporary file(s) of an interrupted medtl write under %s "
        "(e.g. %s): not inputs. Run the interrupted command again; `medtl pull` removes "
        "its own before it starts",
        len(temporaries),
        root,
        temporaries[0].name,
    )


def _set_aside_series(failed: list[RejectedImage]) -> dict[str, Rejection]:
    """SeriesInstanceUID -> the first rejection (by path) of a file of that series."""
    set_aside_series: dict[str, Rejection] = {}
    for r in sorted(failed, key=lambda r: r.rejection.path):
        if r.series_uid:
            set_aside_series.setdefault(r.series_uid, r.rejection)
    return set_aside_series


def discover_series(root: Path) -> tuple[list[SeriesInfo], list[Rejection]]:
    """The image series under ``root`` and the rejected files (see :func:`discover`).

    Label objects (RTSTRUCT, SEG) are neither series nor rejections and are not returned.

    Args:
        root: folder to search recursively.

    Returns:
        The series, sorted by (PatientID, StudyInstanceUID, SeriesNumber,
        SeriesInstanceUID), and the rejected files, sorted by path.

    Raises:
        InputError: ``root`` is not an existing folder.
    """
    inventory = discover(root)
    return inventory.series, inventory.rejected


def _path_key(label: LabelObjectInfo) -> str:
    return str(label.path)


_HIDDEN_FILE_FIX = (
    "nothing to do for system files such as .DS_Store; if it is a DICOM image, rename it "
    "without the leading '.'"
)
_HIDDEN_FOLDER_FIX = (
    "nothing to do for system folders such as .git or .Trashes; if it holds DICOM images, "
    "rename it without the leading '.'"
)
_MEDTL_RECORD_PREFIX = ".medtl-"  # medtl's own records, e.g. the cache's .medtl-pull.json


@dataclass
class _Walk:
    """The files under a folder, split into those to read and those skipped.

    Attributes:
        files: non-hidden files, in a deterministic order.
        hidden: a rejection for each hidden file and hidden folder (not entered).
        hidden_files: how many of ``hidden`` are files.
        temporaries: medtl's unfinished temporaries (files and staging folders).
    """

    files: list[Path] = field(default_factory=list)
    hidden: list[Rejection] = field(default_factory=list)
    hidden_files: int = 0
    temporaries: list[Path] = field(default_factory=list)


def _walk(root: Path) -> _Walk:
    """Walk ``root``; hidden names are rejected with a reason, except medtl's own files."""
    walk = _Walk()
    for folder, dirs, files in os.walk(root):
        entered = []
        for name in sorted(dirs):
            path = Path(folder) / name
            if not name.startswith("."):
                entered.append(name)
            elif is_temporary(path):
                walk.temporaries.append(path)
            else:
                walk.hidden.append(
                    Rejection(
                        str(path),
                        "hidden folder (its name starts with '.'): not searched",
                        _HIDDEN_FOLDER_FIX,
                    )
                )
        dirs[:] = entered
        for name in sorted(files):
            path = Path(folder) / name
            if not name.startswith("."):
                walk.files.append(path)
            elif is_temporary(path):
                walk.temporaries.append(path)
            elif not name.startswith(_MEDTL_RECORD_PREFIX):
                walk.hidden_files += 1
                walk.hidden.append(
                    Rejection(
                        str(path),
                        "hidden file (its name starts with '.'): not read",
                        _HIDDEN_FILE_FIX,
                    )
                )
    return walk


def _group_series(images: list[ImageEntry]) -> list[SeriesInfo]:
    """Group image files Patient -> Study -> Series, sorted."""
    groups: dict[tuple[str, ...], list[ImageEntry]] = {}
    for entry in images:
        groups.setdefault(entry.group, []).append(entry)
    keyed = []
    for entries in groups.values():
        entries.sort(key=lambda e: str(e.path))
        first = entries[0]
        info = SeriesInfo(
            series_uid=first.series_uid,
            study_uid=first.study_uid,
            patient_key=first.patient_key,
            modality=first.modality,
            description=first.description,
            files=tuple(e.path for e in entries),
        )
        number = first.series_number
        key = (
            first.patient_key,
            first.study_uid,
            number is None,  # unnumbered series last
            number or 0,
            first.series_uid,
            str(first.path),
        )
        keyed.append((key, info))
    return [info for _, info in sorted(keyed, key=lambda pair: pair[0])]
