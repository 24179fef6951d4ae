"""The commands README.md and docs/*.md print, found the way a reader finds them.

Two kinds:

- **command lines**: lines of fenced code blocks that run a program (``make``,
  ``medtl``, ``snakemake``, ``python``, each possibly as ``.venv/bin/...``, first on the
  line or after ``;`` / ``&&``), with ``\\`` continuations joined and trailing
  ``# comments`` removed;
- **inline spans**: `` `...` `` code spans in the text that start one of those programs.

``test_documented_commands.py`` runs every one of them, or says why it cannot here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROGRAMS = r"(?:\.venv/bin/)?(?:make|medtl|snakemake|python)"
STARTS = re.compile(rf"^{PROGRAMS}(?:\s|$)")
FENCE = re.compile(r"^\s*(```|~~~)")
SPAN = re.compile(r"`([^`\n]+)`")
CORPUS_BEGIN, CORPUS_END = "<!-- corpus:begin -->", "<!-- corpus:end -->"


@dataclass(frozen=True)
class Documented:
    """One command as printed, and where."""

    text: str
    where: str  # "README.md:104"
    inline: bool


def is_command(text: str) -> bool:
    """Whether a shell line runs one of :data:`PROGRAMS` (first, or after ``;``/``&&``)."""
    return any(STARTS.match(part.strip()) for part in re.split(r";|&&|\|\|", text))


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _strip_comment(line: str) -> str:
    """The command without a trailing ``# comment`` (a ``#`` after whitespace, outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def documented_commands() -> list[Documented]:
    """Every command line and inline command span of README.md and docs/*.md."""
    found: list[Documented] = []
    for path in doc_files():
        name = str(path.relative_to(REPO))
        lines = path.read_text(encoding="utf-8").splitlines()
        in_block = in_corpus = False
        pending: list[str] = []
        start = 0
        for number, line in enumerate(lines, 1):
            # docs/reliability.md's corpus table is generated from tests/reliability, which
            # runs every input it shows (the commands in it are refused ones, on purpose).
            if line.strip() in (CORPUS_BEGIN, CORPUS_END):
                in_corpus = line.strip() == CORPUS_BEGIN
                continue
            if in_corpus:
                continue
            if FENCE.match(line):
                in_block = not in_block
                pending = []
                continue
            if in_block:
                text = line.strip()
                if pending:
                    pending.append(text)
                elif is_command(text):
                    pending, start = [text], number
                else:
                    continue
                if text.endswith("\\"):
                    pending[-1] = text[:-1].rstrip()
                    continue
                command = _strip_comment(" ".join(pending))
                found.append(Documented(command, f"{name}:{start}", inline=False))
                pending = []
            else:
                for span in SPAN.findall(line):
                    span = span.strip()
                    if STARTS.match(span):
                        found.append(Documented(span, f"{name}:{number}", inline=True))
    return found
