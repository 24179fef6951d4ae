"""The report spec: every section has a place in the template, every figure a caption."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from medtl.report.spec import SPEC, SpecError, load_spec, render_spec

TEMPLATE = Path(SPEC).parent / "templates" / "report.html.j2"


def test_sections_and_template_agree() -> None:
    template = TEMPLATE.read_text()
    spec_ids = [s["id"] for s in load_spec()["sections"]]
    template_ids = re.findall(r'\{\{ head\("([\w-]+)"\) \}\}', template)
    assert template_ids == spec_ids  # same sections, same order
    figures = set(re.findall(r'\{\{ figure\("(\w+)"\) \}\}', template))
    assert figures == set(load_spec()["figures"])


def test_placeholders_are_filled_and_absent_sections_renumbered() -> None:
    values = {
        "reference_arm": "scratch",
        "folds_meta": "k = 3",
        "overlay_basis": "Dice",
        "overlay_cases": "a, b",
    }
    sections, captions = render_spec(load_spec(), values, {"plan": False, "runtime": False})
    assert "plan" not in sections and "runtime" not in sections
    assert [s["n"] for s in sections.values()] == list(range(1, len(sections) + 1))
    assert sections["comparison"]["title"] == "Paired comparison with scratch"
    assert "Cases: a, b." in captions["overlays"]
    assert not any("{" in c for c in captions.values())


def test_unknown_placeholder_is_named(tmp_path: Path) -> None:
    spec = {"sections": [{"id": "a", "title": "T {arm}", "lead": "l"}], "figures": {}}
    with pytest.raises(SpecError, match=r"section a: unknown placeholder \{arm\}"):
        render_spec(spec, {"reference_arm": "scratch"}, {})
    bad = tmp_path / "spec.yaml"
    bad.write_text(yaml.safe_dump({"sections": [{"id": "a"}]}))
    with pytest.raises(SpecError, match="spec.yaml: expected 'sections'"):
        load_spec(bad)
