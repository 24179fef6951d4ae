"""Tests for case sheets (medtl.io.case_sheet)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medtl.io.case_sheet import read_case_sheet
from medtl.kernel.errors import InputError


def _sheet(tmp_path: Path, text: str, name: str = "cases.tsv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("sep", ["\t", ",", ";"])
def test_separator_read_from_the_header(tmp_path: Path, sep: str) -> None:
    text = sep.join(["image", "label", "patient", "case_id"]) + "\n"
    text += sep.join(["a.nii.gz", "la.nii.gz", "P1", "c1"]) + "\n"
    sources, rejected = read_case_sheet(_sheet(tmp_path, text, "cases.txt"))
    assert rejected == []
    (s,) = sources
    assert (s.image, s.label, s.patient, s.case_id) == (
        tmp_path / "a.nii.gz",
        tmp_path / "la.nii.gz",
        "P1",
        "c1",
    )
    assert s.origin == "line 2 of cases.txt"


def test_header_case_spaces_and_quotes(tmp_path: Path) -> None:
    text = ' Image , LABEL \n"scans/a, b.nii.gz",  \n'
    (s,), _ = read_case_sheet(_sheet(tmp_path, text, "c.csv"))
    assert s.image == tmp_path / "scans" / "a, b.nii.gz" and s.label is None


def test_blank_lines_and_line_numbers(tmp_path: Path) -> None:
    text = "\n\nimage\tlabel\n\na.nii.gz\t\n\t\nb.nii.gz\t\n"
    sources, rejected = read_case_sheet(_sheet(tmp_path, text))
    assert [s.origin for s in sources] == ["line 5 of cases.tsv", "line 7 of cases.tsv"]
    assert rejected == []


def test_rows_set_aside(tmp_path: Path) -> None:
    text = (
        "image\tlabel\tcase_id\n"
        "a.nii.gz\tla.nii.gz\tc1\n"  # line 2: kept
        "\tlb.nii.gz\tc2\n"  # line 3: empty image cell
        "b.nii.gz\tla.nii.gz\tc3\n"  # line 4: a label already listed
        "c.nii.gz\t\tc1\n"  # line 5: case id used twice
        "d.nii.gz\tld.nii.gz\tc4\textra\n"  # line 6: too many fields
        "e.nii.gz\t\t\n"  # line 7: kept
    )
    sources, rejected = read_case_sheet(_sheet(tmp_path, text))
    assert [s.image.name for s in sources] == ["a.nii.gz", "e.nii.gz"]
    reasons = [r.reason for r in rejected]
    assert reasons[0] == "line 3 of cases.tsv: the image cell is empty"
    assert reasons[1].startswith("line 4 of cases.tsv lists a file already listed on line 2")
    assert rejected[1].path == str(tmp_path / "la.nii.gz")
    assert reasons[2] == "line 5 of cases.tsv: case_id 'c1' is already used on line 2"
    assert reasons[3].startswith("line 6 of cases.tsv has 4 fields, the header 3")
    assert all(r.fix for r in rejected)


def test_same_file_through_two_spellings(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    text = "image\nimg/a.nii.gz\nimg/../img/a.nii.gz\n" + f"{tmp_path / 'img' / 'a.nii.gz'}\n"
    sources, rejected = read_case_sheet(_sheet(tmp_path, text))
    assert len(sources) == 1 and len(rejected) == 2


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "the case sheet is empty"),
        ("\n  \n", "the case sheet is empty"),
        ("image\tlabel\n", "lists no case"),
        ("image,lable\na,b\n", r"unknown column 'lable' \(did you mean 'label'\?\)"),
        ("image\tsubject\na\tb\n", r"unknown column 'subject' in"),
        ("image\timage\na\tb\n", r"column 'image' appears twice"),
        ("label\tpatient\na\tb\n", r"no 'image' column"),
    ],
)
def test_sheets_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        read_case_sheet(_sheet(tmp_path, text))


def test_comma_in_tab_sheet_is_tab(tmp_path: Path) -> None:
    """The first separator found in the header wins: a tab sheet may hold commas in cells."""
    (s,), _ = read_case_sheet(_sheet(tmp_path, "image\tpatient\na.nii.gz\tDoe, J\n"))
    assert s.patient == "Doe, J"
