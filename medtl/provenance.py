"""What produced a result: settings, seeds, package versions, code version, hardware."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from medtl.io.files import atomic_write_text

PACKAGES = (
    "medtl",
    "torch",
    "monai",
    "numpy",
    "nibabel",
    "pydicom",
    "scipy",
    "pandas",
    "scikit-learn",
    "snakemake",
)


SECRET_KEYS = ("salt",)


def redact_secrets(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of the config with secrets (the hashing salt) replaced by a fingerprint.

    The fingerprint tells whether two runs used the same salt without revealing it.

    Example:
        >>> redact_secrets({"salt": "s3cret", "seed": 1})["salt"]
        'redacted (sha256 1ec1c26b)'
    """
    out = dict(config)
    for key in SECRET_KEYS:
        if key in out and out[key] is not None:
            digest = hashlib.sha256(str(out[key]).encode()).hexdigest()[:8]
            out[key] = f"redacted (sha256 {digest})"
    return out


def package_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Installed versions of the packages that shape results (and of ``extra`` ones)."""
    out = {"python": platform.python_version()}
    for name in (*PACKAGES, *extra):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit(cwd: Path | None = None) -> str:
    """The workflow's git commit (``+dirty`` when changed), or ``unknown`` outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def hardware() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"machine": platform.machine(), "cpu_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write_run_record(path: Path, settings: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Write the resolved settings with versions, commit and hardware beside a result."""
    record = {
        "settings": settings,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "hardware": hardware(),
        **extra,
    }
    atomic_write_text(path, json.dumps(record, indent=2, default=str) + "\n")
    return record
