"""The class map: label value to structure name, one type for every stage.

Config files, ``dataset.json`` and command-line JSON give label values as strings
(``{"1": "tumour"}``); arrays and masks use integers. :class:`ClassMap` is the one place
the keys become integers, checked, so no caller writes ``{int(k): v ...}`` again.

Example:
    >>> classes = ClassMap.parse({"2": "oedema", "1": "tumour"})
    >>> classes
    ClassMap({1: 'tumour', 2: 'oedema'})
    >>> classes.num_classes, classes.to_json()
    (3, {'1': 'tumour', '2': 'oedema'})
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medtl.kernel.errors import ConfigError


class ClassMap(dict[int, str]):
    """Label value (an integer ≥ 1; 0 is background) to structure name, sorted by value."""

    @classmethod
    def parse(cls, raw: Mapping[Any, Any], where: str = "classes") -> ClassMap:
        """Check and convert a mapping whose keys may be strings of integers.

        Args:
            raw: e.g. ``{"1": "tumour"}`` or ``{1: "tumour"}``.
            where: the config key or option it came from, for the error.

        Raises:
            ConfigError: a key that is not a whole number ≥ 1 (0 is the background and
                is dropped when named ``background``).
        """
        if isinstance(raw, ClassMap):
            return raw
        if not isinstance(raw, Mapping):
            raise ConfigError(
                f"{where}: expected a mapping of label value to name, e.g. {{1: tumour}}; "
                f"got {type(raw).__name__}. How to fix: write it as {{1: tumour, 2: oedema}}"
            )
        out: dict[int, str] = {}
        for key, name in raw.items():
            try:
                value = int(str(key).strip())
            except ValueError:
                value = -1
            if value == 0 and str(name).lower() == "background":
                continue
            if value < 1 or str(value) != str(key).strip():
                raise ConfigError(
                    f"{where}: label value {key!r} is not a whole number ≥ 1. How to fix: "
                    "key each structure by its label value in the masks, e.g. {1: tumour}"
                )
            out[value] = str(name)
        return cls(sorted(out.items()))

    @property
    def num_classes(self) -> int:
        """Output channels of a network for this map: the background and 1 … the top label."""
        return 1 + max(self, default=0)

    def to_json(self) -> dict[str, str]:
        """The map with string keys, as JSON and YAML files hold it."""
        return {str(k): v for k, v in self.items()}

    def __repr__(self) -> str:
        return f"ClassMap({dict(self)!r})"
