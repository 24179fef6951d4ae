"""Which studies to pull from which DICOMweb server: the query and its configuration keys.

:func:`query_from_config` checks the ``dataset`` keys of a ``kind: dicomweb`` config and
builds a :class:`DicomwebQuery`; :func:`medtl.io.dicomweb.pull` runs it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from medtl.kernel.errors import ConfigError

#: A DICOM UID: digits and dots.
UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_DATE_RE = re.compile(r"^[0-9]{8}$")
_MODALITY_RE = re.compile(r"^[A-Z0-9_]{1,16}$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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
            if not isinstance(uid, str) or not UID_PATTERN.match(uid) or len(uid) > 64:
                raise ConfigError(
                    f"config key 'study_uids': got {uid!r}; expected DICOM UIDs (digits and "
                    "dots, at most 64 characters), e.g. 1.2.840.113619.2.55.3.1234"
                )
        _check_pattern(
            "modality",
            self.modality,
            _MODALITY_RE,
            "a DICOM modality code in capitals, e.g. MR or CT",
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
        _check_pattern(
            "password_env",
            self.password_env,
            _ENV_RE,
            "the name of an environment variable, e.g. PACS_PASSWORD",
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


def _check_pattern(key: str, value: object, pattern: re.Pattern[str], expected: str) -> None:
    """Refuse a config value that is given but is no string matching ``pattern``."""
    if value is not None and (not isinstance(value, str) or not pattern.match(value)):
        raise ConfigError(f"config key '{key}': got {value!r}; expected {expected}")


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
        medtl.kernel.errors.ConfigError: config key 'password': unknown. Allowed keys: ...
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
