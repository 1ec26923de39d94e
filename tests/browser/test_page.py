"""The dashboard as files and HTTP answers, without a browser: served at ``GET /`` under a strict
Content-Security-Policy it actually complies with, its assets served and nothing else of the
package, and every file of it shipped in the wheel."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from api.dashboard import CONTENT_SECURITY_POLICY, HERE
from engine.connection import embedded
from engine.runtime import Runtime
from engine.settings import Settings
from tests.processes import ROOT

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app on an in-memory store (the page needs no data)."""
    runtime = await Runtime.open(settings, embedded())
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http
    await runtime.close()


class Tags(HTMLParser):
    """Every start tag of a page with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def tags_of(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Tags()
    parser.feed(html)
    return parser.tags


async def test_the_page_is_served_under_a_strict_policy(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert policy == CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in policy
    assert "default-src 'none'" in policy
    assert "form-action 'none'" in policy  # a typed token can never be submitted into a URL
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    # Programs that open / find where to go.
    assert 'href="/docs"' in page.text
    assert 'href="/openapi.json"' in page.text


async def test_the_page_obeys_its_own_policy(client: httpx.AsyncClient) -> None:
    """No inline script, style or handler (the policy would block them), and every asset comes
    from this origin and is served."""
    assets = await obeys_the_policy(client, "/", ("/dashboard/",))
    assert assets == ["/dashboard/icon.svg", "/dashboard/style.css", "/dashboard/dom.js",
                      "/dashboard/app.js"]  # fmt: skip


async def obeys_the_policy(
    client: httpx.AsyncClient, page: str, asset_prefixes: tuple[str, ...]
) -> list[str]:
    """Checks that the HTML at ``page`` has no inline script, style or handler (the policy would
    block them) and that its assets, all under ``asset_prefixes``, are served with their types;
    returns the assets in document order."""
    html = (await client.get(page)).text
    assert "<style" not in html
    assets = []
    for tag, attrs in tags_of(html):
        assert "style" not in attrs, tag
        assert not [name for name in attrs if name.startswith("on")], (tag, attrs)
        if tag == "script":
            assert attrs.get("src"), "inline script"
        url = attrs.get("src") or (attrs.get("href") if tag == "link" else None)
        if url:
            assert url.startswith(asset_prefixes), url
            assets.append(url)
    types = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    for url in assets:
        served = await client.get(url)
        assert served.status_code == 200, url
        assert served.headers["content-type"].startswith(types[Path(url).suffix]), url
    return assets


async def test_the_markup_is_labelled_and_announces_changes(client: httpx.AsyncClient) -> None:
    tags = tags_of((await client.get("/")).text)
    assert ("html", {"lang": "en"}) in tags
    labelled = {attrs["for"] for tag, attrs in tags if tag == "label"}
    inputs = [attrs for tag, attrs in tags if tag == "input"]
    assert inputs
    assert all(attrs["id"] in labelled for attrs in inputs)
    live = {attrs["id"]: attrs for _, attrs in tags if "aria-live" in attrs}
    assert live["connection"]["role"] == "status"  # connection state
    assert "announce" in live  # executions that end
    assert not [attrs for tag, attrs in tags if tag == "button" and not attrs.get("type")]


async def test_only_the_assets_are_served_as_files(client: httpx.AsyncClient) -> None:
    for path in ("/dashboard/__init__.py", "/dashboard/index.html"):
        assert (await client.get(path)).status_code == 404, path


async def test_the_token_goes_in_one_url_only_and_stays_in_the_tab(
    client: httpx.AsyncClient,
) -> None:
    script = (await client.get("/dashboard/app.js")).text
    # The WebSocket's: the one place a browser WebSocket can carry it.
    assert re.findall(r"searchParams\.set\(\"token\"", script) == ['searchParams.set("token"']
    assert "sessionStorage" in script
    assert "localStorage" not in script


def test_every_file_of_the_page_is_package_data() -> None:
    """An installed wheel serves the page too: each file under api/dashboard is either a module
    or matched by the package-data globs in pyproject.toml."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["api.dashboard"]
    files = [
        p.relative_to(HERE).as_posix()
        for p in HERE.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc")
    ]
    assert files
    for name in files:
        assert any(fnmatch.fnmatch(name, glob) for glob in globs), name
