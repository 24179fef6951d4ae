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
import dataclasses
import datetime as dt
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import requests
from dicomweb_client.api import DICOMwebClient
from tqdm.auto import tqdm

from medtl.kernel.errors import ConfigError, InputError, Rejection
from medtl.kernel.files import atomic_write, is_temporary

log = logging.getLogger(__name__)

# DICOM attribute tags as they appear in QIDO-RS JSON responses.
_STUDY_UID = "0020000D"
_SERIES_UID = "0020000E"
_SOP_UID = "00080018"

_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_DATE_RE = re.compile(r"^[0-9]{8}$")
_MODALITY_RE = re.compile(r"^[A-Z0-9_]{1,16}$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
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
class DicomwebQuery:
    """Which studies to pull from which DICOMweb server.

    All filters are combined (AND); an unset filter matches everything.

    Attributes:
        url: the server's DICOMweb root, e.g. ``http://127.0.0.1:8042/dicom-web``.
        patient_id: PatientID to match.
        study_uids: StudyInstanceUIDs to pull (any of them); empty means any study.
        modality: a modality code (``MR``, ``CT``): studies whose ModalitiesInStudy hold it,
            and of those only the series of that modality.
        date_from: first StudyDate to match, ``YYYYMMDD``, inclusive.
        date_to: last StudyDate to match, ``YYYYMMDD``, inclusive.
        study_description: StudyDescription to match; ``*`` and ``?`` are wildcards
            (``*BRAIN*``).
        username: user name for HTTP basic authentication, or None for none.
        password_env: name of the environment variable that holds the password (the
            password itself is never part of the configuration).

    Raises:
        ConfigError: a value of the wrong form (says which key, what was found and what is
            expected).

    Example:
        >>> q = DicomwebQuery("http://127.0.0.1:8042/dicom-web", modality="MR",
        ...                   date_from="20240101", date_to="20241231")
        >>> q.study_date_filter()
        '20240101-20241231'
    """

    url: str
    patient_id: str | None = None
    study_uids: tuple[str, ...] = ()
    modality: str | None = None
    date_from: str | None = None
    date_to: str | None = None
    study_description: str | None = None
    username: str | None = None
    password_env: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not re.match(r"^https?://[^/\s]+", self.url):
            raise ConfigError(
                f"config key 'url': got {self.url!r}; expected an http:// or https:// URL "
                "of the DICOMweb root, e.g. http://pacs.example.org:8042/dicom-web"
            )
        if "@" in self.url.split("://", 1)[1].split("/", 1)[0]:
            raise ConfigError(
                "config key 'url': found a user name or password in the URL; expected none. "
                "Give the user as username and the password in an environment variable named "
                "by password_env"
            )
        for key in ("patient_id", "study_description", "username"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(
                    f"config key '{key}': got {value!r}; expected a non-empty string or null"
                )
        if isinstance(self.study_uids, (str, list)):
            uids = [self.study_uids] if isinstance(self.study_uids, str) else self.study_uids
            object.__setattr__(self, "study_uids", tuple(uids))
        for uid in self.study_uids:
            if not isinstance(uid, str) or not _UID_RE.match(uid) or len(uid) > 64:
                raise ConfigError(
                    f"config key 'study_uids': got {uid!r}; expected DICOM UIDs (digits and "
                    "dots, at most 64 characters), e.g. 1.2.840.113619.2.55.3.1234"
                )
        if self.modality is not None and (
            not isinstance(self.modality, str) or not _MODALITY_RE.match(self.modality)
        ):
            raise ConfigError(
                f"config key 'modality': got {self.modality!r}; expected a DICOM modality code "
                "in capitals, e.g. MR or CT"
            )
        for key in ("date_from", "date_to"):
            value = getattr(self, key)
            if value is None:
                continue
            if isinstance(value, int) and not isinstance(value, bool):
                value = str(value)  # YAML reads 20240101 as a number
                object.__setattr__(self, key, value)
            if not isinstance(value, str) or not _valid_date(value):
                raise ConfigError(
                    f"config key '{key}': got {value!r}; expected a date as YYYYMMDD, e.g. 20240131"
                )
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ConfigError(
                f"config keys 'date_from'/'date_to': got {self.date_from} after {self.date_to}; "
                "expected date_from on or before date_to"
            )
        if self.password_env is not None and (
            not isinstance(self.password_env, str) or not _ENV_RE.match(self.password_env)
        ):
            raise ConfigError(
                f"config key 'password_env': got {self.password_env!r}; expected the name of "
                "an environment variable, e.g. PACS_PASSWORD"
            )
        if (self.username is None) != (self.password_env is None):
            raise ConfigError(
                "config keys 'username'/'password_env': found only one of them; expected both "
                "(basic authentication) or neither"
            )

    def study_date_filter(self) -> str | None:
        """The QIDO-RS StudyDate range (``YYYYMMDD-YYYYMMDD``, open ends allowed), or None."""
        if not self.date_from and not self.date_to:
            return None
        return f"{self.date_from or ''}-{self.date_to or ''}"

    def study_filters(self) -> dict[str, str]:
        """The QIDO-RS study-level search filters, without StudyInstanceUID."""
        filters: dict[str, str] = {}
        if self.patient_id:
            filters["PatientID"] = self.patient_id
        if self.modality:
            filters["ModalitiesInStudy"] = self.modality
        date = self.study_date_filter()
        if date:
            filters["StudyDate"] = date
        if self.study_description:
            filters["StudyDescription"] = self.study_description
        return filters


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


def _valid_date(text: str) -> bool:
    if not _DATE_RE.match(text):
        return False
    try:
        dt.datetime.strptime(text, "%Y%m%d")
    except ValueError:
        return False
    return True


def query_from_config(d: dict[str, Any]) -> DicomwebQuery:
    """Build a :class:`DicomwebQuery` from a configuration mapping, checking every key.

    Args:
        d: a mapping with the keys of :class:`DicomwebQuery`; ``url`` is required and
            ``study_uids`` is a list of UIDs.

    Raises:
        ConfigError: an unknown or missing key, or a value of the wrong form.

    Example:
        >>> query_from_config({"url": "http://127.0.0.1:8042/dicom-web", "modality": "MR"})
        ... # doctest: +ELLIPSIS
        DicomwebQuery(url='http://127.0.0.1:8042/dicom-web', patient_id=None, ...)
        >>> query_from_config({"url": "http://h/dicom-web", "password": "x"})
        Traceback (most recent call last):
        ...
        medtl.config.ConfigError: config key 'password': unknown. Allowed keys: ...
    """
    if not isinstance(d, dict):
        raise ConfigError(f"dicomweb dataset: expected a mapping of query keys, got {d!r}")
    allowed = [f.name for f in dataclasses.fields(DicomwebQuery)]
    for key in d:
        if key not in allowed:
            hint = ""
            if str(key).lower() in ("password", "pass", "passwd", "token"):
                hint = (
                    ". A password is never read from the configuration: put it in an "
                    "environment variable and give that variable's name as password_env"
                )
            raise ConfigError(
                f"config key '{key}': unknown. Allowed keys: {', '.join(sorted(allowed))}{hint}"
            )
    if d.get("url") is None:
        raise ConfigError(
            "config key 'url': missing; expected the DICOMweb root URL, e.g. "
            "http://pacs.example.org:8042/dicom-web"
        )
    values = dict(d)
    uids = values.get("study_uids")
    if uids is None:
        values["study_uids"] = ()
    elif isinstance(uids, (list, tuple)):
        values["study_uids"] = tuple(uids)
    else:
        raise ConfigError(
            f"config key 'study_uids': got {uids!r}; expected a list of StudyInstanceUIDs"
        )
    return DicomwebQuery(**values)


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
    if isinstance(value, str) and _UID_RE.match(value) and len(value) <= 64:
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


__all__ = [
    "DicomwebQuery",
    "PullReport",
    "pull",
    "query_from_config",
    "remove_stale_temporaries",
]
