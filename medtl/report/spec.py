"""The report spec (``spec.yaml``): section order, titles, lead paragraphs and captions.

The words of the report live in the spec and its layout in the template, so a caption
or a section's explanation changes in one YAML file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from medtl.kernel.errors import MedtlError

#: The spec shipped with medtl.
SPEC = Path(__file__).with_name("spec.yaml")


class SpecError(MedtlError):
    """A report spec that is malformed or names an unknown placeholder."""


def load_spec(path: Path = SPEC) -> dict[str, Any]:
    """Read and check a report spec.

    Raises:
        SpecError: naming the file, if sections or figures are missing or malformed.

    Example:
        >>> [s["id"] for s in load_spec()["sections"]][:3]
        ['headline', 'dataset', 'plan']
    """
    spec = yaml.safe_load(Path(path).read_text())
    sections = spec.get("sections") if isinstance(spec, dict) else None
    ok = isinstance(sections, list) and all(
        isinstance(s, dict) and {"id", "title", "lead"} <= set(s) for s in sections
    )
    if not ok or not isinstance(spec.get("figures"), dict):
        raise SpecError(
            f"{path}: expected 'sections' (a list of id, title, lead) and 'figures' "
            "(name: caption). How to fix: start from the spec shipped with medtl."
        )
    return spec


def _fill(text: str, values: dict[str, str], where: str) -> str:
    try:
        return " ".join(str(text).format_map(values).split())
    except KeyError as exc:
        raise SpecError(
            f"report spec, {where}: unknown placeholder {{{exc.args[0]}}}; expected one of "
            f"{', '.join('{' + k + '}' for k in sorted(values))}."
        ) from None


def render_spec(
    spec: dict[str, Any], values: dict[str, str], present: dict[str, bool]
) -> tuple[dict[str, dict], dict[str, str]]:
    """Number the sections shown and fill the placeholders.

    Args:
        spec: from :func:`load_spec`.
        values: placeholder values (``reference_arm``, ...).
        present: per section id, whether it is shown (ids not named are shown).

    Returns:
        ``(sections, captions)``: shown sections by id in order, each with ``id``, ``n``
        (its number), ``title`` and ``lead``; and every figure's caption by name.

    Example:
        >>> spec = {"sections": [{"id": "a", "title": "A {x}", "lead": "l"},
        ...                      {"id": "b", "title": "B", "lead": "m"}], "figures": {}}
        >>> sections, _ = render_spec(spec, {"x": "1"}, {"a": False})
        >>> [(s["n"], s["title"]) for s in sections.values()]
        [(1, 'B')]
    """
    sections: dict[str, dict] = {}
    for sec in spec["sections"]:
        if not present.get(sec["id"], True):
            continue
        sections[sec["id"]] = {
            "id": sec["id"],
            "n": len(sections) + 1,
            "title": _fill(sec["title"], values, f"section {sec['id']}"),
            "lead": _fill(sec["lead"], values, f"section {sec['id']}"),
        }
    captions = {
        name: _fill(text, values, f"figure {name}") for name, text in spec["figures"].items()
    }
    return sections, captions
