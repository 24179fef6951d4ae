"""The shift stage's record: ``shift.json`` (every number) and ``per_case.tsv``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from medtl.kernel.files import atomic_write_text
from medtl.layout import SHIFT_CASES, SHIFT_RECORD

#: Said in the record when there are no source images to compare with.
NO_SOURCE = "no source images: the encoder-feature distance is not measured"


@dataclass(frozen=True)
class ShiftRecord:
    """Every measure of the shift between source and target.

    Attributes:
        source: what the source set is (``supervised pretraining source``, ``none`` …).
        checkpoint: the encoder's weights file (name only), or None.
        pretraining: how the checkpoint was pretrained (spacing, normalisation, what said
            it), or None when it does not say.
        acquisition: :func:`medtl.shift.acquisition.compare_acquisition`.
        intensity: :class:`medtl.shift.intensity.IntensityComparison` summary, or None.
        labels: :func:`medtl.shift.labels.compare_labels`.
        encoder: the MMD test (:class:`medtl.shift.two_sample.MMDResult` as a dict, with
            ``differs`` and ``flagged_cases``), or None.
        warnings: each naming the fix.
        notes: what was not measured, and why.
        settings: the ``shift`` section used.
        arms: the configured arms that start from these weights; the report sets only
            their gains against the per-case distances.
    """

    source: str
    checkpoint: str | None
    pretraining: dict | None
    acquisition: dict
    intensity: dict | None
    labels: list[dict]
    encoder: dict | None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    arms: list[str] = field(default_factory=list)


def write_record(record: ShiftRecord, cases: pd.DataFrame, out: Path) -> tuple[Path, Path]:
    """Write ``shift.json`` and ``per_case.tsv`` into the folder ``out``; return both paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record_path, cases_path = out / SHIFT_RECORD, out / SHIFT_CASES
    atomic_write_text(record_path, json.dumps(asdict(record), indent=2, default=str) + "\n")
    atomic_write_text(cases_path, cases.to_csv(sep="\t", index=False, float_format="%.6g"))
    return record_path, cases_path
