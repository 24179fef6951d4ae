"""The captions of the Snakemake report's figures (``pipeline/report/<figure>.rst``),
made from the report spec (``medtl/report/spec.yaml``, its ``figures``): each figure's
caption is written once, in the spec, for report.html and for ``snakemake --report``.

The spec's placeholders are filled with words that fit any run (the Snakemake report's
captions are fixed files). After changing a caption in the spec, rewrite the files with
``python -m tests.support.captions``; ``tests/pipeline/test_captions.py`` fails while
they differ.

Example:
    >>> rst_caption("paired_differences").splitlines()[0]
    'Per-case Dice of the reference arm (left) and each arm (right); green = better than the'
"""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

from medtl.report.spec import load_spec, render_spec

REPO = Path(__file__).resolve().parents[2]
CAPTIONS = REPO / "pipeline" / "report"
REPORT_RULES = REPO / "pipeline" / "report.smk"
#: The spec's placeholders, in words for every run (report.html names the arm and cases).
GENERIC_VALUES = {
    "reference_arm": "the reference arm",
    "overlay_cases": "best, median and worst by Dice",
    "overlay_basis": "Dice",
    "folds_meta": "k folds",
}
WIDTH = 88


def captioned_figures(rules: Path = REPORT_RULES) -> list[str]:
    """The figures the workflow's report rule captions (``caption="report/<name>.rst"``)."""
    return re.findall(r'caption="report/(\w+)\.rst"', rules.read_text())


def rst_caption(figure: str) -> str:
    """The text of ``pipeline/report/<figure>.rst``: the spec's caption, wrapped, and a
    comment (invisible in the report) that says where it comes from."""
    _, captions = render_spec(load_spec(), GENERIC_VALUES, {})
    text = textwrap.fill(captions[figure], WIDTH)
    note = (
        f".. Made from medtl/report/spec.yaml (figures: {figure}) by tests/support/captions.py:\n"
        "   change the caption there, then run python -m tests.support.captions.\n"
    )
    return f"{text}\n\n{note}"


def write_captions(folder: Path = CAPTIONS) -> list[Path]:
    """Rewrite every captioned figure's ``.rst`` from the spec; the files written."""
    written = []
    for figure in captioned_figures():
        path = folder / f"{figure}.rst"
        path.write_text(rst_caption(figure))
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_captions():
        print(path.relative_to(REPO))
    sys.exit(0)
