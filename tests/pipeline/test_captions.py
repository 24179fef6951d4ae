"""The Snakemake report's figure captions are the report spec's (tests/support/captions.py)."""

from __future__ import annotations

import pytest

from medtl.report.spec import load_spec
from tests.support.captions import CAPTIONS, captioned_figures, rst_caption

FIGURES = captioned_figures()


def test_the_report_rule_captions_figures_of_the_spec() -> None:
    assert FIGURES, 'no caption="report/<figure>.rst" in pipeline/report.smk'
    unknown = sorted(set(FIGURES) - set(load_spec()["figures"]))
    assert not unknown, f"figures with a caption file but none in medtl/report/spec.yaml: {unknown}"


@pytest.mark.parametrize("figure", FIGURES)
def test_caption_file_is_made_from_the_spec(figure: str) -> None:
    path = CAPTIONS / f"{figure}.rst"
    assert path.read_text() == rst_caption(figure), (
        f"{path.name} differs from the caption of {figure} in medtl/report/spec.yaml. "
        "How to fix: change the caption in the spec, then run python -m tests.support.captions."
    )


def test_no_caption_file_is_left_unused() -> None:
    files = {p.stem for p in CAPTIONS.glob("*.rst")} - {"workflow"}  # the report's intro
    assert files == set(FIGURES), sorted(files ^ set(FIGURES))
