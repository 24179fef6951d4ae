"""The config's JSON schema: where it is, its defaults, and values written as text.

``pipeline/schemas/config.schema.yaml`` is the one place the config's keys, types,
allowed values and defaults are written; the records of :mod:`medtl.config.records`
repeat its defaults (``tests/config/test_defaults.py`` keeps them alike).
"""

from __future__ import annotations

import math
import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml

#: The schema in a source checkout (the workflow passes its own path to validation).
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "pipeline" / "schemas" / "config.schema.yaml"


@cache
def _load(path: str) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text())


def load_schema(path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    """The schema as a mapping (read once per path; do not modify it)."""
    return _load(str(path))


def schema_defaults(section: str = "", path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    """The ``default:`` of each key of a section (dotted, e.g. ``dataset.dicomweb``).

    Example:
        >>> schema_defaults("splits")
        {'folds': 5, 'seed': 0, 'val_fraction': 0.2}
        >>> schema_defaults()["seed"]
        1
    """
    node = load_schema(path)
    for key in filter(None, section.split(".")):
        node = node["properties"][key]
    return {k: v["default"] for k, v in node.get("properties", {}).items() if "default" in v}


#: How a JSON-schema type is said in a message.
TYPE_WORDS = {
    "object": "a mapping (key: value)",
    "array": "a list",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "string": "a text",
    "null": "null",
}
_INTEGER = re.compile(r"[+-]?[0-9]+")
_NULL = ("null", "Null", "NULL", "~")


def schema_types(schema: dict[str, Any]) -> list[str]:
    """The JSON types a schema node allows (its `type`, one or a list)."""
    kind = schema.get("type", [])
    return [kind] if isinstance(kind, str) else list(kind)


def _typed(text: str, types: set[str]) -> Any:
    """``text`` as the type the schema asks for, when it reads as exactly one; else as is."""
    if "null" in types and text.strip() in _NULL:
        return None
    if "string" in types:
        return text
    word = text.strip()
    if "boolean" in types and word.lower() in ("true", "false"):
        return word.lower() == "true"
    if types & {"integer", "number"} and _INTEGER.fullmatch(word):
        return int(word)
    if "number" in types:
        try:
            number = float(word)
        except ValueError:
            return text
        return number if math.isfinite(number) else text
    return text


def read_text_values(value: Any, schema: dict[str, Any]) -> Any:
    """Turn numbers, booleans and nulls written as text into the types the schema asks for.

    Snakemake reads the values inside ``--config train='{steps: 500}'`` as text (YAML's
    base loader), so ``steps`` arrives as ``'500'``. Where the schema expects a whole
    number, a number, true/false or null and the text is exactly one (``500``, ``0.002``,
    ``true``, ``null``), it becomes that value; anything else is left for the schema to
    refuse. Mappings and lists are converted in place, item by item.

    Example:
        >>> schema = {"properties": {"steps": {"type": "integer"}, "tta": {"type": "boolean"}}}
        >>> read_text_values({"steps": "500", "tta": "true"}, schema)
        {'steps': 500, 'tta': True}
        >>> read_text_values({"steps": "many"}, schema)
        {'steps': 'many'}
    """
    branches = [schema, *schema.get("oneOf", []), *schema.get("anyOf", [])]
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = properties.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                value[key] = read_text_values(item, sub)
        return value
    if isinstance(value, list):
        for branch in branches:
            items = branch.get("items")
            if isinstance(items, dict) and "array" in schema_types(branch):
                value[:] = [read_text_values(item, items) for item in value]
                break
        return value
    if isinstance(value, str):
        return _typed(value, {t for branch in branches for t in schema_types(branch)})
    return value
