"""Schemathesis against the app in process: for every operation of the OpenAPI document (routes
added later join by themselves), generated requests never get a 5xx, and every answer matches the
document (status declared, content type, body schema).

Hypothesis drives the cases synchronously, so the app runs on an event loop in a blocking portal
(one loop for the whole test: the fakeredis runtime and the httpx client live on it). Requests are
made as two tenants (an API key of one, a session JWT of the other) and, on admin routes, with the
admin token; path ids are sometimes swapped for ids that exist (the caller's own, or the other
tenant's), so handlers get past the 404 too. Derandomized: the same cases every run.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import httpx
import schemathesis
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import BaseRoute

from api.app import create_app
from api.openapi import openapi_document
from engine.connection import embedded
from engine.runtime import Runtime
from engine.settings import Settings

BASE = "http://testserver"
EXAMPLES = 20
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@dataclass
class Live:
    """The running app and what the cases need: credentials and ids that exist."""

    portal: BlockingPortal
    client: httpx.AsyncClient
    admin: dict[str, str]
    tenants: list[dict[str, str]]
    ids: dict[str, list[str]]  # path parameter name -> ids that exist (both tenants')
    routes: list[BaseRoute]

    def request(self, **kwargs: Any) -> httpx.Response:
        call: Callable[[], Any] = functools.partial(self.client.request, **kwargs)
        response: httpx.Response = self.portal.call(call)
        return response


async def _post(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], headers: dict[str, str]
) -> dict[str, Any]:
    response = await client.post(path, json=body, headers=headers)
    assert response.status_code in (201, 202), (path, response.text)
    data: dict[str, Any] = response.json()
    return data


async def _seed(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> tuple[list[dict[str, str]], dict[str, list[str]]]:
    """Two funded tenants, each with an item, a transcript execution, a collection, a reporter."""
    tenants: list[dict[str, str]] = []
    ids: dict[str, list[str]] = {}
    for n, via in enumerate(("api_key", "session_token")):
        made = await _post(client, "/admin/accounts", {"name": f"t{n}", "coins": 100}, admin)
        auth = {"Authorization": f"Bearer {made[via]}"}
        tenants.append(auth)
        ids.setdefault("account_id", []).append(made["account"]["account_id"])
        item = await _post(client, "/v1/items", {"source": f"https://youtu.be/abcdefghij{n}"}, auth)
        ids.setdefault("item_id", []).append(item["item"]["item_id"])
        run = await _post(
            client, f"/v1/items/{item['item']['item_id']}/transcript", {"text": "hi"}, auth
        )
        ids.setdefault("execution_id", []).append(run["execution"]["execution_id"])
        # Routes that may not exist in every build: seeded when they answer.
        for path, key in (("/v1/collections", "collection"), ("/v1/reporters", "reporter")):
            response = await client.post(path, json={"name": f"{key} {n}"}, headers=auth)
            if response.status_code == 201:
                ids.setdefault(f"{key}_id", []).append(response.json()[key][f"{key}_id"])
    return tenants, ids


@contextmanager
def live_app(test_settings: Settings) -> Iterator[Live]:
    """The app over a fakeredis runtime on a portal's event loop, seeded."""
    with start_blocking_portal(backend="asyncio") as portal:
        runtime = portal.call(Runtime.open, test_settings, embedded())
        app = create_app(runtime)
        transport = httpx.ASGITransport(app=app)
        client = httpx.AsyncClient(transport=transport, base_url=BASE)
        try:
            admin = {"Authorization": f"Bearer {runtime.generated_admin_token}"}
            tenants, ids = portal.call(_seed, client, admin)
            yield Live(portal, client, admin, tenants, ids, app.routes)
        finally:
            portal.call(client.aclose)
            portal.call(runtime.close)


def _httpx_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Schemathesis's (requests-style) transport kwargs as httpx takes them."""
    kwargs = dict(kwargs)
    kwargs.pop("cookies", None)  # httpx deprecates per-request cookies; the API uses none
    return kwargs


def test_generated_requests_get_no_5xx_and_match_the_document(settings: Settings) -> None:
    with live_app(replace(settings, max_body_bytes=64 * 1024)) as live:
        schema = schemathesis.openapi.from_dict(openapi_document(live.routes))
        operations = list(schema.get_all_operations())
        assert not [r.err() for r in operations if isinstance(r, Err)]
        for result in operations:
            assert not isinstance(result, Err)
            if _streams(result.ok()):
                continue  # a body that never ends: the live run reads it (max-stream-events)
            _exercise(live, result.ok())


def _streams(operation: Any) -> bool:
    """Whether the operation answers a stream (``text/event-stream``): an in-process client
    reads a whole body, so it would wait forever (tests/api/test_schemathesis_live.py reads it)."""
    if operation.path == "/v1/executions/stream":
        return True
    responses = operation.definition.raw.get("responses", {})
    return any("text/event-stream" in (r.get("content") or {}) for r in responses.values())


def _exercise(live: Live, operation: Any) -> None:
    security = operation.definition.raw.get("security") or []
    names = {name for option in security for name in option}
    if "adminToken" in names:
        credentials: list[dict[str, str]] = [live.admin]
    elif names:
        credentials = live.tenants
    else:
        credentials = [{}]

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        case=operation.as_strategy(),
        who=st.sampled_from(range(len(credentials))),
        real=st.booleans(),
        pick=st.integers(min_value=0, max_value=7),
    )
    def run(case: Any, who: int, real: bool, pick: int) -> None:
        if real:  # an id that exists, so the handler gets past the lookup
            for name in list(case.path_parameters or {}):
                known = live.ids.get(name)
                if known:
                    case.path_parameters[name] = known[pick % len(known)]
        headers = credentials[who]
        kwargs = _httpx_kwargs(case.as_transport_kwargs(base_url=BASE, headers=headers))
        response = live.request(**kwargs)
        case.validate_response(response, checks=CHECKS, headers=headers)

    run()
