"""The record a DICOMweb pull leaves in its cache: ``CACHE/.medtl-pull.json``."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from medtl.kernel.files import atomic_write_text

if TYPE_CHECKING:
    from medtl.io.dicomweb import PullReport

#: The record's name inside the cache folder.
PULL_RECORD = ".medtl-pull.json"


def write_pull_record(report: PullReport, cache: Path) -> Path:
    """Write what a pull did (studies, instances new / cached, failures) into the cache."""
    record = asdict(report)
    record["failed"] = [asdict(r) for r in report.failed]
    return atomic_write_text(Path(cache) / PULL_RECORD, json.dumps(record, indent=2) + "\n")
