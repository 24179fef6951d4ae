"""The provenance section of the report: code, configuration, software, seeds, hardware.

A reader of a report (or a reviewer of a paper built on it) must be able to tell which
code and settings produced it and rerun it: this section lists the medtl version and git
commit, a hash of the resolved configuration, package versions, every seed, and the
hardware the training jobs and the report ran on.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Any

from medtl import provenance
from medtl.report.tables import json_safe, table

#: Packages listed besides those of :data:`medtl.provenance.PACKAGES`.
REPORT_PACKAGES = ("matplotlib", "highdicom", "jinja2")


def config_hash(config: dict) -> str:
    """SHA-256 of the configuration as canonical JSON (sorted keys), hex.

    Example:
        >>> config_hash({"b": 1, "a": [1, 2]}) == config_hash({"a": [1, 2], "b": 1})
        True
    """
    text = json.dumps(json_safe(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _memory_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def machine() -> dict[str, Any]:
    """The machine this runs on: OS, CPU model and cores, memory, GPU if any."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu": provenance.cpu_model(),
        "cpu_cores": os.cpu_count(),
        "memory_gb": _memory_gb(),
    }
    info.update(provenance.hardware())
    return info


def _yaml(config: dict) -> str:
    import yaml

    return yaml.safe_dump(json_safe(config), sort_keys=False, allow_unicode=True)


def _short(digest: str | None) -> str:
    return digest[:12] if digest else "–"


def _hash_rows(run_records: list[dict]) -> list[dict]:
    """Per training run: combined SHA-256 of its inputs by kind, and of its trained weights
    (the record's ``weights``, a ``best.pt``)."""
    rows = []
    for r in run_records:
        hashes = r.get("sha256") or {}
        best = Path(r["weights"]) if r.get("weights") else None
        rows.append(
            {
                "arm": r.get("arm"),
                "seed": r.get("seed"),
                "fold": r.get("fold"),
                **{f"{kind}_sha256": h.get("combined") for kind, h in hashes.items()},
                "trained_weights_sha256": provenance.weights_digest(best)
                if best and best.is_file()
                else None,
            }
        )
    return rows


def provenance_section(
    config: dict,
    run_records: list[dict],
    folds: dict,
) -> dict:
    """The section's tables and the record for ``summary.json``.

    Args:
        config: the resolved configuration (secrets already redacted).
        run_records: the ``run.json`` of every training run, with ``arm``, ``seed``,
            ``fold`` and ``weights`` (its ``best.pt``, hashed here).
        folds: ``folds.json`` (for the split seed).
    """
    versions = provenance.package_versions(REPORT_PACKAGES)
    commit = provenance.git_commit()
    train_commits = sorted({str(r.get("git_commit")) for r in run_records if r.get("git_commit")})
    seeds = {
        "config seed": config.get("seed"),
        "split seed": folds.get("seed"),
        "training seeds": sorted({r.get("seed") for r in run_records if r.get("seed") is not None}),
        "bootstrap seed": 0,
    }
    train_hw = sorted(
        {
            json.dumps({"device": r.get("device"), **(r.get("hardware") or {})}, sort_keys=True)
            for r in run_records
        }
    )
    hash_rows = _hash_rows(run_records)
    record = {
        "inputs_and_weights": hash_rows,
        "medtl_version": versions.get("medtl"),
        "git_commit": commit,
        "training_git_commits": train_commits,
        "config_sha256": config_hash(config),
        "seeds": seeds,
        "versions": versions,
        "report_machine": machine(),
        "training_hardware": [json.loads(h) for h in train_hw],
    }
    facts = [
        ["medtl version", record["medtl_version"]],
        ["git commit (report)", commit],
        ["git commit (training)", ", ".join(train_commits) or "–"],
        ["config sha256", record["config_sha256"]],
        *[[k, ", ".join(map(str, v)) if isinstance(v, list) else str(v)] for k, v in seeds.items()],
    ]
    hw_rows = [
        ["report machine", ", ".join(f"{k}: {v}" for k, v in record["report_machine"].items())]
    ]
    hw_rows += [
        ["training", ", ".join(f"{k}: {v}" for k, v in h.items())]
        for h in record["training_hardware"]
    ]
    kinds = sorted({k for row in hash_rows for k in row if k.endswith("_sha256")})
    hashes = (
        table(
            ["arm", "seed", "fold", *(k.removesuffix("_sha256").replace("_", " ") for k in kinds)],
            [
                [row["arm"], "–" if row["seed"] is None else row["seed"], row["fold"]]
                + [_short(row.get(k)) for k in kinds]
                for row in hash_rows
            ],
            numeric_from=len(kinds) + 3,
        )
        if hash_rows
        else None
    )
    return {
        "hashes": hashes,
        "facts": table(["", "value"], facts, numeric_from=2),
        "versions": table(["package", "version"], [[k, v] for k, v in versions.items()], 2),
        "hardware": table(["where", "hardware"], hw_rows, numeric_from=2),
        "config_text": _yaml(config),
        "record": record,
    }
