"""The caller's account: ``GET /v1/me`` (free, and it always answers, even at a zero balance: it is
how a client learns it must top up) and ``GET /v1/me/ledger`` (a read like any other)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from api import render
from api.auth import Caller, account_route, runtime_of, unauthorized
from api.openapi import doc
from api.parse import page_params
from api.render import respond
from api.schemas.requests import LedgerPageQuery
from api.schemas.resources import AccountResponse, LedgerPage
from engine.errors import NotFound
from engine.money import accounts


@doc(summary="The caller's account and balance", response=AccountResponse, tags=["account"])
@account_route("free")
async def me(request: Request, caller: Caller) -> Response:
    """``GET /v1/me`` → ``{"account": {account_id, name, balance_coins}}``."""
    try:
        account = await accounts.get_account(runtime_of(request), caller.account_id)
    except NotFound:
        raise unauthorized() from None  # a valid token for an account that does not exist
    return respond(AccountResponse(account=render.account(account)))


@doc(
    summary="The caller's ledger: every credit and charge, newest first",
    response=LedgerPage,
    query=LedgerPageQuery,
    tags=["account"],
)
@account_route("own")
async def ledger(request: Request, caller: Caller) -> Response:
    """``GET /v1/me/ledger?limit=&cursor=`` → ``{"entries": [...], "next_cursor": ...}``.

    Each entry: ``charge_id``, ``kind``, ``amount_coins`` (signed), ``balance_coins`` (after it),
    ``execution_id`` (or null) and ``at``. A read itself: it is charged like any other, and the
    charge appears on top of the next page read."""
    limit, cursor = page_params(request)
    entries, next_cursor = await accounts.ledger(
        runtime_of(request), caller.account_id, limit=limit, cursor=cursor
    )
    rendered = [render.ledger_entry(e) for e in entries]
    return respond(LedgerPage(entries=rendered, next_cursor=next_cursor))


ROUTES: list[BaseRoute] = [
    Route("/v1/me", me, methods=["GET"]),
    Route("/v1/me/ledger", ledger, methods=["GET"]),
]
