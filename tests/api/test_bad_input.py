"""Bad input at the edge: malformed JSON, wrong types, unknown fields, huge bodies, bad ids, and
the error shape and request id every answer carries."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from api.parse import nesting_depth
from tests.api.conftest import BODY_LIMIT, ApiAccount

pytestmark = pytest.mark.anyio


def _error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "erro"}
    assert body["error"]["code"] == code
    assert body["erro"] == body["error"]["message"]
    assert body["error"]["request_id"] == response.headers["x-request-id"]
    message: str = body["error"]["message"]
    return message


def _json(who: ApiAccount) -> dict[str, str]:
    return {**who.key_auth, "Content-Type": "application/json"}


@pytest.mark.parametrize("raw", [b"{", b"not json", b'{"source": "x",}', b""])
async def test_malformed_json_is_400(
    client: httpx.AsyncClient, alice: ApiAccount, raw: bytes
) -> None:
    response = await client.post("/v1/items", content=raw, headers=_json(alice))
    _error(response, 400, "invalid_request")


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"source": 42}, "$.source"),
        ({}, "source"),
        ({"source": "https://x.com/jack", "colour": "red"}, "colour"),
        ([1, 2], "object"),
    ],
)
async def test_schema_violations_are_422_naming_the_field(
    client: httpx.AsyncClient, alice: ApiAccount, body: object, named: str
) -> None:
    response = await client.post("/v1/items", json=body, headers=alice.key_auth)
    assert named in _error(response, 422, "invalid_request")


async def test_unknown_field_in_a_transcript_request_is_422(
    client: httpx.AsyncClient, alice: ApiAccount
) -> None:
    item = await client.post(
        "/v1/items", json={"source": "https://youtu.be/dQw4w9WgXcQ"}, headers=alice.key_auth
    )
    url = f"/v1/items/{item.json()['item']['item_id']}/transcript"
    response = await client.post(url, json={"language": "en"}, headers=alice.key_auth)
    assert "language" in _error(response, 422, "invalid_request")
    response = await client.post(url, json={"embed": "yes"}, headers=alice.key_auth)
    assert "$.embed" in _error(response, 422, "invalid_request")


async def test_admin_bodies_are_validated(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    for body, named in (
        ({"name": "x", "coins": -1}, "coins"),
        ({"name": "x", "coins": "10"}, "coins"),
        ({"name": "", "coins": 1}, "name"),
        ({"name": "x", "coins": 0.0000001}, "coins"),
        ({"name": "x", "coins": 1, "admin": True}, "admin"),
    ):
        response = await client.post("/admin/accounts", json=body, headers=admin)
        assert named in _error(response, 422, "invalid_request")


async def test_huge_body_with_content_length_is_413(
    client: httpx.AsyncClient, alice: ApiAccount
) -> None:
    big = b'{"source": "' + b"a" * BODY_LIMIT + b'"}'
    response = await client.post("/v1/items", content=big, headers=_json(alice))
    _error(response, 413, "payload_too_large")


async def test_huge_streamed_body_without_content_length_is_413(
    client: httpx.AsyncClient, alice: ApiAccount
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"source": "'
        for _ in range(8):
            yield b"a" * (BODY_LIMIT // 4)
        yield b'"}'

    request = client.build_request("POST", "/v1/items", content=chunks(), headers=_json(alice))
    assert "content-length" not in request.headers
    response = await client.send(request)
    _error(response, 413, "payload_too_large")


async def test_a_body_under_the_limit_is_accepted(
    client: httpx.AsyncClient, alice: ApiAccount
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"source": '
        yield b'"https://x.com/jack"}'

    request = client.build_request("POST", "/v1/items", content=chunks(), headers=_json(alice))
    assert (await client.send(request)).status_code == 201


@pytest.mark.parametrize(
    "path",
    [
        "/v1/items/nope",
        "/v1/items/itm_TOOSHORT",
        "/v1/items/itm_0000000000aaaaaaaaaa",  # well-formed, never created
        "/v1/items/exc_p0_0000000000aaaaaaaaaa",
        "/v1/items/..%2F..%2Fmeta",
        "/v1/executions/nope",
        "/v1/executions/itm_0000000000aaaaaaaaaa",
        "/v1/executions/exc_p0_0000000000aaaaaaaaaa",
        "/v1/executions/exc_p99999_0000000000aaaaaaaaaa/events",
        "/v1/items/nope/transcript",
        "/v1/no-such-route",
    ],
)
async def test_bad_ids_are_404(client: httpx.AsyncClient, alice: ApiAccount, path: str) -> None:
    _error(await client.get(path, headers=alice.key_auth), 404, "not_found")


async def test_bad_ids_in_posts_are_404(client: httpx.AsyncClient, alice: ApiAccount) -> None:
    for path in ("/v1/items/nope/transcript", "/v1/executions/nope/cancel"):
        _error(await client.post(path, json={}, headers=alice.key_auth), 404, "not_found")


async def test_request_id_is_echoed_when_well_formed(
    client: httpx.AsyncClient, alice: ApiAccount
) -> None:
    mine = await client.get("/v1/me", headers={**alice.key_auth, "X-Request-ID": "trace-123"})
    assert mine.headers["x-request-id"] == "trace-123"
    evil = await client.get("/v1/me", headers={**alice.key_auth, "X-Request-ID": "a b\tc" * 50})
    assert evil.headers["x-request-id"].startswith("req_")
    missing = await client.get("/v1/nothing-here", headers={"X-Request-ID": "trace-404"})
    assert missing.headers["x-request-id"] == "trace-404"
    assert missing.json()["error"]["request_id"] == "trace-404"


async def test_wrong_method_is_405_in_the_error_shape(client: httpx.AsyncClient) -> None:
    _error(await client.put("/v1/items"), 405, "method_not_allowed")


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}
    assert ready.headers["x-request-id"].startswith("req_")


async def test_an_unexpected_failure_is_500_without_internals(
    client: httpx.AsyncClient, alice: ApiAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.resources import items

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(items, "create_item", broken)
    response = await client.post(
        "/v1/items", json={"source": "https://x.com/jack"}, headers=alice.key_auth
    )
    assert "secret internal detail" not in _error(response, 500, "internal")
    assert "secret" not in response.text


DEEP = 10_000


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * DEEP + b"]" * DEEP,
        b"{" * DEEP,  # unbalanced too
        b'{"source": ' + b"[" * DEEP + b"]" * DEEP + b"}",
        b'{"source": "x", "a": ' + b'{"b":' * DEEP + b"1" + b"}" * DEEP + b"}",  # under 64 KiB
    ],
)
async def test_deeply_nested_json_is_400(
    client: httpx.AsyncClient, alice: ApiAccount, raw: bytes
) -> None:
    response = await client.post("/v1/items", content=raw, headers=_json(alice))
    _error(response, 400, "invalid_request")


async def test_deeply_nested_free_form_params_are_400(
    client: httpx.AsyncClient, alice: ApiAccount
) -> None:
    """``params`` takes any JSON, so nothing but the depth limit stands between it and msgspec's
    recursion (and orjson's encoding limit on the way out)."""
    reporter = await client.post("/v1/reporters", json={"name": "r"}, headers=alice.key_auth)
    assert reporter.status_code == 201, reporter.text
    reporter_id = reporter.json()["reporter"]["reporter_id"]
    deep = b'{"tool_id": "summarize", "params": {"a": ' + b"[" * DEEP + b"]" * DEEP + b"}}"
    response = await client.post(
        f"/v1/reporters/{reporter_id}/workflows",
        content=b'{"name": "w", "target_kind": "youtube_video", "steps": [' + deep + b"]}",
        headers=_json(alice),
    )
    _error(response, 400, "invalid_request")


def test_nesting_depth_skips_brackets_inside_strings() -> None:
    assert nesting_depth(b'{"a": "[[[[[[[[", "b": [1, [2]]}', 10) == 3
    assert nesting_depth(b'{"a": "\\"[[[[", "b": {}}', 10) == 2
    assert nesting_depth(b"[" * 50, 5) == 6  # stops counting past the limit


async def test_credit_with_a_large_balance_is_not_a_500(
    client: httpx.AsyncClient, admin: dict[str, str], alice: ApiAccount
) -> None:
    """A balance of 1e14 micro-coins or more comes back from the credit script as Lua's
    ``tostring`` of a double (``1e+14``); ``int()`` of it failed with a 500."""
    url = f"/admin/accounts/{alice.account_id}/credit"
    response = await client.post(url, json={"coins": 1e8, "credit_id": "big"}, headers=admin)
    assert response.status_code == 200, response.text
    assert response.json()["account"]["balance_coins"] == 1e8 + 1


@pytest.mark.parametrize(
    "given",
    [
        "x" * 65,  # long
        "trace:with:colons",
        "-leading-dash",
        "<script>alert(1)</script>",
        "ok\u00e9",
        "line\r\nInjected: yes",
    ],
)
async def test_a_request_id_that_is_not_short_and_plain_is_replaced(
    client: httpx.AsyncClient, given: str
) -> None:
    try:
        answer = await client.get("/healthz", headers={"X-Request-ID": given})
    except (UnicodeEncodeError, httpx.LocalProtocolError):
        return  # the client itself refuses to send it: it never reaches a log either
    assert answer.headers["x-request-id"].startswith("req_")
    assert given not in answer.text
    plain = "A1.b_c-" + "9" * 57  # 64: the longest kept
    assert (await client.get("/healthz", headers={"X-Request-ID": plain})).headers[
        "x-request-id"
    ] == plain


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", b'{"source": "https://youtu.be/dQw4w9WgXcQ"}'),
        ("application/x-www-form-urlencoded", b"source=https%3A%2F%2Fyoutu.be%2FdQw4w9WgXcQ"),
        ("multipart/form-data; boundary=x", b"--x\r\n\r\n--x--"),
        (None, b'{"source": "https://youtu.be/dQw4w9WgXcQ"}'),
    ],
)
async def test_a_body_that_is_not_json_is_415_and_creates_nothing(
    client: httpx.AsyncClient, alice: ApiAccount, content_type: str | None, body: bytes
) -> None:
    headers = dict(alice.key_auth)
    if content_type is not None:
        headers["Content-Type"] = content_type
    _error(
        await client.post("/v1/items", content=body, headers=headers),
        415,
        "unsupported_media_type",
    )
    assert (await client.get("/v1/items", headers=alice.key_auth)).json()["items"] == []
    if body.startswith(b"{"):  # the same bytes declared as JSON are accepted
        for json_type in ("application/json", "application/json; charset=utf-8"):
            headers["Content-Type"] = json_type
            created = await client.post("/v1/items", content=body, headers=headers)
            assert created.status_code == 201, created.text


async def test_a_post_without_a_body_needs_no_content_type(
    client: httpx.AsyncClient, alice: ApiAccount
) -> None:
    # An execution id that does not exist: the route is reached (404), not refused at the edge.
    missing = await client.post(
        "/v1/executions/exc_p1_0000000000000000000a/cancel", headers=alice.key_auth
    )
    assert missing.status_code == 404, missing.text
