"""Fixtures for the input tests: a throw-away Orthanc server with DICOMweb."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support import orthanc


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
