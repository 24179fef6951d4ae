"""Tests for the DICOMweb pull (medtl.io.dicomweb) against a real Orthanc server.

The server (Debian packages ``orthanc`` and ``orthanc-dicomweb``, installed in CI by
``.ci/install-services.sh``) is started on a free port of 127.0.0.1 by the ``orthanc_url``
fixture of ``tests/io/conftest.py``; these tests are skipped where it is not installed.
The configuration tests need no server.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import socket
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from medtl.demo.generate import generate_demo
from medtl.io.dicomweb import (
    DicomwebQuery,
    PullReport,
    pull,
    query_from_config,
    remove_stale_temporaries,
)
from medtl.io.ingest import ingest_path
from medtl.kernel.errors import ConfigError, InputError
from tests.support import orthanc

N_PATIENTS = 2


# --- configuration (no server) ---------------------------------------------------------


def test_query_from_config_accepts_the_documented_keys():
    q = query_from_config(
        {
            "url": "http://127.0.0.1:8042/dicom-web",
            "patient_id": "P1",
            "study_uids": ["1.2.3", "1.2.4"],
            "modality": "MR",
            "date_from": 20240101,  # YAML reads an unquoted date as a number
            "date_to": "20241231",
            "study_description": "*BRAIN*",
            "username": "reader",
            "password_env": "PACS_PASSWORD",
        }
    )
    assert q.study_uids == ("1.2.3", "1.2.4")
    assert q.date_from == "20240101"
    assert q.study_date_filter() == "20240101-20241231"
    assert q.study_filters() == {
        "PatientID": "P1",
        "ModalitiesInStudy": "MR",
        "StudyDate": "20240101-20241231",
        "StudyDescription": "*BRAIN*",
    }
    assert DicomwebQuery("http://h/dicom-web", date_from="20240101").study_date_filter() == (
        "20240101-"
    )
    assert DicomwebQuery("http://h/dicom-web", date_to="20240101").study_date_filter() == (
        "-20240101"
    )


@pytest.mark.parametrize(
    ("mapping", "words"),
    [
        ({"url": "http://h/dicom-web", "modalty": "MR"}, ["'modalty'", "unknown", "modality"]),
        ({"url": "http://h/dicom-web", "password": "x"}, ["'password'", "password_env"]),
        ({"patient_id": "P1"}, ["'url'", "missing"]),
        ({"url": "pacs:8042"}, ["'url'", "http://"]),
        ({"url": "http://u:pw@h/dicom-web"}, ["'url'", "password_env"]),
        ({"url": "http://h/dicom-web", "date_from": "2024-01-01"}, ["'date_from'", "YYYYMMDD"]),
        ({"url": "http://h/dicom-web", "date_to": "20240231"}, ["'date_to'", "YYYYMMDD"]),
        (
            {"url": "http://h/dicom-web", "date_from": "20240201", "date_to": "20240101"},
            ["date_from", "date_to"],
        ),
        ({"url": "http://h/dicom-web", "study_uids": "1.2.3"}, ["'study_uids'", "list"]),
        ({"url": "http://h/dicom-web", "study_uids": ["1.2.x"]}, ["'study_uids'", "1.2.x"]),
        ({"url": "http://h/dicom-web", "modality": "mr"}, ["'modality'", "MR"]),
        ({"url": "http://h/dicom-web", "username": "u"}, ["password_env"]),
        (
            {"url": "http://h/dicom-web", "username": "u", "password_env": "not a name"},
            ["'password_env'", "environment variable"],
        ),
    ],
)
def test_query_from_config_refuses_bad_values(mapping, words):
    with pytest.raises(ConfigError) as err:
        query_from_config(mapping)
    for word in words:
        assert word in str(err.value)


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed once the socket is


def test_pull_from_a_closed_port_is_an_input_error(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/dicom-web"
    with pytest.raises(InputError) as err:
        pull(DicomwebQuery(url), tmp_path / "cache", progress=False)
    assert err.value.path == url
    assert "DICOMweb" in err.value.fix and "port" in err.value.fix
    assert not (tmp_path / "cache").exists()


def test_pull_without_the_password_variable_is_an_input_error(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDTL_TEST_NO_SUCH_PASSWORD", raising=False)
    query = DicomwebQuery(
        f"http://127.0.0.1:{_closed_port()}/dicom-web",
        username="reader",
        password_env="MEDTL_TEST_NO_SUCH_PASSWORD",
    )
    with pytest.raises(InputError, match="MEDTL_TEST_NO_SUCH_PASSWORD"):
        pull(query, tmp_path / "cache", progress=False)


def test_pull_first_removes_the_temporaries_a_killed_pull_left(tmp_path, monkeypatch):
    """A pull killed mid-write leaves `.<sop>.dcm.<random>.tmp<suffix>`; the next removes it."""
    series = tmp_path / "cache" / "1.2.3" / "1.2.3.4"
    series.mkdir(parents=True)
    stale = series / ".1.2.3.4.5.dcm.x7k2p9q1.tmp.2.3.4.5.dcm"
    stale.write_bytes(b"")
    kept = [series / "1.2.3.4.6.dcm", tmp_path / "cache" / ".medtl-pull.json"]
    for path in kept:
        path.write_text("not ours to remove")
    (series / ".DS_Store").write_bytes(b"\0")
    kept.append(series / ".DS_Store")

    query = DicomwebQuery(
        f"http://127.0.0.1:{_closed_port()}/dicom-web",
        username="reader",
        password_env="MEDTL_TEST_NO_SUCH_PASSWORD",
    )
    monkeypatch.delenv("MEDTL_TEST_NO_SUCH_PASSWORD", raising=False)
    with pytest.raises(InputError):  # no password to log in with; the cleanup came first
        pull(query, tmp_path / "cache", progress=False)

    assert not stale.exists()
    assert all(path.exists() for path in kept)
    assert remove_stale_temporaries(tmp_path / "cache") == 0
    assert remove_stale_temporaries(tmp_path / "no-such-cache") == 0


# --- against Orthanc ---------------------------------------------------------------------


def _instances(root: Path) -> dict[str, Path]:
    """SOPInstanceUID -> file, for the DICOM files under ``root``."""
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        out[str(ds.SOPInstanceUID)] = path
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The demo DICOM target series (2 patients), as generate_demo writes them."""
    root = tmp_path_factory.mktemp("dicomweb-demo")
    generate_demo(root / "demo", n_source=1, n_patients=N_PATIENTS, progress=False)
    return root / "demo" / "target" / "dicom"


@pytest.fixture(scope="module")
def originals(corpus) -> dict[str, Path]:
    return _instances(corpus)


@pytest.fixture(scope="module")
def server(orthanc_url, originals) -> str:
    """The DICOMweb URL of an Orthanc server holding the demo corpus."""
    ids = orthanc.upload_instances(orthanc_url, originals.values())
    assert len(set(ids)) == len(originals)
    return f"{orthanc_url}/dicom-web"


@pytest.fixture(scope="module")
def full_pull(server, tmp_path_factory) -> tuple[Path, PullReport]:
    cache = tmp_path_factory.mktemp("dicomweb-cache") / "cache"
    return cache, pull(DicomwebQuery(server), cache, progress=False)


def test_pull_everything(full_pull, originals):
    cache, report = full_pull
    studies = {
        pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID for p in originals.values()
    }
    assert report.failed == []
    assert report.studies == len(studies)
    assert report.series == len(studies)  # one series per demo study
    assert report.instances_downloaded == len(originals)
    assert report.instances_skipped == 0
    pulled = _instances(cache)
    assert set(pulled) == set(originals)
    for sop, path in pulled.items():
        got, want = pydicom.dcmread(path), pydicom.dcmread(originals[sop])
        assert path == cache / want.StudyInstanceUID / want.SeriesInstanceUID / f"{sop}.dcm"
        assert got.PixelData == want.PixelData
        np.testing.assert_array_equal(got.pixel_array, want.pixel_array)
    assert not [p for p in cache.rglob(".*")], "temporary files left in the cache"


def test_second_pull_skips_everything(full_pull, server, originals):
    cache, _ = full_pull
    before = {p: p.stat().st_mtime_ns for p in cache.rglob("*.dcm")}
    report = pull(DicomwebQuery(server), cache, progress=False)
    assert (report.instances_downloaded, report.instances_skipped) == (0, len(originals))
    assert report.failed == []
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*.dcm")} == before


def test_pull_resumes_after_a_partial_pull(full_pull, server, originals, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(full_pull[0], cache)
    removed = sorted(cache.rglob("*.dcm"))[::3]
    for path in removed:
        path.unlink()
    report = pull(DicomwebQuery(server), cache, progress=False)
    assert report.instances_downloaded == len(removed)
    assert report.instances_skipped == len(originals) - len(removed)
    assert set(_instances(cache)) == set(originals)


def test_pull_filters_by_patient_without_logging_it(server, originals, tmp_path, caplog):
    patient = "DEMO-001"
    wanted = {
        sop
        for sop, path in originals.items()
        if pydicom.dcmread(path, stop_before_pixels=True).PatientID == patient
    }
    assert 0 < len(wanted) < len(originals)
    with caplog.at_level(logging.DEBUG):
        report = pull(DicomwebQuery(server, patient_id=patient), tmp_path / "c", progress=False)
    assert report.instances_downloaded == len(wanted)
    assert set(_instances(tmp_path / "c")) == wanted
    assert caplog.records, "expected the HTTP libraries to log at DEBUG"
    assert patient not in caplog.text
    assert "Demo^" not in caplog.text
    assert patient not in repr(report)


def test_pull_filters_by_study_uid_modality_and_description(server, originals, tmp_path):
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in originals.values()]
    study = sorted({h.StudyInstanceUID for h in headers})[0]
    report = pull(DicomwebQuery(server, study_uids=(study,)), tmp_path / "a", progress=False)
    assert report.studies == 1
    assert {p.parent.parent.name for p in (tmp_path / "a").rglob("*.dcm")} == {study}
    assert report.instances_downloaded == sum(h.StudyInstanceUID == study for h in headers)

    for query in (
        DicomwebQuery(server, modality="CT"),
        DicomwebQuery(server, study_description="*NO SUCH STUDY*"),
    ):
        empty = pull(query, tmp_path / "b", progress=False)
        assert (empty.studies, empty.instances_downloaded, empty.failed) == (0, 0, [])


def test_pull_with_a_date_range_that_matches_nothing(server, tmp_path):
    query = DicomwebQuery(server, date_from="19000101", date_to="19001231")
    report = pull(query, tmp_path / "cache", progress=False)
    assert report == PullReport(0, 0, 0, 0, [])
    assert not list((tmp_path / "cache").rglob("*.dcm"))


def test_pull_with_a_date_range_that_matches_some(server, originals, tmp_path):
    dates = {pydicom.dcmread(p, stop_before_pixels=True).StudyDate for p in originals.values()}
    first = min(dates)
    assert len(dates) > 1
    report = pull(DicomwebQuery(server, date_to=first), tmp_path / "cache", progress=False)
    assert report.studies >= 1
    for path in (tmp_path / "cache").rglob("*.dcm"):
        assert pydicom.dcmread(path, stop_before_pixels=True).StudyDate <= first


def test_a_failed_instance_is_rejected_and_the_rest_carry_on(
    server, originals, tmp_path, monkeypatch
):
    from dicomweb_client.api import DICOMwebClient

    real = DICOMwebClient.retrieve_instance
    calls = []

    def flaky(self, study, series, sop, *args, **kwargs):
        calls.append(sop)
        if len(calls) == 2:
            raise ConnectionError("simulated drop")
        return real(self, study, series, sop, *args, **kwargs)

    monkeypatch.setattr(DICOMwebClient, "retrieve_instance", flaky)
    cache = tmp_path / "cache"
    report = pull(DicomwebQuery(server), cache, progress=False)
    assert report.instances_downloaded == len(originals) - 1
    [rejection] = report.failed
    assert rejection.path.endswith(f"{calls[1]}.dcm")
    assert "WADO-RS" in rejection.reason and "again" in rejection.fix
    assert not Path(rejection.path).exists()

    monkeypatch.setattr(DICOMwebClient, "retrieve_instance", real)
    again = pull(DicomwebQuery(server), cache, progress=False)
    assert (again.instances_downloaded, again.instances_skipped) == (1, len(originals) - 1)


def test_wrong_dicomweb_root_is_an_input_error(orthanc_url, tmp_path):
    with pytest.raises(InputError) as err:
        pull(DicomwebQuery(f"{orthanc_url}/no-dicom-web"), tmp_path / "cache", progress=False)
    assert "404" in err.value.reason
    assert "DICOMweb" in err.value.fix


def _case_keys(manifest) -> Counter:
    """Each case as (patient, shape, spacing, orientation, modality, voxel and affine hash)."""
    keys = Counter()
    for row in manifest.itertuples():
        img = nib.load(row.image)
        data = np.asarray(img.dataobj)
        digest = hashlib.sha256(data.tobytes() + np.round(img.affine, 4).tobytes()).hexdigest()
        keys[(row.patient_id, row.shape, row.spacing, row.orientation, row.modality, digest)] += 1
    return keys


def test_ingest_of_the_pull_matches_a_direct_ingest(full_pull, corpus, tmp_path):
    cache, _ = full_pull
    pulled, rejected_a = ingest_path(cache, tmp_path / "a", salt="s", progress=False)
    direct, rejected_b = ingest_path(corpus, tmp_path / "b", salt="s", progress=False)
    assert rejected_a.empty and rejected_b.empty
    assert len(pulled) == len(direct) > 0
    for column in ("patient_id", "shape", "spacing"):
        assert sorted(pulled[column]) == sorted(direct[column])
    assert _case_keys(pulled) == _case_keys(direct)
