"""``GET /metrics``: the process's meters by route template, the store's figures, no id labels."""

from __future__ import annotations

import re

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from api.metrics import UNMATCHED
from tests.api.conftest import ApiAccount, new_account
from tests.scrapes import (
    PROCESS_FAMILIES,
    STORE_FAMILIES,
    assert_no_id_labels,
    samples,
    value,
)

pytestmark = pytest.mark.anyio

VIDEO = "https://youtu.be/dQw4w9WgXcQ"


async def scrape(client: httpx.AsyncClient) -> dict[str, list[Sample]]:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


async def test_requests_are_counted_by_route_template_and_status(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    before = await scrape(client)
    alice: ApiAccount = await new_account(client, admin, coins=1)
    item = await client.post("/v1/items", json={"source": VIDEO}, headers=alice.key_auth)
    item_id = item.json()["item"]["item_id"]
    for _ in range(2):
        answer = await client.get(f"/v1/items/{item_id}", headers=alice.key_auth)
        assert answer.status_code == 200
    assert (await client.get("/v1/items/itm_nothere", headers=alice.key_auth)).status_code == 404
    assert (await client.get(f"/no/such/{item_id}")).status_code == 404
    after = await scrape(client)

    def delta(**labels: str) -> float:
        name, sample = "clipstream_http_requests", "clipstream_http_requests_total"
        return value(after, name, sample, **labels) - value(before, name, sample, **labels)

    route = "/v1/items/{item_id}"
    assert delta(route=route, method="GET", status="200") == 2
    assert delta(route=route, method="GET", status="404") == 1
    assert delta(route="/v1/items", method="POST", status="201") == 1
    assert delta(route=UNMATCHED, method="GET", status="404") == 1
    hist = "clipstream_http_request_duration_seconds"
    count = value(after, hist, f"{hist}_count", route=route, method="GET") - value(
        before, hist, f"{hist}_count", route=route, method="GET"
    )
    assert count == 3
    assert_no_id_labels(after)


async def test_an_accepted_execution_and_its_fee_are_counted(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    alice = await new_account(client, admin, coins=1)
    item = await client.post("/v1/items", json={"source": VIDEO}, headers=alice.key_auth)
    item_id = item.json()["item"]["item_id"]
    before = await scrape(client)
    answer = await client.post(f"/v1/items/{item_id}/transcript", json={}, headers=alice.key_auth)
    assert answer.status_code == 202, answer.text
    after = await scrape(client)
    accepted = ("clipstream_executions_accepted", "clipstream_executions_accepted_total")
    assert (
        value(after, *accepted, kind="transcript") - value(before, *accepted, kind="transcript")
        == 1
    )
    fee = ("clipstream_coins_charged", "clipstream_coins_charged_total")
    assert value(after, *fee, charge="fee") - value(before, *fee, charge="fee") == pytest.approx(
        0.01
    )  # a float counter of coins: the exact money is the ledger's, not the meter's
    # The store's figures: the execution waits in its partition (no worker runs here).
    depth = sum(s.value for s in after["clipstream_queue_depth"])
    assert depth >= 1
    assert value(after, "clipstream_scrape_store_ok", "clipstream_scrape_store_ok") == 1
    assert_no_id_labels(after)


async def test_the_store_families_are_served(client: httpx.AsyncClient, backend: str) -> None:
    found = await scrape(client)
    memory = "clipstream_redis_memory_used_bytes"
    if backend == "real":
        assert value(found, memory, memory) > 0
    else:  # fakeredis has no INFO: the family is left out, the rest still served
        assert memory not in found
    for family in (*STORE_FAMILIES, *PROCESS_FAMILIES, "clipstream_feed_subscribers"):
        assert family in found, family
    partitions = {s.labels["partition"] for s in found["clipstream_queue_depth"]}
    assert partitions == {"0", "1", "2", "3"}


async def test_the_alerts_and_the_dashboard_use_only_served_metrics(
    client: httpx.AsyncClient,
) -> None:
    """Every series deploy/alerts.yml and the Grafana dashboard query is one /metrics serves (a
    renamed family would otherwise leave an alert that can never fire)."""
    from tests.processes import ROOT

    response = await client.get("/metrics")
    families = {f.name for f in text_string_to_metric_families(response.text)}
    # Not served by fakeredis (no INFO); the real-Redis variant of the test above checks them.
    families |= {"clipstream_redis_memory_used_bytes", "clipstream_redis_memory_max_bytes"}
    queried = set()
    for path in ("deploy/alerts.yml", "deploy/grafana/clipstream.json"):
        queried |= set(re.findall(r"clipstream_[a-z_]+", (ROOT / path).read_text()))
    queried -= {"clipstream_"}  # the dashboard's uid and tags say "clipstream" alone
    suffixes = ("_total", "_bucket", "_count", "_sum")
    unknown = sorted(
        name
        for name in queried
        if name not in families
        and not any(name.endswith(s) and name.removesuffix(s) in families for s in suffixes)
    )
    assert unknown == []
