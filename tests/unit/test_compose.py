"""compose.yaml ships no secret: both are required (``${VAR:?message}``, which compose refuses to
start without) and the API is published on the loopback address only."""

from __future__ import annotations

import re

from tests.processes import ROOT

COMPOSE = (ROOT / "compose.yaml").read_text()


def test_both_secrets_are_required_and_have_no_default() -> None:
    for name in ("CLIPSTREAM_ADMIN_TOKEN", "CLIPSTREAM_JWT_SECRET"):
        [line] = [x for x in COMPOSE.splitlines() if x.strip().startswith(f"{name}:")]
        assert re.search(rf"\$\{{{name}:\?[^}}]+\}}", line), line  # ${VAR:?message}: unset or empty
        assert ":-" not in line
        assert "not-secret" not in line


def test_the_api_is_published_on_loopback_only() -> None:
    published = re.findall(r'^\s*-\s*"([^"]*:\d+)"\s*$', COMPOSE, re.MULTILINE)
    assert published == ["127.0.0.1:8000:8000"]
