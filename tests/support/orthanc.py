"""Start a throw-away Orthanc server with its DICOMweb plugin, for tests.

The server listens on a free port of 127.0.0.1 (``RemoteAccessAllowed: false``), keeps its
storage and index in a temporary folder, has no DICOM (DIMSE) server, and is stopped and its
folder removed on exit. Orthanc comes from the Debian packages ``orthanc`` and
``orthanc-dicomweb`` (``.ci/install-services.sh`` installs them).

Example:
    >>> with orthanc_server() as base:  # doctest: +SKIP
    ...     upload_instances(base, Path("dicom").rglob("*.dcm"))
    ...     dicomweb_url = base + "/dicom-web"
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import requests

ORTHANC_BINARY = Path("/usr/sbin/Orthanc")
PLUGIN_NAME = "libOrthancDicomWeb.so"
PLUGIN_FOLDERS = (Path("/usr/share/orthanc/plugins"), Path("/usr/lib/orthanc"))
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def find_plugin() -> Path | None:
    """The DICOMweb plugin library, or None when it is not installed.

    Looks in the Debian package's plugin folders first, then in the files that
    ``dpkg -L orthanc-dicomweb`` lists.
    """
    for folder in PLUGIN_FOLDERS:
        if folder.is_dir():
            for candidate in sorted(folder.glob(f"{PLUGIN_NAME}*")):
                if candidate.is_file():
                    return candidate
    if shutil.which("dpkg"):
        listed = subprocess.run(
            ["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True, check=False
        )
        for line in listed.stdout.splitlines():
            candidate = Path(line.strip())
            if candidate.name.startswith(PLUGIN_NAME) and candidate.is_file():
                return candidate
    return None


def missing_reason() -> str | None:
    """Why no Orthanc server can be started here, or None when one can."""
    if not ORTHANC_BINARY.is_file():
        return (
            f"Orthanc is not installed (expected {ORTHANC_BINARY}); "
            "install it with .ci/install-services.sh (Debian packages orthanc, orthanc-dicomweb)"
        )
    if find_plugin() is None:
        return (
            f"the Orthanc DICOMweb plugin is not installed (expected {PLUGIN_NAME}); "
            "install the Debian package orthanc-dicomweb (.ci/install-services.sh)"
        )
    return None


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(folder: Path, http_port: int, plugin: Path) -> dict:
    return {
        "Name": "medtl-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "StorageCompression": False,
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "SslEnabled": False,
        "DicomServerEnabled": False,
        "DicomPort": free_port(),
        "SaveJobs": False,
        "ConcurrentJobs": 1,
        "HttpsVerifyPeers": False,
        "Plugins": [str(plugin)],  # only the DICOMweb plugin, not the whole folder
        "DicomWeb": {
            "Enable": True,
            "Root": "/dicom-web/",
            "EnableWado": False,
            "Ssl": False,
        },
    }


def _log_tail(log: Path, chars: int = 3000) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM, wait, then SIGKILL."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)


@contextlib.contextmanager
def orthanc_server(timeout_s: float = START_TIMEOUT_S) -> Iterator[str]:
    """Run Orthanc with the DICOMweb plugin; yield its base URL (``http://127.0.0.1:PORT``).

    The DICOMweb API is at ``<base>/dicom-web``.

    Raises:
        RuntimeError: Orthanc or its plugin is missing, it exited, or ``GET /system`` did not
            answer within ``timeout_s`` (the message carries the end of Orthanc's log).
    """
    reason = missing_reason()
    if reason is not None:
        raise RuntimeError(reason)
    plugin = find_plugin()
    assert plugin is not None
    folder = Path(tempfile.mkdtemp(prefix="medtl-orthanc-"))
    proc: subprocess.Popen | None = None
    try:
        port = free_port()
        config = folder / "orthanc.json"
        config.write_text(json.dumps(_config(folder, port, plugin), indent=2))
        log = folder / "orthanc.log"
        with log.open("wb") as log_fp:
            proc = subprocess.Popen(
                [str(ORTHANC_BINARY), str(config)],
                cwd=folder,
                stdin=subprocess.DEVNULL,
                stdout=log_fp,
                stderr=subprocess.STDOUT,
                env={**os.environ, "LC_ALL": "C.UTF-8"},
            )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"Orthanc exited with status {proc.returncode} before answering "
                    f"GET {base}/system; its log ends:\n{_log_tail(log)}"
                )
            try:
                if requests.get(f"{base}/system", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"Orthanc did not answer GET {base}/system within {timeout_s:.0f} s; "
                    f"its log ends:\n{_log_tail(log)}"
                )
            time.sleep(0.1)
        yield base
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(folder, ignore_errors=True)


def upload_instances(base: str, files: Iterable[Path]) -> list[str]:
    """Store DICOM files in Orthanc through its REST API (``POST /instances``).

    Returns:
        Orthanc's identifier of each stored instance, in the order of ``files``.
    """
    ids = []
    with requests.Session() as session:
        for path in files:
            response = session.post(
                f"{base}/instances",
                data=Path(path).read_bytes(),
                headers={"Content-Type": "application/dicom"},
                timeout=30,
            )
            response.raise_for_status()
            ids.append(response.json()["ID"])
    return ids
