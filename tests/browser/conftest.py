"""A headless Chromium for the dashboard tests: Debian's ``chromium`` driven through Debian's
``chromedriver`` (package ``chromium-driver``) with Selenium (the ``test`` extra).

Nothing is downloaded: a test tool's own browser build cannot be fetched where only package
registries are reachable, so the system's browser and driver are used. When either is missing
the browser tests skip, unless CLIPSTREAM_REQUIRE_REDIS=1 (CI, whose ``.ci/run`` installs both),
where they fail. The same goes for the private redis-server the end-to-end test runs on.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

from tests.servers import redis_server, redis_server_available, unavailable

BROWSER_PACKAGES = "the Debian packages chromium and chromium-driver"
DEBIAN_BIN = Path("/usr/bin")  # where they install, whatever PATH says


def _binary(name: str) -> str | None:
    """``name`` on PATH, or where Debian puts it (PATH may be minimal under CI)."""
    found = shutil.which(name)
    if found is None and (DEBIAN_BIN / name).exists():
        found = str(DEBIAN_BIN / name)
    return found


def browser_binaries() -> tuple[str, str]:
    """Chromium and its chromedriver; :func:`unavailable` when either is missing."""
    chromium, chromedriver = _binary("chromium"), _binary("chromedriver")
    if chromium is None or chromedriver is None:
        missing = [name for name in ("chromium", "chromedriver") if _binary(name) is None]
        unavailable(
            f"{' and '.join(missing)} not found: the dashboard tests need {BROWSER_PACKAGES}"
        )
    return chromium, chromedriver


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """A headless Chromium, closed after the test."""
    chromium, chromedriver = browser_binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
        "--disable-dev-shm-usage",  # containers have a tiny /dev/shm
        "--disable-gpu",
        "--window-size=1280,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(arg)
    service = Service(executable_path=chromedriver, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def private_redis_url() -> Iterator[str]:
    """A redis-server of this test's own: the role processes see nothing of other tests."""
    if not redis_server_available():
        unavailable("redis-server is not on PATH")
    with redis_server() as server:
        yield server.url
