"""One case of a manifest preprocessed into one file (``medtl preprocess --case C --out F``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medtl.kernel.errors import InputError
from medtl.preprocess.case import PreprocessedCase, preprocess_files, save_case
from medtl.preprocess.plan import Plan


def preprocess_manifest_case(
    manifest: pd.DataFrame, case_id: str, plan: Plan, out: Path, where: str | Path = "manifest"
) -> PreprocessedCase:
    """Preprocess the manifest's case ``case_id`` with ``plan`` and save it to ``out``.

    Args:
        manifest: the ingest manifest (``case_id``, ``image``, ``label``).
        case_id: the case to preprocess.
        plan: the preprocessing plan.
        out: the ``.npz`` to write.
        where: the manifest's path, named when the case is not in it.

    Raises:
        InputError: the case is not in the manifest.
    """
    rows = manifest[manifest["case_id"] == case_id]
    if rows.empty:
        raise InputError(where, f"case {case_id!r} not in the manifest", "rerun ingest")
    row = rows.iloc[0]
    label = Path(row["label"]) if row["label"] else None
    case = preprocess_files(Path(row["image"]), label, plan)
    save_case(out, case)
    return case
