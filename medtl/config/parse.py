"""Turning a config section (a mapping) into its typed record, and back.

:func:`parse_section` checks a section at the edge of a stage: unknown keys and wrong
types are refused with the key, the value and what is allowed. :func:`load_json_arg`
reads the JSON settings a command line passes.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import InitVar
from pathlib import Path
from typing import Any, TypeVar

from medtl.kernel.errors import ConfigError

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{where}': expected a mapping, got {value!r}")
        return parse_section(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(tp):
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError as exc:
                errors.append(str(exc))
        allowed = " or ".join(_type_name(a) for a in typing.get_args(tp))
        details = "; ".join(e.split(": ", 1)[-1] for e in errors)
        raise ConfigError(f"config key '{where}': got {value!r}; expected {allowed} ({details})")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{where}': expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(
                f"config key '{where}': expected {len(args)} values, got {len(value)} ({value!r})"
            )
        return tuple(
            _coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{where}': expected a mapping, got {value!r}")
        key_tp, value_tp = typing.get_args(tp)
        return {
            _coerce(k, key_tp, where): _coerce(v, value_tp, f"{where}.{k}")
            for k, v in value.items()
        }
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{where}': expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{where}': expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{where}': expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{where}': expected a string, got {value!r}")
        return value
    return value


def parse_section(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build a frozen config dataclass from a mapping, refusing unknown keys.

    Args:
        cls: the dataclass, e.g. :class:`TrainConfig`.
        data: the mapping (missing keys take the dataclass defaults).
        where: the dotted config path, used in error messages.

    Example:
        >>> from medtl.config import TrainConfig
        >>> parse_section(TrainConfig, {"steps": 10}).steps
        10
        >>> parse_section(TrainConfig, {"step": 10})
        Traceback (most recent call last):
        ...
        medtl.kernel.errors.ConfigError: config key 'step': unknown. Allowed keys: amp, augment, ...
    """
    data = data or {}
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"config key '{key}': unknown. Allowed keys: {', '.join(sorted(names))}")
    kwargs = {
        name: _coerce(data[name], hints[name], f"{where}.{name}" if where else name)
        for name in names
        if name in data
    }
    if where and isinstance(hints.get("where"), InitVar):  # messages name the key's path
        kwargs["where"] = where
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """A config dataclass as plain JSON-able data (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def load_json_arg(text: str, what: str) -> dict[str, Any]:
    """Parse a JSON settings string given on the command line, or ``@file.json``."""
    if text.startswith("@"):
        text = Path(text[1:]).read_text()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{what}: expected JSON, got {text[:80]!r} ({exc})") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"{what}: expected a JSON object, got {value!r}")
    return value
