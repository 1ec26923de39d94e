"""Admin token, API keys and session JWTs: who gets in, and that every refusal looks the same."""

from __future__ import annotations

import time
import warnings

import httpx
import jwt
import pytest
from jwt.warnings import InsecureKeyLengthWarning

from api.auth import UNAUTHORIZED, mint_session_token
from engine.money import accounts
from engine.runtime import Runtime
from tests.api.conftest import ApiAccount, new_account

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


def _assert_401(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["error"]["code"] == "unauthorized"
    assert body["error"]["message"] == UNAUTHORIZED  # the same whatever the reason
    assert body["erro"] == UNAUTHORIZED
    assert body["error"]["request_id"] == response.headers["x-request-id"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-admin-token"},
        {"Authorization": "Basic YWRtaW46YWRtaW4="},
        {"Authorization": "Bearer "},
    ],
)
async def test_admin_routes_need_the_admin_token(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    _assert_401(
        await client.post("/admin/accounts", json={"name": "x", "coins": 1}, headers=headers)
    )


async def test_an_account_key_is_not_an_admin_token(
    client: httpx.AsyncClient, alice: ApiAccount
) -> None:
    _assert_401(
        await client.post("/admin/accounts", json={"name": "x", "coins": 1}, headers=alice.key_auth)
    )


async def test_create_account_returns_key_and_token_that_both_work(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    created = await client.post(
        "/admin/accounts", json={"name": "acme", "coins": 2.5}, headers=admin
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["account"]["name"] == "acme"
    assert body["account"]["balance_coins"] == 2.5
    assert body["api_key"].startswith("ck_live_")
    assert len(body["api_key"]) >= 8 + 32
    for token in (body["api_key"], body["session_token"]):
        me = await client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200, me.text
        assert me.json() == {"account": body["account"]}


async def test_api_keys_are_stored_only_as_hashes(
    client: httpx.AsyncClient, runtime: Runtime, alice: ApiAccount
) -> None:
    secret = alice.api_key.encode()
    seen = b""
    async for key in runtime.redis.scan_iter(match="*"):
        kind = (await runtime.redis.type(key)).decode()
        if kind == "string":
            seen += await runtime.redis.get(key)
        elif kind == "hash":
            seen += b"".join(k + v for k, v in (await runtime.redis.hgetall(key)).items())
        elif kind == "zset":
            seen += b"".join(await runtime.redis.zrange(key, 0, -1))
        elif kind == "stream":
            rows = await runtime.redis.xrange(key)
            seen += b"".join(k + v for _, fields in rows for k, v in fields.items())
        seen += key
    assert accounts.key_hash(alice.api_key).encode() in seen  # the scan does see the hash
    assert secret not in seen


@pytest.mark.parametrize(
    "mutate",
    [
        "ck_live_" + "A" * 43,  # well-formed, never issued
        "ck_live_short",
        "not-a-jwt",
        "a.b.c",
    ],
)
async def test_unknown_credentials_are_refused(client: httpx.AsyncClient, mutate: str) -> None:
    _assert_401(await client.get("/v1/me", headers={"Authorization": f"Bearer {mutate}"}))


async def test_forged_expired_and_unsigned_jwts_are_refused(
    client: httpx.AsyncClient, runtime: Runtime, alice: ApiAccount
) -> None:
    secret = runtime.jwt_keys.current.secret
    now = int(time.time())
    bad = [
        jwt.encode(_claims(alice.account_id), "another-secret-of-32-characters!", "HS256"),
        jwt.encode(_claims(alice.account_id, exp=now - 3600, iat=now - 7200), secret, "HS256"),
        jwt.encode(_claims(alice.account_id, aud="someone-else"), secret, "HS256"),
        jwt.encode(_claims(alice.account_id, iss="someone-else"), secret, "HS256"),
        jwt.encode(_claims(alice.account_id, exp=None), secret, "HS256"),
        jwt.encode(_claims(alice.account_id, sub=None), secret, "HS256"),
        jwt.encode(_claims("not-an-account"), secret, "HS256"),
        jwt.encode(_claims(alice.account_id), "", "none"),
    ]
    with warnings.catch_warnings():  # PyJWT warns that the secret is short for HS512: intended
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        bad.append(jwt.encode(_claims(alice.account_id), secret, "HS512"))
    for token in bad:
        _assert_401(await client.get("/v1/me", headers={"Authorization": f"Bearer {token}"}))
    good = mint_session_token(runtime, alice.account_id, ttl_s=60)
    assert (
        await client.get("/v1/me", headers={"Authorization": f"Bearer {good}"})
    ).status_code == 200


async def test_a_revoked_key_stops_working_and_others_keep_working(
    client: httpx.AsyncClient, admin: dict[str, str], alice: ApiAccount
) -> None:
    issued = await client.post(f"/admin/accounts/{alice.account_id}/keys", headers=admin)
    assert issued.status_code == 201, issued.text
    second = {"Authorization": f"Bearer {issued.json()['api_key']}"}
    assert (await client.get("/v1/me", headers=second)).status_code == 200

    revoked = await client.delete(f"/admin/keys/{issued.json()['key_hash']}", headers=admin)
    assert revoked.status_code == 204
    _assert_401(await client.get("/v1/me", headers=second))
    assert (await client.get("/v1/me", headers=alice.key_auth)).status_code == 200
    again = await client.delete(f"/admin/keys/{issued.json()['key_hash']}", headers=admin)
    assert again.status_code == 404


async def test_admin_mints_tokens_and_credits_once_per_credit_id(
    client: httpx.AsyncClient, admin: dict[str, str], alice: ApiAccount
) -> None:
    minted = await client.post(
        f"/admin/accounts/{alice.account_id}/tokens", json={"ttl_s": 120}, headers=admin
    )
    assert minted.status_code == 201, minted.text
    token_auth = {"Authorization": f"Bearer {minted.json()['session_token']}"}
    assert (await client.get("/v1/me", headers=token_auth)).status_code == 200

    url = f"/admin/accounts/{alice.account_id}/credit"
    body = {"coins": 0.5, "credit_id": "invoice-42"}
    first = await client.post(url, json=body, headers=admin)
    again = await client.post(url, json=body, headers=admin)
    assert first.status_code == again.status_code == 200
    assert again.json()["account"]["balance_coins"] == 1.5
    other = await client.post(url, json={"coins": 9, "credit_id": "invoice-42"}, headers=admin)
    assert other.status_code == 409
    me = await client.get("/v1/me", headers=alice.key_auth)
    assert me.json()["account"]["balance_coins"] == 1.5


async def test_admin_routes_on_unknown_accounts_are_404(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    ghost = "acc_0000000000aaaaaaaaaa"
    for path in (f"/admin/accounts/{ghost}/keys", f"/admin/accounts/{ghost}/tokens"):
        assert (await client.post(path, headers=admin)).status_code == 404
    credit = await client.post(
        f"/admin/accounts/{ghost}/credit", json={"coins": 1, "credit_id": "c1"}, headers=admin
    )
    assert credit.status_code == 404
    assert (await client.post("/admin/accounts/nope/keys", headers=admin)).status_code == 404


async def test_accounts_are_independent(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    a = await new_account(client, admin, coins=1)
    b = await new_account(client, admin, coins=3)
    me_a = (await client.get("/v1/me", headers=a.jwt_auth)).json()["account"]
    me_b = (await client.get("/v1/me", headers=b.jwt_auth)).json()["account"]
    assert (me_a["account_id"], me_a["balance_coins"]) == (a.account_id, 1)
    assert (me_b["account_id"], me_b["balance_coins"]) == (b.account_id, 3)
