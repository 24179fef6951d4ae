"""Fixtures for the input tests: a throw-away Orthanc server with DICOMweb."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SUPPORT = Path(__file__).resolve().parents[1] / "support"
if str(SUPPORT) not in sys.path:
    sys.path.insert(0, str(SUPPORT))

import orthanc  # noqa: E402  (tests/support, put on sys.path above)


@pytest.fixture(scope="module")
def orthanc_url() -> Iterator[str]:
    """Base URL of an Orthanc server with the DICOMweb plugin (DICOMweb at ``/dicom-web``).

    Skipped, with the reason, where Orthanc is not installed; CI installs it with
    ``.ci/install-services.sh``. Set ``MEDTL_REQUIRE_ORTHANC=1`` to make a missing Orthanc
    a failure instead of a skip.
    """
    reason = orthanc.missing_reason()
    if reason is not None:
        if os.environ.get("MEDTL_REQUIRE_ORTHANC") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    with orthanc.orthanc_server() as base:
        yield base
