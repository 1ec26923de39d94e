"""The operator console as files and HTTP answers, without a browser: served at
``GET /admin/console`` under the dashboard's strict policy it complies with, its assets served and
nothing else of the package, the token kept out of URLs and in the tab, every file shipped."""

from __future__ import annotations

import fnmatch
import tomllib

import httpx
import pytest

from api.console import HERE
from api.dashboard import CONTENT_SECURITY_POLICY
from tests.browser.test_page import client, obeys_the_policy, tags_of
from tests.processes import ROOT

pytestmark = pytest.mark.anyio
__all__ = ["client"]


async def test_the_console_is_served_under_the_strict_policy(client: httpx.AsyncClient) -> None:
    page = await client.get("/admin/console")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert page.headers["x-content-type-options"] == "nosniff"


async def test_the_console_obeys_its_own_policy(client: httpx.AsyncClient) -> None:
    assets = await obeys_the_policy(
        client, "/admin/console", ("/admin/console/assets/", "/dashboard/")
    )
    # The icon, the house style sheet, its own, the shared DOM helpers, its script.
    own = "/admin/console/assets"
    assert assets == ["/dashboard/icon.svg", "/dashboard/style.css", f"{own}/console.css",
                      "/dashboard/dom.js", f"{own}/console.js"]  # fmt: skip
    html = (await client.get("/admin/console")).text
    labelled = {attrs["for"] for tag, attrs in tags_of(html) if tag == "label"}
    assert all(attrs["id"] in labelled for tag, attrs in tags_of(html) if tag == "input")


async def test_only_the_console_assets_are_served_as_files(client: httpx.AsyncClient) -> None:
    for path in ("/admin/console/assets/../__init__.py", "/admin/console/assets/index.html"):
        assert (await client.get(path)).status_code == 404, path


async def test_the_admin_token_stays_in_the_header_and_the_tab(client: httpx.AsyncClient) -> None:
    script = (await client.get("/admin/console/assets/console.js")).text
    assert "Authorization: `Bearer ${state.token}`" in script
    assert "sessionStorage" in script
    assert "localStorage" not in script
    assert "?token" not in script


def test_every_file_of_the_console_is_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["api.console"]
    files = [
        p.relative_to(HERE).as_posix()
        for p in HERE.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc")
    ]
    assert files
    for name in files:
        assert any(fnmatch.fnmatch(name, glob) for glob in globs), name
