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

#: ``results["quiet"]`` of a quiet 40-minute run on 2 cores (:class:`bench_quiet.Quietness`).
QUIET = {
    "wall_s": 2400.0,
    "cores": 2,
    "machine_cpu_s": 4000.0,
    "own_cpu_s": 3904.0,
    "others_cpu_s": 96.0,
    "others_share": 0.02,
    "load_before": 0.3,
    "load_after": 2.1,
}
