"""Runs the bad-input corpus (see ``corpus.py``) and keeps docs/reliability.md in step."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from tests.reliability.corpus import AREAS, ERROR, REGISTRY, SET_ASIDE, TRACEBACK, fingerprint

# Each corpus_<area>.py registers its entries when imported.
for _module in sorted(Path(__file__).parent.glob("corpus_*.py")):
    importlib.import_module(f"tests.reliability.{_module.stem}")

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
BEGIN, END = "<!-- corpus:begin -->", "<!-- corpus:end -->"


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_corpus_entry(name: str, tmp_path: Path) -> None:
    entry = REGISTRY[name]
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    run = entry.setup(tmp_path)
    before = fingerprint(tmp_path / "in")
    assert before, "the entry wrote no input under root/in"
    outcome = run()
    assert not outcome.traceback, f"a traceback reached the user:\n{outcome.traceback}"
    assert not TRACEBACK.search(outcome.message), f"traceback in the message:\n{outcome.message}"
    assert outcome.kind == entry.expect, (
        f"expected {entry.expect!r}, got {outcome.kind!r}: {outcome.message}"
    )
    assert re.search(entry.message, outcome.message, re.I | re.S), (
        f"the message does not say /{entry.message}/:\n{outcome.message}"
    )
    if entry.names:
        assert entry.names in outcome.message, (
            f"the message does not name {entry.names!r}:\n{outcome.message}"
        )
    if entry.expect in (SET_ASIDE, ERROR):
        assert "fix" in outcome.message.lower(), f"no fix offered:\n{outcome.message}"
    assert fingerprint(tmp_path / "in") == before, "an input file was modified, added or removed"
    if entry.check is not None:
        entry.check(outcome)


def test_corpus_size() -> None:
    """At least 60 entries, and every area has some."""
    assert len(REGISTRY) >= 60, len(REGISTRY)
    assert {e.area for e in REGISTRY.values()} == set(AREAS)


def corpus_table() -> str:
    """The corpus as the markdown table of docs/reliability.md."""
    lines = ["| area | input | outcome | the message says | test |", "|---|---|---|---|---|"]
    order = {area: i for i, area in enumerate(AREAS)}
    for e in sorted(REGISTRY.values(), key=lambda e: (order[e.area], e.name)):
        said = "nothing (no note, no rejection)" if e.message == "^$" else f"`{e.message}`"
        said = said.replace("|", "\\|")
        lines.append(f"| {e.area} | {e.input} | {e.expect} | {said} | `{e.name}` |")
    return "\n".join(lines)


def test_docs_table_matches_the_corpus() -> None:
    text = DOC.read_text()
    assert BEGIN in text and END in text, f"{DOC.name} lacks the corpus markers"
    shown = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    expected = corpus_table()
    assert shown == expected, (
        f"docs/reliability.md's corpus table is out of date; replace the lines between the "
        f"markers with:\n{expected}"
    )
