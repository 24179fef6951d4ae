"""Validating the workflow config against the schema, and the seeds each arm trains with.

The workflow's YAML is checked against ``pipeline/schemas/config.schema.yaml`` (with
defaults filled in) before any rule runs, by :func:`validate_config`; every problem is
listed with its key, the value found and what is allowed.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from medtl.config.records import DEFAULT_SEED
from medtl.config.schema import TYPE_WORDS, read_text_values, schema_types
from medtl.kernel.errors import ConfigError


def _expected(schema: dict[str, Any]) -> str:
    words = [TYPE_WORDS.get(t, t) for t in schema_types(schema)]
    return " or ".join(words) or "another value"


def _describe_error(error: Any) -> str:
    path = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    validator = error.validator
    described = error.schema.get("description", "")
    hint = f" ({described})" if described else ""
    if "propertyNames" in error.schema_path:
        why = f" ({described})" if described else f"; {error.message}"
        return f"config key '{path}.{error.instance}': not allowed as a key here{why}"
    if validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        key = f"{path}.{extra[0]}" if path != "(top level)" else extra[0]
        close = difflib.get_close_matches(str(extra[0]), allowed, n=1)
        guess = f" Did you mean '{close[0]}'?" if close else ""
        return f"config key '{key}': unknown.{guess} Allowed keys here: {', '.join(allowed)}"
    if validator == "enum":
        return (
            f"config key '{path}': got {error.instance!r}; allowed values: "
            f"{', '.join(repr(v) for v in error.validator_value)}"
        )
    if validator == "required":
        missing = re.match(r"'([^']+)'", error.message)
        key = f"{path}.{missing[1]}" if missing else path
        return f"config key '{key}': missing; it is required here{hint}"
    if validator == "type":
        return (
            f"config key '{path}': got {error.instance!r}; expected {_expected(error.schema)}{hint}"
        )
    if validator in ("minItems", "maxItems"):
        low, high = error.schema.get("minItems"), error.schema.get("maxItems")
        count = (
            f"exactly {low}" if low == high else (f"at least {low}" if low else f"at most {high}")
        )
        return (
            f"config key '{path}': got {error.instance!r} ({len(error.instance)} values); "
            f"expected {count} values{hint}"
        )
    if validator == "minProperties":
        return (
            f"config key '{path}': got {error.instance!r}; expected at least "
            f"{error.validator_value} entry{hint}"
        )
    return f"config key '{path}': got {error.instance!r}; {error.message}{hint}"


def sources_note(sources: Sequence[str | Path]) -> str:
    """`` (a.yaml, --config)``: where the config came from, for messages ("" if unknown)."""
    return f" ({', '.join(str(s) for s in sources)})" if sources else ""


def validate_config(
    config: dict[str, Any], schema_path: str | Path, sources: Sequence[str | Path] = ()
) -> dict[str, Any]:
    """Validate the workflow config against the JSON schema and fill in defaults.

    Values written as text where the schema expects numbers, true/false or null (as
    Snakemake's ``--config KEY={...}`` passes them) are read first, see
    :func:`read_text_values`.

    Args:
        config: the loaded YAML (modified in place: text values read, defaults added).
        schema_path: the schema file (YAML).
        sources: where the config came from (config files, ``--config``), named in
            the message.

    Returns:
        The same mapping, completed.

    Raises:
        ConfigError: listing every problem: key, value found and what is allowed.
    """
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text())
    validator_cls = jsonschema.validators.validator_for(schema)

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub and key not in instance:
                    instance[key] = json.loads(json.dumps(sub["default"]))
        yield from validator_cls.VALIDATORS["properties"](validator, properties, instance, schema)

    read_text_values(config, schema)
    filling = jsonschema.validators.extend(validator_cls, {"properties": set_defaults})
    errors = sorted(filling(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = "\n".join(f"  - {_describe_error(e)}" for e in errors)
        raise ConfigError(
            f"the config{sources_note(sources)} does not match {Path(schema_path).name}:\n{lines}\n"
            "How to fix: correct these keys; config/config.yaml explains every key."
        )
    return config


def training_seeds(config: dict[str, Any]) -> dict[str, list[int]]:
    """The seeds each arm trains with: the workflow axis of training runs.

    ``seeds`` (a list) names the seeds of every arm; an arm's ``repeats: N`` keeps the
    first N of them (so arms share seeds: seed s draws the same batch order and
    augmentation for every arm, and arm differences are paired within a seed). Without
    ``seeds`` every arm trains once, with ``seed``.

    Raises:
        ConfigError: a seed listed twice, or an arm asking for more repeats than seeds.

    Example:
        >>> training_seeds({"seed": 1, "arms": {"a": {}, "b": {"repeats": 1}},
        ...                 "seeds": [1, 2, 3]})
        {'a': [1, 2, 3], 'b': [1]}
        >>> training_seeds({"seed": 4, "arms": {"a": {}}})
        {'a': [4]}
    """
    seeds = config.get("seeds") or [config.get("seed", DEFAULT_SEED)]
    seeds = [int(s) for s in seeds]
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise ConfigError(
            f"config key 'seeds': got {seeds}; seed {twice[0]} is listed twice, and a run "
            "repeated with the same seed measures nothing. How to fix: list distinct seeds"
        )
    out = {}
    for name, arm in config["arms"].items():
        repeats = int((arm or {}).get("repeats") or 0)
        if repeats > len(seeds):
            raise ConfigError(
                f"config key 'arms.{name}.repeats': got {repeats}, but 'seeds' lists "
                f"{len(seeds)} ({seeds}). How to fix: lower repeats, or list more seeds"
            )
        out[name] = seeds[:repeats] if repeats else list(seeds)
    return out
