"""``GET /v1/me``: the caller's account. Free, and it always answers, even at a zero balance: it
is how a client learns it must top up."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from api.auth import Caller, account_route, runtime_of, unauthorized
from api.openapi import doc
from api.schemas import AccountResponse, account_body, respond
from engine.accounts import get_account
from engine.errors import NotFound


@doc(summary="The caller's account and balance", response=AccountResponse, tags=["account"])
@account_route("free")
async def me(request: Request, caller: Caller) -> Response:
    """``GET /v1/me`` → ``{"account": {account_id, name, balance_coins}}``."""
    try:
        account = await get_account(runtime_of(request), caller.account_id)
    except NotFound:
        raise unauthorized() from None  # a valid token for an account that does not exist
    return respond({"account": account_body(account)})


ROUTES: list[BaseRoute] = [Route("/v1/me", me, methods=["GET"])]
