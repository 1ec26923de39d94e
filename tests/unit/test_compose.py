"""compose.yaml ships no secret: both are required (``${VAR:?message}``, which compose refuses to
start without) and every published port (the API, Prometheus, Grafana) is on the loopback address
only."""

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


def test_every_port_is_published_on_loopback_only() -> None:
    published = re.findall(r'^\s*-\s*"([^"]*:\d+)"\s*$', COMPOSE, re.MULTILINE)
    # The API; Prometheus and Grafana (profile "monitoring"). The roles' metrics ports are not
    # published: Prometheus reaches them inside the compose network.
    assert published == ["127.0.0.1:8000:8000", "127.0.0.1:9090:9090", "127.0.0.1:3000:3000"]
