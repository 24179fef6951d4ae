"""Drive Debian's headless Chromium through Selenium, for tests of the HTML report.

Chromium comes from the Debian package ``chromium`` and its driver from ``chromium-driver``
(``.ci/install-services.sh`` installs both). Both binaries are handed to Selenium explicitly,
so Selenium Manager never looks for, or downloads, a browser or driver. The browser runs
headless with a fresh temporary profile, no sandbox (containers run as root), and offline:
every host name resolves to nothing and DevTools network emulation blocks every request, so
a page that needs the network shows it.

Example:
    >>> with headless_chromium() as driver:  # doctest: +SKIP
    ...     open_file(driver, Path("report.html"))
    ...     full_page_screenshot(driver, Path("report.png"))
    ...     broken = [i for i in image_states(driver) if not image_loaded(i)]
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import shutil
import struct
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BROWSER_NAMES = ("chromium", "chromium-browser")
DRIVER_NAMES = ("chromedriver",)
DEBIAN_BROWSER = Path("/usr/bin/chromium")
DEBIAN_DRIVER = Path("/usr/bin/chromedriver")
INSTALL_HINT = "install it with: apt-get install chromium chromium-driver (.ci/install-services.sh)"
WINDOW = (1280, 900)
PAGE_LOAD_TIMEOUT_S = 30.0
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--force-device-scale-factor=1",
    "--hide-scrollbars",
    # No name resolves: anything the page fetches from a host fails instead of loading.
    "--host-resolver-rules=MAP * ~NOTFOUND",
)


def _find(names: tuple[str, ...], debian: Path) -> Path | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return Path(found)
    return debian if debian.is_file() else None


def find_chromium() -> Path | None:
    """Chromium's executable (``chromium`` on PATH, else ``/usr/bin/chromium``), or None."""
    return _find(BROWSER_NAMES, DEBIAN_BROWSER)


def find_chromedriver() -> Path | None:
    """The driver's executable (``chromedriver`` on PATH, else ``/usr/bin/chromedriver``)."""
    return _find(DRIVER_NAMES, DEBIAN_DRIVER)


def missing_reason() -> str | None:
    """Why no headless Chromium can be started here, or None when it can."""
    if importlib.util.find_spec("selenium") is None:
        return (
            "the Python package selenium is not installed; "
            "install the dev extras: pip install -e '.[dev]'"
        )
    if find_chromium() is None:
        return f"Chromium is not installed (no chromium on PATH, no {DEBIAN_BROWSER}); " + (
            INSTALL_HINT
        )
    if find_chromedriver() is None:
        return (
            f"chromedriver is not installed (no chromedriver on PATH, no {DEBIAN_DRIVER}); "
            + INSTALL_HINT
        )
    return None


@contextlib.contextmanager
def headless_chromium(
    window: tuple[int, int] = WINDOW, page_load_timeout_s: float = PAGE_LOAD_TIMEOUT_S
) -> Iterator[Any]:
    """Start headless Chromium with a fresh profile; yield its Selenium ``WebDriver``.

    The browser is quit and its profile folder removed on exit.

    Raises:
        RuntimeError: Chromium, chromedriver or selenium is missing (with how to install it).
    """
    reason = missing_reason()
    if reason is not None:
        raise RuntimeError(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = find_chromium(), find_chromedriver()
    assert browser is not None and driver_path is not None
    profile = Path(tempfile.mkdtemp(prefix="medtl-chromium-"))
    driver = None
    try:
        options = webdriver.ChromeOptions()
        options.binary_location = str(browser)
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        options.add_argument(f"--window-size={window[0]},{window[1]}")
        service = Service(executable_path=str(driver_path), log_output=str(profile / "driver.log"))
        driver = webdriver.Chrome(service=service, options=options)
        driver.set_page_load_timeout(page_load_timeout_s)
        go_offline(driver)
        yield driver
    finally:
        if driver is not None:
            driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def go_offline(driver: Any) -> None:
    """Cut the page off the network (DevTools network emulation), IP addresses included.

    ``file://`` and ``data:`` URLs still load.
    """
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd(
        "Network.emulateNetworkConditions",
        {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
    )


def open_file(driver: Any, path: Path, timeout_s: float = PAGE_LOAD_TIMEOUT_S) -> str:
    """Load a local file through its ``file://`` URL and wait for its images; return the URL."""
    url = Path(path).resolve().as_uri()
    driver.get(url)
    deadline = time.monotonic() + timeout_s
    while not driver.execute_script(
        "return document.readyState === 'complete'"
        " && Array.from(document.images).every(i => i.complete);"
    ):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not finish loading within {timeout_s:.0f} s")
        time.sleep(0.05)
    return url


def _capture(driver: Any, clip: dict, out: Path) -> Path:
    """Write a PNG of the page region ``clip`` (CSS pixels) through the DevTools protocol."""
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {"format": "png", "captureBeyondViewport": True, "fromSurface": True, "clip": clip},
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(base64.b64decode(shot["data"]))
    return out


def full_page_screenshot(driver: Any, out: Path) -> Path:
    """Write a PNG of the whole page (not just the window) through the DevTools protocol."""
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = metrics.get("cssContentSize") or metrics["contentSize"]
    clip = {
        "x": 0,
        "y": 0,
        "width": max(1, int(size["width"] + 0.5)),
        "height": max(1, int(size["height"] + 0.5)),
        "scale": 1,
    }
    return _capture(driver, clip, out)


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG file, read from its header.

    Raises:
        ValueError: the file is not a PNG.
    """
    head = Path(path).read_bytes()[:24]
    if len(head) < 24 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise ValueError(f"{path} is not a PNG file")
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


_IMAGES_JS = """
return Array.from(document.images).map((img, index) => ({
    index: index,
    alt: img.alt,
    src: img.currentSrc.slice(0, 64),
    complete: img.complete,
    naturalWidth: img.naturalWidth,
    naturalHeight: img.naturalHeight,
}));
"""


def image_states(driver: Any) -> list[dict]:
    """For every ``<img>`` of the page: index, alt, start of src, complete, natural size."""
    return list(driver.execute_script(_IMAGES_JS))


def image_loaded(state: dict) -> bool:
    """Whether an entry of :func:`image_states` is an image the browser decoded."""
    return bool(state["complete"]) and int(state["naturalWidth"]) > 0


_TABLE_JS = """
const table = document.getElementById(arguments[0]);
if (table === null) { return null; }
const text = cells => Array.from(cells).map(c => c.textContent.trim());
const head = table.tHead ? table.tHead.rows : [];
const body = Array.from(table.tBodies).flatMap(b => Array.from(b.rows));
return {
    header: head.length ? text(head[0].cells) : [],
    rows: body.map(r => text(r.cells)),
};
"""


def table_cells(driver: Any, table_id: str) -> dict | None:
    """``{"header": [...], "rows": [[...], ...]}``, the text of a table's cells, or None.

    ``rows`` holds the body rows (``<tbody>``); None when no element has ``table_id``.
    """
    return driver.execute_script(_TABLE_JS, table_id)


def fetched_resources(driver: Any) -> list[str]:
    """URLs of everything the page fetched besides itself (Resource Timing API).

    ``data:`` URLs are not fetched and so not listed; a self-contained page lists nothing.
    """
    script = "return performance.getEntriesByType('resource').map(e => e.name);"
    return list(driver.execute_script(script))


def element_screenshot(driver: Any, element_id: str, out: Path, margin: int = 8) -> Path:
    """Write a PNG of one element of the page (e.g. a report section) by its id."""
    box = driver.execute_script(
        "const r = document.getElementById(arguments[0]).getBoundingClientRect();"
        "return [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height];",
        element_id,
    )
    x, y, w, h = (float(v) for v in box)
    clip = {
        "x": max(0.0, x - margin),
        "y": max(0.0, y - margin),
        "width": w + 2 * margin,
        "height": h + 2 * margin,
        "scale": 1,
    }
    return _capture(driver, clip, out)


def main(argv: list[str]) -> int:
    """``python tests/support/browser.py REPORT.html OUT_DIR [SECTION_ID ...]``.

    Writes ``report-<id>.png`` for each section id (the whole page as
    ``report-page.png`` when none is given); docs/report.md's pictures come from here.
    """
    if len(argv) < 2:
        print(main.__doc__)
        return 2
    report, out_dir, ids = Path(argv[0]), Path(argv[1]), argv[2:]
    with headless_chromium() as driver:
        open_file(driver, report)
        if not ids:
            print(full_page_screenshot(driver, out_dir / "report-page.png"))
        for element_id in ids:
            print(element_screenshot(driver, element_id, out_dir / f"report-{element_id}.png"))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
