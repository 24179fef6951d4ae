"""Pull studies from a PACS over DICOMweb into a local DICOM cache.

``dataset.kind: dicomweb`` names a DICOMweb server and a query (patient, study UIDs,
modality, date range, study description). :func:`pull` searches the server with QIDO-RS
(studies, then their series, then their instances) and retrieves every instance with
WADO-RS into::

    cache/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm

Each file is written atomically, so a killed pull never leaves a file that looks complete,
and a pull is resumable: an instance whose file is already in the cache is skipped, and
the unfinished temporaries of a killed pull are removed when the next one starts. An
instance that cannot be retrieved is set aside as a :class:`~medtl.kernel.errors.Rejection`
and the others carry on; run the pull again to retry it. The cache is then an ordinary
DICOM folder for :func:`medtl.io.ingest.ingest_path`.

The patient ID is sent to the server as a filter but never logged or written by this
module: error messages name HTTP statuses and UIDs only, and while a pull runs the log
records of ``dicomweb_client`` and ``urllib3`` (whose debug messages carry request URLs)
have the patient ID replaced by ``<patient-id>``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import requests
from dicomweb_client.api import DICOMwebClient
from tqdm.auto import tqdm

from medtl.io.dicomweb_query import UID_PATTERN, DicomwebQuery, query_from_config
from medtl.kernel.errors import InputError, Rejection
from medtl.kernel.files import atomic_write, is_temporary

log = logging.getLogger(__name__)

# DICOM attribute tags as they appear in QIDO-RS JSON responses.
_STUDY_UID = "0020000D"
_SERIES_UID = "0020000E"
_SOP_UID = "00080018"

# Loggers whose messages may carry request URLs, hence the patient-ID filter.
_URL_LOGGERS = ("dicomweb_client", "dicomweb_client.web", "dicomweb_client.api", "urllib3")
# Each HTTP request is tried this often (connection errors, 408, 429, 503, 504), waiting
# 2**n * _BACKOFF_MS ms between tries (0.5, 1, 2 s): a server that is down is reported in
# seconds, not the half minute of dicomweb_client's default.
_MAX_ATTEMPTS = 4
_BACKOFF_MS = 250
_RETRY_FIX = (
    "run the pull again: instances already in the cache are skipped and what failed is "
    "retried; if it fails again, check the server's log"
)


@dataclass(frozen=True)
class PullReport:
    """What :func:`pull` did.

    Attributes:
        studies: studies that matched the query.
        series: series searched in them.
        instances_downloaded: instances retrieved and written to the cache by this pull.
        instances_skipped: instances already in the cache, not retrieved again.
        failed: studies, series or instances that could not be searched or retrieved.
        temporaries_removed: unfinished temporaries of an earlier, interrupted pull that
            this one removed from the cache before it started.
    """

    studies: int
    series: int
    instances_downloaded: int
    instances_skipped: int
    failed: list[Rejection] = field(default_factory=list)
    temporaries_removed: int = 0


class _RedactFilter(logging.Filter):
    """Replaces secrets (raw and URL-encoded) in log records."""

    def __init__(self, secrets: list[str], replacement: str) -> None:
        super().__init__()
        forms = {s for secret in secrets for s in (secret, quote(secret), quote_plus(secret))}
        self._forms = sorted((f for f in forms if f), key=len, reverse=True)
        self._replacement = replacement

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = message
        for form in self._forms:
            redacted = redacted.replace(form, self._replacement)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


@contextlib.contextmanager
def _redacted_logs(patient_id: str | None) -> Iterator[None]:
    """While active, the patient ID never reaches the logs of the HTTP libraries."""
    if not patient_id:
        yield
        return
    filt = _RedactFilter([patient_id], "<patient-id>")
    loggers = [logging.getLogger(name) for name in _URL_LOGGERS]
    loggers += [
        logging.getLogger(name)
        for name in list(logging.root.manager.loggerDict)
        if name.startswith(("dicomweb_client.", "urllib3."))
    ]
    loggers = list({id(lg): lg for lg in loggers}.values())
    for lg in loggers:
        lg.addFilter(filt)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(filt)


def _describe(exc: BaseException) -> str:
    """An exception's kind and HTTP status, never its message (which may carry a URL)."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if status is not None:
        return f"HTTP {status} ({type(exc).__name__})"
    return type(exc).__name__


def _uid(item: dict[str, Any], tag: str) -> str | None:
    """The first value of ``tag`` in a QIDO-RS JSON result, if it is a valid UID."""
    values = item.get(tag, {}).get("Value") or []
    value = values[0] if values else None
    if isinstance(value, str) and UID_PATTERN.match(value) and len(value) <= 64:
        return value
    return None


def _session(query: DicomwebQuery) -> requests.Session:
    session = requests.Session()
    if query.username is not None and query.password_env is not None:
        password = os.environ.get(query.password_env)
        if password is None:
            session.close()
            raise InputError(
                query.url,
                f"basic authentication as {query.username!r} needs the password in the "
                f"environment variable {query.password_env}, which is not set",
                f"export {query.password_env}=<password> before running, or remove username "
                "and password_env from the configuration if the server needs no login",
            )
        session.auth = (query.username, password)
    return session


def _connection_error(url: str, exc: BaseException) -> InputError:
    """The InputError for a server that cannot be searched at all."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status in (401, 403):
        return InputError(
            url,
            f"expected the DICOMweb server to answer a study search, found {_describe(exc)}: "
            "the login was refused",
            "set username and password_env in the configuration and the password in that "
            "environment variable, and check that this user may query the server",
        )
    if status == 404:
        return InputError(
            url,
            f"expected a DICOMweb service at this URL, found {_describe(exc)} for a study search",
            "check the URL's path (the DICOMweb root, e.g. /dicom-web for Orthanc) and that "
            "the server's DICOMweb plugin or service is enabled",
        )
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return InputError(
            url,
            f"expected a DICOMweb server at this address, found no answer ({_describe(exc)})",
            "check the server's host name and port, that the server is running and reachable "
            "from this machine, and that its DICOMweb plugin is enabled",
        )
    return InputError(
        url,
        f"expected a DICOMweb study search to succeed, found {_describe(exc)}",
        "check that the URL is the server's DICOMweb root (QIDO-RS answers at <url>/studies) "
        "and that its DICOMweb plugin is enabled",
    )


def _search_all(search: Callable[..., list[dict[str, Any]]], tag: str, **kwargs: Any) -> list[str]:
    """The UIDs (``tag``) of every result of a QIDO-RS search, in order, without repeats.

    A server may return its results in pages; the next page is asked for with ``offset``
    until one comes back empty, or holds no new UID (a server that ignores ``offset``).
    """
    found: dict[str, None] = {}
    offset = 0
    while True:
        page = search(offset=offset, **kwargs)
        new = [u for u in (_uid(item, tag) for item in page) if u and u not in found]
        found.update(dict.fromkeys(new))
        if not page or not new:
            return list(found)
        offset += len(page)


def _search_studies(client: DICOMwebClient, query: DicomwebQuery) -> list[str]:
    """The StudyInstanceUIDs that match the query, in the server's order, without repeats."""
    base = query.study_filters()
    searches = [{**base, "StudyInstanceUID": uid} for uid in query.study_uids] or [base]
    found: dict[str, None] = {}
    for filters in searches:
        uids = _search_all(
            client.search_for_studies,
            _STUDY_UID,
            fields=["StudyInstanceUID"],
            search_filters=filters,
        )
        found.update(dict.fromkeys(uids))
    return list(found)


def _retrieve(client: DICOMwebClient, study: str, series: str, sop: str, path: Path) -> str | None:
    """Retrieve one instance (WADO-RS) and write it atomically; the problem, or None."""
    try:
        ds = client.retrieve_instance(study, series, sop)
    except Exception as exc:  # one instance's failure must not stop the rest
        return f"expected to retrieve this instance (WADO-RS), found {_describe(exc)}"
    found = str(getattr(ds, "SOPInstanceUID", "") or "")
    if found != sop:
        return (
            f"expected the server to send SOPInstanceUID {sop}, found {found or 'none'} "
            "(the server's index may be damaged)"
        )
    try:
        atomic_write(path, lambda tmp: ds.save_as(tmp, enforce_file_format=True))
    except Exception as exc:  # e.g. a dataset without transfer syntax, or a full disk
        return f"expected to save the retrieved instance as a DICOM file, found {_describe(exc)}"
    return None


def remove_stale_temporaries(cache: Path) -> int:
    """Delete the unfinished temporaries an interrupted pull left in ``cache``.

    A pull writes each instance under a hidden temporary name and renames it when
    complete (:func:`medtl.kernel.files.atomic_write`); a pull killed mid-write leaves the
    temporary behind, often empty. Only names of that pattern
    (:func:`medtl.kernel.files.is_temporary`) are removed, and hidden folders are not entered:
    nothing else in the cache is touched. Two pulls must not share a cache at the same time.

    Args:
        cache: the pull's cache folder (missing: nothing to do).

    Returns:
        How many files were removed.
    """
    removed = 0
    for folder, dirs, files in os.walk(cache):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            path = Path(folder) / name
            if name.startswith(".") and is_temporary(path):
                path.unlink(missing_ok=True)
                removed += 1
    if removed:
        log.info("removed %d unfinished temporary file(s) of an earlier pull", removed)
    return removed


def pull(query: DicomwebQuery, cache: Path, progress: bool = True) -> PullReport:
    """Retrieve the instances of the studies that match ``query`` into ``cache``.

    Args:
        query: the server and the filters.
        cache: the local cache folder (created); instances already there are skipped.
        progress: show a progress bar over the instances.

    Returns:
        The counts, and a rejection for each study, series or instance that failed.

    Raises:
        InputError: the server cannot be searched at all (no answer at the URL, no DICOMweb
            service there, login refused, password variable not set).

    Example:
        >>> report = pull(DicomwebQuery("http://127.0.0.1:8042/dicom-web"), Path("cache"))
        ... # doctest: +SKIP
        >>> report.instances_downloaded + report.instances_skipped  # doctest: +SKIP
        120
    """
    cache = Path(cache)
    url = query.url.rstrip("/")
    failed: list[Rejection] = []
    removed = remove_stale_temporaries(cache)
    with _redacted_logs(query.patient_id), _session(query) as session:
        client = DICOMwebClient(url, session=session)
        client.set_http_retry_params(
            retry=True, max_attempts=_MAX_ATTEMPTS, wait_exponential_multiplier=_BACKOFF_MS
        )
        try:
            studies = _search_studies(client, query)
        except (requests.RequestException, ValueError) as exc:  # ValueError: not JSON
            # "from None": the exception's own message may carry the patient ID in a URL.
            raise _connection_error(url, exc) from None

        todo, n_series = _list_instances(client, studies, query, cache, failed)
        downloaded, skipped = _download(client, todo, cache, progress, failed)

    report = PullReport(
        studies=len(studies),
        series=n_series,
        instances_downloaded=downloaded,
        instances_skipped=skipped,
        failed=failed,
        temporaries_removed=removed,
    )
    log.info(
        "dicomweb pull from %s: %d studies, %d series, %d instances downloaded, %d skipped, "
        "%d failed",
        url,
        report.studies,
        report.series,
        report.instances_downloaded,
        report.instances_skipped,
        len(report.failed),
    )
    return report


def _list_instances(
    client: DICOMwebClient,
    studies: list[str],
    query: DicomwebQuery,
    cache: Path,
    failed: list[Rejection],
) -> tuple[list[tuple[str, str, str]], int]:
    """Every (study, series, instance) UID to retrieve, and the number of series searched.

    A study or series the server cannot list is added to ``failed``; the others carry on.
    """
    series_filters = {"Modality": query.modality} if query.modality else None
    todo: list[tuple[str, str, str]] = []
    n_series = 0
    for study in studies:
        try:
            series_uids = _search_all(
                client.search_for_series,
                _SERIES_UID,
                study_instance_uid=study,
                fields=["SeriesInstanceUID"],
                search_filters=series_filters,
            )
        except Exception as exc:  # one study's failure must not stop the rest
            failed.append(
                Rejection(
                    str(cache / study),
                    f"expected the server to list the study's series (QIDO-RS), "
                    f"found {_describe(exc)}",
                    _RETRY_FIX,
                )
            )
            continue
        n_series += len(series_uids)
        for series in series_uids:
            try:
                sops = _search_all(
                    client.search_for_instances,
                    _SOP_UID,
                    study_instance_uid=study,
                    series_instance_uid=series,
                    fields=["SOPInstanceUID"],
                )
            except Exception as exc:  # one series' failure must not stop the rest
                failed.append(
                    Rejection(
                        str(cache / study / series),
                        f"expected the server to list the series' instances (QIDO-RS), "
                        f"found {_describe(exc)}",
                        _RETRY_FIX,
                    )
                )
                continue
            todo.extend((study, series, sop) for sop in sops)
    return todo, n_series


def _download(
    client: DICOMwebClient,
    todo: list[tuple[str, str, str]],
    cache: Path,
    progress: bool,
    failed: list[Rejection],
) -> tuple[int, int]:
    """Retrieve each instance not yet in the cache; the numbers downloaded and skipped."""
    downloaded = skipped = 0
    for study, series, sop in tqdm(
        todo, desc="dicomweb pull", unit="instance", disable=not progress
    ):
        path = cache / study / series / f"{sop}.dcm"
        if path.is_file():
            skipped += 1
            continue
        problem = _retrieve(client, study, series, sop, path)
        if problem is None:
            downloaded += 1
        else:
            failed.append(Rejection(str(path), problem, _RETRY_FIX))
    return downloaded, skipped


__all__ = [
    "DicomwebQuery",
    "PullReport",
    "pull",
    "query_from_config",
    "remove_stale_temporaries",
]
