"""The error contract of medtl, and the record of an input set aside."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class MedtlError(Exception):
    """An error a user can fix: says what was expected, what was found, and how to fix it."""


class ConfigError(MedtlError):
    """A configuration value that is missing, unknown or of the wrong type."""


class InputError(MedtlError):
    """A file or folder of input data that cannot be used.

    Args:
        path: the offending file or folder.
        reason: what is wrong, with the expected and the found value.
        fix: what the user can do about it.
    """

    def __init__(self, path: str | Path, reason: str, fix: str) -> None:
        self.path = str(path)
        self.reason = reason
        self.fix = fix
        super().__init__(f"{self.path}: {reason}. How to fix: {fix}")

    def to_rejection(self) -> Rejection:
        return Rejection(path=self.path, reason=self.reason, fix=self.fix)


@dataclass(frozen=True)
class Rejection:
    """One input set aside, as written to ``rejected.tsv``."""

    path: str
    reason: str
    fix: str
