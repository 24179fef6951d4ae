"""Pair each image series with the label object (RTSTRUCT / DICOM-SEG) drawn on it.

A label object names the series it was drawn on (ReferencedSeriesSequence, or the
RTReferencedSeriesSequence of an RTSTRUCT). :func:`pair_labels` gives every series of an
inventory its label object, if any, and sets aside with a reason the label objects it
cannot use: one whose series' files were all rejected at discovery (the reason names
theirs), one that references no series found, and every one beyond the first (by file
name) that references an already-labelled series. When a paired series or label is set
aside later, at load, :func:`left_behind` lists the other one of the two with the same
cause: every input ends up used or in ``rejected.tsv``.

Example:
    >>> pairs, rejected = pair_labels(discover(Path("dicom_in")))  # doctest: +SKIP
    >>> [(p.series.description, p.label.kind if p.label else None) for p in pairs]
    ... # doctest: +SKIP
    [('CT AX', 'RTSTRUCT'), ('T1 AX', None)]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medtl.io.dicom.discovery import DicomInventory, SeriesInfo
from medtl.io.dicom.inspection import LabelObjectInfo
from medtl.kernel.errors import Rejection


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
        _unpaired(obj, inventory)
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


def _unpaired(obj: LabelObjectInfo, inventory: DicomInventory) -> Rejection:
    """Why a label object has no series: its series' files were rejected, or are not here."""
    for uid in obj.referenced_series_uids:
        cause = inventory.set_aside_series.get(uid)
        if cause is not None:
            return label_of_set_aside_image(obj.path, obj.kind, cause)
    found = ", ".join(obj.referenced_series_uids) or "none"
    return Rejection(
        str(obj.path),
        f"{obj.kind} references no image series found in the folder (it references "
        f"SeriesInstanceUID {found})",
        "put the label object beside the series it was drawn on",
    )


def label_of_set_aside_image(label: Path | str, kind: str, cause: Rejection) -> Rejection:
    """The rejection of a label whose image (series) was set aside for ``cause``.

    Args:
        label: the label file (RTSTRUCT, SEG, or a NIfTI label).
        kind: what it is, for the message (``"RTSTRUCT"``, ``"SEG"``: a DICOM label object,
            whose image is a series; ``"label"``).
        cause: the image's rejection.

    Returns:
        A rejection of ``label`` whose reason names the image's problem.

    Example:
        >>> cause = Rejection("ct", "expected at least 2 slices, found 1", "export the series")
        >>> label_of_set_aside_image("ct/RS.dcm", "RTSTRUCT", cause).reason
        'RTSTRUCT not used: its image series was set aside: ct: expected at least 2 slices, found 1'
    """
    image = "image series" if kind in ("RTSTRUCT", "SEG") else "image"
    return Rejection(
        str(label),
        f"{kind} not used: its {image} was set aside: {cause.path}: {cause.reason}",
        f"fix the {image} first ({cause.fix}); the {kind} is used once its {image} is",
    )


def left_behind(
    cause: Rejection, image: Path | str, label: Path | str | None, kind: str = "label"
) -> list[Rejection]:
    """The other input of a case that was set aside for one of its two inputs.

    A case is an image (a file, or a DICOM series' folder) and maybe a label. When one is
    set aside (``cause``), the other is not used either: this lists it too, naming why, so
    that every input ends up in the manifest or in ``rejected.tsv``. ``cause`` is about
    the label when its path is the label's, else about the image.

    Args:
        cause: the rejection that stopped the case.
        image: the case's image.
        label: the case's label, or ``None``.
        kind: what the label is (``"RTSTRUCT"``, ``"SEG"``, ``"label"``).

    Returns:
        A rejection of the other input, or nothing for an unlabelled case.

    Example:
        >>> cause = Rejection("ct/RS.dcm", "no ROI matches a class", "name the classes")
        >>> [r.path for r in left_behind(cause, "ct", "ct/RS.dcm", "RTSTRUCT")]
        ['ct']
    """
    if label is None:
        return []
    if Path(cause.path) != Path(label):
        return [label_of_set_aside_image(label, kind, cause)]
    return [
        Rejection(
            str(image),
            f"image not used: its {kind} was set aside: {cause.path}: {cause.reason}",
            f"fix the {kind} first ({cause.fix}); the image is used once its {kind} is",
        )
    ]
