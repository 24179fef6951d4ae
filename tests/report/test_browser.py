"""The HTML report in a real browser: Debian's Chromium, headless, with the network off.

It renders the report built from the tiny result tree of ``test_build.py``, takes a
full-page screenshot (kept as a CI artefact: ``$MEDTL_ARTIFACTS/report-screenshot.png``,
else ``artifacts/report-screenshot.png`` at the repository root), and checks that every
image loaded and that the per-arm table holds numbers.

Skipped, with the reason, where chromium, chromedriver or selenium is missing; CI installs
them (``.ci/install-services.sh``) and sets ``MEDTL_REQUIRE_BROWSER=1``, which makes a missing
browser a failure instead of a skip.
"""

from __future__ import annotations

import base64
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from medtl.report.build import build_report
from tests.report.test_build import ARMS, CLASSES, results  # noqa: F401  (results: the fixture)
from tests.support import browser

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


SCREENSHOT_NAME = "report-screenshot.png"
TABLE_ID = "per-arm-table"
MIN_SCREENSHOT_BYTES = 20_000
# A cell holds a number when its text starts with one: "0.781 ± 0.050", "0.78 (0.74–0.82)", "8".
NUMBER = re.compile(r"[-+\u2212]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
DATA_PNG = "data:image/png;base64,"


def artifacts_dir() -> Path:
    """Where CI artefacts go: ``$MEDTL_ARTIFACTS``, else ``artifacts/`` in the repository."""
    env = os.environ.get("MEDTL_ARTIFACTS")
    return Path(env) if env else REPO / "artifacts"


def leading_number(text: str) -> float | None:
    """The finite number a table cell starts with, or None ("–", "nan", "scratch")."""
    match = NUMBER.match(text.strip())
    if match is None:
        return None
    value = float(match.group().replace("\u2212", "-"))
    return value if math.isfinite(value) else None


def broken_images(states: list[dict]) -> list[dict]:
    """The images the browser did not load or could not decode."""
    return [s for s in states if not browser.image_loaded(s)]


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    """Headless Chromium, offline; skipped where missing, failed if MEDTL_REQUIRE_BROWSER=1."""
    reason = browser.missing_reason()
    if reason is not None:
        if os.environ.get("MEDTL_REQUIRE_BROWSER") == "1":
            pytest.fail(f"MEDTL_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    with browser.headless_chromium() as chromium:
        yield chromium


@pytest.fixture
def report(results, tmp_path) -> Path:  # noqa: F811  (results: test_build.py's fixture)
    """The report built from test_build.py's synthetic result tree."""
    out = tmp_path / "out"
    build_report(
        results,
        out / "report.html",
        out / "figures",
        out / "summary.json",
        arms=ARMS,
        reference_arm="scratch",
        classes=CLASSES,
        config={"arms": {"scratch": {"init": "random"}}, "seed": 1},
    )
    return out / "report.html"


def test_report_renders_in_chromium(driver, report, capsys):
    browser.open_file(driver, report)
    shot = browser.full_page_screenshot(driver, artifacts_dir() / SCREENSHOT_NAME)
    with capsys.disabled():
        print(f"\nreport screenshot: {shot}")

    # The report is self-contained: the browser fetched nothing besides the file itself.
    assert browser.fetched_resources(driver) == []

    images = browser.image_states(driver)
    assert images, "the report shows no <img>"
    assert broken_images(images) == [], "images that did not load"

    table = browser.table_cells(driver, TABLE_ID)
    assert table is not None, f"no element with id {TABLE_ID!r}"
    assert table["rows"], f"table {TABLE_ID!r} has no data rows"
    for row in table["rows"]:
        numbers = [n for n in map(leading_number, row) if n is not None]
        assert numbers, f"row without a number in {TABLE_ID!r}: {row}"
    for arm in ARMS:
        assert any(arm in row for row in table["rows"]), f"{arm} missing from {TABLE_ID!r}"

    # A full page, not just the window: taller than the viewport, and not blank.
    data = shot.read_bytes()
    assert data[:8] == browser.PNG_SIGNATURE
    width, height = browser.png_size(shot)
    viewport = driver.execute_script("return [window.innerWidth, window.innerHeight];")
    assert width >= viewport[0] - 20
    assert height > viewport[1], f"screenshot {width}x{height} is no taller than the window"
    assert len(data) > MIN_SCREENSHOT_BYTES


def test_image_check_catches_a_broken_image(driver, report, tmp_path):
    html = report.read_text(encoding="utf-8")
    start = html.index(DATA_PNG) + len(DATA_PNG)
    end = html.index('"', start)
    garbage = base64.b64encode(b"this is not a PNG").decode()
    broken = html[:start] + garbage + html[end:]
    # An image from the network must fail as well: the browser is offline.
    remote = (
        '<img src="https://example.org/x.png" alt="remote">'
        '<img src="http://192.0.2.1/x.png" alt="remote">'  # an address, not a name
    )
    broken = broken.replace("</body>", remote + "</body>")
    page = tmp_path / "broken.html"
    page.write_text(broken, encoding="utf-8")

    browser.open_file(driver, page)
    images = browser.image_states(driver)
    bad = broken_images(images)
    n = len(images)
    assert n == html.count("<img") + 2
    assert [s["index"] for s in bad] == [0, n - 2, n - 1]
    assert [s["alt"] for s in bad[1:]] == ["remote", "remote"]
