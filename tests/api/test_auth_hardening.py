"""Auth hardening (issue 3): what test_auth does not already pin down.

Session JWTs: a changed payload under the old signature, a missing ``iat``, an algorithm
confusion (RS256 header over the HMAC secret), the leeway on both sides of ``exp``; API keys: the
format, revocation by the key itself, a key of a revoked account's sibling; the same 401 body for
every refusal; server-owned fields (``owner``, ids, ``balance``) never taken from a body.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import httpx
import jwt
import orjson
import pytest

from api.auth import LEEWAY_S, UNAUTHORIZED
from engine.money.accounts import API_KEY_PREFIX
from engine.runtime import Runtime
from tests.api.conftest import ApiAccount

pytestmark = pytest.mark.anyio


def _claims(account_id: str, **over: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": account_id,
        "iat": now,
        "exp": now + 600,
        "aud": "clipstream",
        "iss": "clipstream",
    }
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _refusal(response: httpx.Response) -> dict[str, object]:
    """The 401 body without its per-request id: identical for every refusal."""
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    body = response.json()
    assert body["error"].pop("request_id") == response.headers["x-request-id"]
    assert body == {
        "error": {"code": "unauthorized", "message": UNAUTHORIZED},
        "erro": UNAUTHORIZED,
    }
    refused: dict[str, object] = body
    return refused


async def _me(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})


async def test_a_changed_payload_under_the_old_signature_is_refused(
    client: httpx.AsyncClient, runtime: Runtime, alice: ApiAccount, bob: ApiAccount
) -> None:
    token = jwt.encode(_claims(alice.account_id), runtime.jwt_keys.current.secret, "HS256")
    header, _, signature = token.split(".")
    forged_payload = _b64(orjson.dumps(_claims(bob.account_id)))
    assert (await _me(client, token)).status_code == 200
    _refusal(await _me(client, f"{header}.{forged_payload}.{signature}"))
    _refusal(await _me(client, f"{header}.{forged_payload}."))  # signature stripped


async def test_unsigned_and_confused_algorithms_are_refused(
    client: httpx.AsyncClient, runtime: Runtime, alice: ApiAccount
) -> None:
    payload = _b64(orjson.dumps(_claims(alice.account_id)))
    none_header = _b64(orjson.dumps({"alg": "none", "typ": "JWT"}))
    _refusal(await _me(client, f"{none_header}.{payload}."))
    _refusal(await _me(client, f"{none_header}.{payload}"))
    # An RS256 header signed with the HMAC secret as if it were a public key.
    rs_header = _b64(orjson.dumps({"alg": "RS256", "typ": "JWT"}))
    signing_input = f"{rs_header}.{payload}".encode()
    mac = hmac.new(runtime.jwt_keys.current.secret.encode(), signing_input, hashlib.sha256).digest()
    _refusal(await _me(client, f"{rs_header}.{payload}.{_b64(mac)}"))


@pytest.mark.parametrize("missing", ["iat", "exp", "aud", "iss", "sub"])
async def test_every_required_claim_is_required(
    client: httpx.AsyncClient, runtime: Runtime, alice: ApiAccount, missing: str
) -> None:
    token = jwt.encode(
        _claims(alice.account_id, **{missing: None}), runtime.jwt_keys.current.secret, "HS256"
    )
    _refusal(await _me(client, token))


async def test_expiry_has_a_small_leeway_and_no_more(
    client: httpx.AsyncClient, runtime: Runtime, alice: ApiAccount
) -> None:
    now = int(time.time())
    # Margins of 10 s keep the verdict independent of how long the request takes.
    within = _claims(alice.account_id, iat=now - 600, exp=now - LEEWAY_S + 10)
    beyond = _claims(alice.account_id, iat=now - 600, exp=now - LEEWAY_S - 10)
    assert (
        await _me(client, jwt.encode(within, runtime.jwt_keys.current.secret, "HS256"))
    ).status_code == 200
    _refusal(await _me(client, jwt.encode(beyond, runtime.jwt_keys.current.secret, "HS256")))


async def test_a_token_for_an_account_that_does_not_exist_is_the_same_401(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    ghost = "acc_" + "0" * 20
    _refusal(
        await _me(client, jwt.encode(_claims(ghost), runtime.jwt_keys.current.secret, "HS256"))
    )


async def test_api_key_format(client: httpx.AsyncClient, alice: ApiAccount) -> None:
    assert alice.api_key.startswith(API_KEY_PREFIX)
    assert len(alice.api_key) >= len(API_KEY_PREFIX) + 32  # enough entropy to be unguessable
    for near in (
        alice.api_key[:-1],
        alice.api_key + "x",
        alice.api_key.upper(),
        f" {alice.api_key}x ",
    ):
        _refusal(await _me(client, near))


async def test_every_refusal_has_the_same_body(
    client: httpx.AsyncClient, runtime: Runtime, alice: ApiAccount, admin: dict[str, str]
) -> None:
    expired = jwt.encode(
        _claims(alice.account_id, iat=1, exp=2), runtime.jwt_keys.current.secret, "HS256"
    )
    answers = [
        await client.get("/v1/me"),
        await client.get("/v1/me", headers={"Authorization": "Basic eDp5"}),
        await _me(client, "ck_live_" + "B" * 43),
        await _me(client, expired),
        await client.get("/v1/items", headers={"Authorization": "Bearer nope"}),
        await client.post("/admin/accounts", json={"name": "x"}, headers=alice.key_auth),
        await client.get(f"/admin/accounts/{alice.account_id}"),
    ]
    bodies = [_refusal(answer) for answer in answers]
    assert all(body == bodies[0] for body in bodies)


async def test_revoking_by_the_key_itself_works_at_once(
    client: httpx.AsyncClient, admin: dict[str, str], alice: ApiAccount
) -> None:
    assert (await _me(client, alice.api_key)).status_code == 200
    revoked = await client.delete(f"/admin/keys/{alice.api_key}", headers=admin)
    assert revoked.status_code == 204
    _refusal(await _me(client, alice.api_key))
    # The session token is another credential: it keeps working.
    assert (await client.get("/v1/me", headers=alice.jwt_auth)).status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/items", {"source": "https://youtu.be/dQw4w9WgXcQ", "owner": "acc_x"}, "owner"),
        ("/v1/items", {"source": "https://youtu.be/dQw4w9WgXcQ", "item_id": "itm_x"}, "item_id"),
        ("/v1/items", {"source": "https://youtu.be/dQw4w9WgXcQ", "created_at": 1}, "created_at"),
        ("/v1/collections", {"name": "c", "owner": "acc_x"}, "owner"),
        ("/v1/collections", {"name": "c", "collection_id": "col_x"}, "collection_id"),
        ("/v1/reporters", {"name": "r", "owner": "acc_x"}, "owner"),
    ],
)
async def test_server_owned_fields_are_never_taken_from_a_body(
    client: httpx.AsyncClient, alice: ApiAccount, path: str, body: dict[str, object], field: str
) -> None:
    response = await client.post(path, json=body, headers=alice.key_auth)
    assert response.status_code == 422, response.text
    assert field in response.json()["error"]["message"]


async def test_balance_and_status_cannot_be_set_by_clients(
    client: httpx.AsyncClient, admin: dict[str, str], alice: ApiAccount
) -> None:
    item = await client.post(
        "/v1/items", json={"source": "https://youtu.be/dQw4w9WgXcQ"}, headers=alice.key_auth
    )
    url = f"/v1/items/{item.json()['item']['item_id']}/transcript"
    for field, value in (("status", "done"), ("cost_coins", 0), ("owner", "acc_x")):
        response = await client.post(url, json={field: value}, headers=alice.key_auth)
        assert response.status_code == 422, response.text
        assert field in response.json()["error"]["message"]
    for field in ("balance", "balance_coins", "account_id"):
        response = await client.post(
            "/admin/accounts", json={"name": "x", "coins": 1, field: 9}, headers=admin
        )
        assert response.status_code == 422, response.text
    me = await client.get("/v1/me", headers=alice.key_auth)
    assert me.json()["account"]["balance_coins"] == 1.0  # nothing above charged or credited
