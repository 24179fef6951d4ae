"""The two tables ingest writes: ``manifest.tsv`` (one row per usable case) and
``rejected.tsv`` (one row per input set aside, with the reason and how to fix it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from medtl.kernel.errors import InputError, Rejection
from medtl.kernel.files import atomic_write_text

MANIFEST_COLUMNS = [
    "case_id",
    "patient_id",
    "image",
    "label",
    "modality",
    "spacing",
    "shape",
    "orientation",
    "channels",
    "label_source",
    "series_uid",
    "note",
    "scanner",
]
REJECTED_COLUMNS = ["path", "reason", "fix"]


@dataclass(frozen=True)
class ManifestRow:
    case_id: str
    patient_id: str
    image: str
    label: str
    modality: str
    spacing: str
    shape: str
    orientation: str
    channels: int = 1
    label_source: str = ""
    series_uid: str = ""
    note: str = ""
    scanner: str = ""


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a ``manifest.tsv`` written by :func:`medtl.io.ingest.ingest`, every column as text.

    An empty ``label`` means an unlabelled case.

    Raises:
        InputError: the file is missing, or lacks the ``case_id``, ``image`` or ``label``
            column.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "manifest not found", "run the ingest stage first")
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    missing = {"case_id", "image", "label"} - set(df.columns)
    if missing:
        raise InputError(
            path,
            f"expected columns case_id, image, label; missing {sorted(missing)}",
            "regenerate it with the ingest stage",
        )
    return df


def relative_path(path: str, root: Path | None) -> str:
    """A rejected input's path relative to the ingest source (no machine paths)."""
    if root is None:
        return path
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return path


def write_tables(
    staging: Path, rows: list[ManifestRow], rejections: list[Rejection], root: Path | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write ``rejected.tsv`` then ``manifest.tsv`` under ``staging``; return both tables.

    Rejected paths are written relative to ``root``, the ingest source.
    """
    manifest = pd.DataFrame([asdict(r) for r in rows], columns=MANIFEST_COLUMNS)
    rejected_df = pd.DataFrame(
        [
            {"path": relative_path(r.path, root), "reason": r.reason, "fix": r.fix}
            for r in rejections
        ],
        columns=REJECTED_COLUMNS,
    )
    atomic_write_text(staging / "rejected.tsv", rejected_df.to_csv(sep="\t", index=False))
    atomic_write_text(staging / "manifest.tsv", manifest.to_csv(sep="\t", index=False))
    return manifest, rejected_df


__all__ = [
    "MANIFEST_COLUMNS",
    "REJECTED_COLUMNS",
    "ManifestRow",
    "read_manifest",
    "relative_path",
    "write_tables",
]
