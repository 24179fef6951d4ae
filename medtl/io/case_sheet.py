"""Case sheets: a table that says which image, label and patient make each case.

A sheet has a header line and one row per case, separated by tabs (``.tsv``), commas
(``.csv``) or semicolons (a spreadsheet's CSV in some locales): the separator is read
from the header line, whatever the file is called. A UTF-8 byte-order mark and Windows
line ends are fine. Columns:

========== ============ ===========================================================
column     required     what
========== ============ ===========================================================
image      yes          an image file (NIfTI, NRRD, MetaImage) or a DICOM series folder
label      for training a label file (NIfTI, NRRD, MetaImage, ``.seg.nrrd``), RTSTRUCT or SEG
patient    no           the patient identifier (hashed before anything is written)
case_id    no           a pseudonymous case name
========== ============ ===========================================================

Relative paths are relative to the sheet. A misspelt column stops the sheet (a ``lable``
column would otherwise give silently unlabelled cases); a bad row (an empty image cell,
a file listed twice, a case id used twice) is set aside and the other rows carry on.

Example:
    >>> import tempfile
    >>> sheet = Path(tempfile.mkdtemp()) / "cases.csv"
    >>> _ = sheet.write_text("image,lable\\nct.nii.gz,ct_label.nii.gz\\n")
    >>> read_case_sheet(sheet)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    medtl.kernel.errors.InputError: ...unknown column 'lable' (did you mean 'label'?)...
"""

from __future__ import annotations

import csv
import difflib
import io
from dataclasses import dataclass, field
from pathlib import Path

from medtl.io.case_source import CaseSource
from medtl.kernel.errors import InputError, Rejection

COLUMNS = ("image", "label", "patient", "case_id")
_SEPARATORS = {"\t": "tab", ",": "comma", ";": "semicolon"}
_HEADER_FIX = (
    "write a header line with the columns image, label, patient, case_id (only image is "
    "required), separated by tabs or commas"
)


def _text(sheet: Path) -> str:
    data = sheet.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")  # a spreadsheet's export on Windows


def _separator(header: str) -> str:
    """The separator of the header line: the first of tab, comma, semicolon found."""
    for sep in _SEPARATORS:
        if sep in header:
            return sep
    return "\t"  # one column


def _columns(header: list[str], sheet: Path, sep: str) -> list[str]:
    columns = [c.strip().lower() for c in header]
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        name = unknown[0]
        close = difflib.get_close_matches(name, COLUMNS, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InputError(
            sheet,
            f"unknown column {name!r}{hint} in the case sheet's header (read as "
            f"{_SEPARATORS[sep]}-separated: {', '.join(repr(c) for c in columns)}); "
            f"the known columns are {', '.join(COLUMNS)}",
            "rename the column" + (f" to {close[0]!r}" if close else "") + "; " + _HEADER_FIX,
        )
    if "image" not in columns:
        raise InputError(
            sheet,
            f"case sheet has no 'image' column (columns found: {', '.join(columns)})",
            "add a header line with at least 'image' (and 'label' for training cases)",
        )
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise InputError(sheet, f"column {repeated[0]!r} appears twice in the header", _HEADER_FIX)
    return columns


def read_case_sheet(sheet: Path) -> tuple[list[CaseSource], list[Rejection]]:
    """The cases a sheet lists, and the rows it had to set aside.

    Raises:
        InputError: the sheet cannot be read, is empty, lists no case, or its header has
            an unknown column or no ``image`` column.
    """
    sheet = Path(sheet)
    reader, columns, first, sep = _open_sheet(sheet)
    base = sheet.parent

    def resolve(value: str) -> Path | None:
        value = value.strip()
        if not value:
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() else base / p

    sources: list[CaseSource] = []
    rejected: list[Rejection] = []
    listed = _Listed()
    for fields in reader:
        line = first + reader.line_num
        where = f"line {line} of {sheet.name}"
        if not any(f.strip() for f in fields):
            continue
        if len(fields) > len(columns):
            rejected.append(
                Rejection(
                    str(sheet),
                    f"{where} has {len(fields)} fields, the header {len(columns)} (a path "
                    f"with a {_SEPARATORS[sep]} in it?)",
                    "quote a path that holds the separator, or fix the row",
                )
            )
            continue
        row = dict(zip(columns, [f.strip() for f in fields], strict=False))
        image, label = resolve(row.get("image", "")), resolve(row.get("label", ""))
        if image is None:
            rejected.append(
                Rejection(
                    str(sheet),
                    f"{where}: the image cell is empty",
                    "give the row's image path (an image file or a DICOM series folder), or "
                    "delete the row",
                )
            )
            continue
        case_id = row.get("case_id") or None
        problem = listed.repeat_of(image, label, case_id, where)
        if problem is not None:
            rejected.append(problem)
            continue
        listed.add(image, label, case_id, line)
        sources.append(
            CaseSource(
                image=image,
                label=label,
                patient=row.get("patient") or None,
                case_id=case_id,
                origin=where,
            )
        )
    if not sources and not rejected:
        raise InputError(
            sheet,
            "the case sheet lists no case (a header line and no rows)",
            "add one row per case below the header line",
        )
    return sources, rejected


def _open_sheet(sheet: Path):
    """The sheet's row reader (after the header), its columns, the index of its header
    line and its separator.

    Raises:
        InputError: the sheet cannot be read or is empty, or its header is not usable.
    """
    try:
        text = _text(sheet)
    except OSError as exc:
        raise InputError(sheet, f"cannot read the case sheet ({exc})", _HEADER_FIX) from exc
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise InputError(sheet, "the case sheet is empty (no header line, no rows)", _HEADER_FIX)
    sep = _separator(lines[first])
    reader = csv.reader(io.StringIO("\n".join(lines[first:])), delimiter=sep)
    columns = _columns(next(reader), sheet, sep)
    return reader, columns, first, sep


@dataclass
class _Listed:
    """The files and case ids the sheet's rows listed so far, with the line of each."""

    files: dict[Path, int] = field(default_factory=dict)  # resolved file -> first line
    case_ids: dict[str, int] = field(default_factory=dict)

    def repeat_of(
        self, image: Path, label: Path | None, case_id: str | None, where: str
    ) -> Rejection | None:
        """Why a row cannot be used when it repeats a listed file or case id, else None."""
        for path in (image, label):
            if path is None:
                continue
            key = path.resolve()
            if key in self.files:
                return Rejection(
                    str(path),
                    f"{where} lists a file already listed on line {self.files[key]}: one scan "
                    "in two cases can land in both the training and the test set",
                    "list each image and label once (remove the repeated row, or correct its path)",
                )
        if case_id is not None and case_id in self.case_ids:
            return Rejection(
                str(image),
                f"{where}: case_id {case_id!r} is already used on line {self.case_ids[case_id]}",
                "give each case a unique case_id in the sheet",
            )
        return None

    def add(self, image: Path, label: Path | None, case_id: str | None, line: int) -> None:
        """Record a row that was used."""
        for path in (image, label):
            if path is not None:
                self.files[path.resolve()] = line
        if case_id is not None:
            self.case_ids[case_id] = line
