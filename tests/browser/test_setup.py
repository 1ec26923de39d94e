"""Without a browser the dashboard tests skip on a developer's machine and fail in CI (where
.ci/run installs one, so its absence is a broken setup, never a silent skip)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.browser import conftest

ON_PATH_ONLY = {"chromium": "/opt/chromium", "chromedriver": "/opt/chromedriver"}


@pytest.fixture
def no_browser(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Neither binary on PATH nor where Debian installs them."""
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(conftest, "DEBIAN_BIN", tmp_path)


@pytest.mark.usefixtures("no_browser")
def test_a_missing_browser_skips_with_the_packages_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLIPSTREAM_REQUIRE_REDIS", raising=False)
    with pytest.raises(pytest.skip.Exception) as skipped:
        conftest.browser_binaries()
    assert "chromium and chromedriver not found" in str(skipped.value)
    assert "chromium-driver" in str(skipped.value)


@pytest.mark.usefixtures("no_browser")
def test_a_missing_browser_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPSTREAM_REQUIRE_REDIS", "1")
    with pytest.raises(pytest.fail.Exception) as failed:
        conftest.browser_binaries()
    assert "CLIPSTREAM_REQUIRE_REDIS=1" in str(failed.value)


def test_the_binaries_are_found_on_path_or_where_debian_puts_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(shutil, "which", ON_PATH_ONLY.get)
    assert conftest.browser_binaries() == ("/opt/chromium", "/opt/chromedriver")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(conftest, "DEBIAN_BIN", tmp_path)
    (tmp_path / "chromium").touch()
    (tmp_path / "chromedriver").touch()
    assert conftest.browser_binaries() == (
        str(tmp_path / "chromium"),
        str(tmp_path / "chromedriver"),
    )
