"""Canned parts of a benchmark's ``results.json``, shared by the harness tests."""

from __future__ import annotations

#: ``results["versions"]`` as :func:`bench_common.versions` writes it.
VERSIONS = {
    "date": "2026-01-01",
    "machine": "cpu, 2 cores",
    "gpu": "none",
    "threads": 2,
    "medtl": "abc",
    "torch (medtl)": "2",
    "monai": "1",
    "nnunetv2": "2.8.1",
    "torch (nnU-Net)": "2",
    "python": "3.11",
}
