"""Pair each image series with the label object (RTSTRUCT / DICOM-SEG) drawn on it.

A label object names the series it was drawn on (ReferencedSeriesSequence, or the
RTReferencedSeriesSequence of an RTSTRUCT). :func:`pair_labels` gives every series of an
inventory its label object, if any, and sets aside with a reason the label objects it
cannot use: one that references no series found, and every one beyond the first (by file
name) that references an already-labelled series.

Example:
    >>> pairs, rejected = pair_labels(discover(Path("dicom_in")))  # doctest: +SKIP
    >>> [(p.series.description, p.label.kind if p.label else None) for p in pairs]
    ... # doctest: +SKIP
    [('CT AX', 'RTSTRUCT'), ('T1 AX', None)]
"""

from __future__ import annotations

from dataclasses import dataclass

from medtl.io.dicom.discovery import DicomInventory, LabelObjectInfo, SeriesInfo
from medtl.io.errors import Rejection


@dataclass(frozen=True)
class SeriesLabel:
    """An image series and the label object paired with it.

    Attributes:
        series: the image series.
        label: the RTSTRUCT or SEG drawn on it, or ``None``.
    """

    series: SeriesInfo
    label: LabelObjectInfo | None = None


def pair_labels(inventory: DicomInventory) -> tuple[list[SeriesLabel], list[Rejection]]:
    """Every series of ``inventory`` with its label object, and the label objects set aside.

    Args:
        inventory: what :func:`~medtl.io.dicom.discover` found.

    Returns:
        One :class:`SeriesLabel` per series, in the inventory's order, and a rejection for
        each label object that references no series found or a series another label
        object (earlier by file name) is already paired with.
    """
    by_series: dict[str, list[LabelObjectInfo]] = {}
    for obj in sorted(inventory.labels, key=lambda o: str(o.path)):
        for uid in obj.referenced_series_uids:
            by_series.setdefault(uid, []).append(obj)
    known = {s.series_uid for s in inventory.series}
    rejected = [
        Rejection(
            str(obj.path),
            f"{obj.kind} references no image series found in the folder",
            "put the label object beside the series it was drawn on",
        )
        for obj in inventory.labels
        if not any(uid in known for uid in obj.referenced_series_uids)
    ]
    pairs = []
    for series in inventory.series:
        labels = by_series.get(series.series_uid, [])
        rejected += [
            Rejection(
                str(extra.path),
                f"another label object ({labels[0].kind}) is used for the same series",
                "pair label objects with series explicitly in a case sheet",
            )
            for extra in labels[1:]
        ]
        pairs.append(SeriesLabel(series, labels[0] if labels else None))
    return pairs, rejected
