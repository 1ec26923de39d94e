"""Operator routes under ``/admin``, guarded by the admin token: accounts, credits, keys, tokens,
sessions; and what the operator console (``api.console``) reads and does: the overview, dead
letters and their retry (engine.run.revive), any execution with its events."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from api import render, render_operators, sessions
from api.auth import admin_route, mint_session_token, runtime_of, session_ttl
from api.openapi import doc
from api.parse import decode_body, micro, path_id
from api.render import respond
from api.schemas.operators import (
    AdminExecution,
    DeadLetterList,
    OverviewResponse,
    RetryDeadLetter,
    RetryResponse,
)
from api.schemas.requests import CreateAccount, Credit, MintToken
from api.schemas.resources import (
    AccountResponse,
    AdminAccountResponse,
    CreatedAccount,
    IssuedKey,
    MintedToken,
)
from engine.archive import reader
from engine.errors import NotFound
from engine.money import accounts
from engine.run import revive
from projections.activity import Activity
from projections.fold import fold
from projections.overview import read_overview


@doc(
    summary="Create an account with coins",
    request=CreateAccount,
    response=CreatedAccount,
    status=201,
    tags=["admin"],
)
@admin_route
async def create_account(request: Request) -> Response:
    """``POST /admin/accounts {name, coins}`` → 201 account, first API key, session token."""
    runtime = runtime_of(request)
    body = await decode_body(request, CreateAccount)
    account, api_key = await accounts.create_account(
        runtime, name=body.name, coins_micro=micro(body.coins)
    )
    token = mint_session_token(runtime, account.account_id)
    created = CreatedAccount(account=render.account(account), api_key=api_key, session_token=token)
    return respond(created, 201)


@doc(
    summary="Credit coins (idempotent by credit_id)",
    request=Credit,
    response=AccountResponse,
    errors=[409],
    tags=["admin"],
)
@admin_route
async def credit(request: Request) -> Response:
    """``POST /admin/accounts/{account_id}/credit {coins, credit_id}`` → the new balance."""
    runtime = runtime_of(request)
    account_id = path_id(request, "account_id", "acc")
    body = await decode_body(request, Credit)
    await accounts.credit(runtime, account_id, micro(body.coins), credit_id=body.credit_id)
    account = await accounts.get_account(runtime, account_id)
    return respond(AccountResponse(account=render.account(account)))


@doc(summary="Issue an API key", response=IssuedKey, status=201, tags=["admin"])
@admin_route
async def issue_key(request: Request) -> Response:
    """``POST /admin/accounts/{account_id}/keys`` → 201 a new API key and its hash (to revoke)."""
    runtime = runtime_of(request)
    account_id = path_id(request, "account_id", "acc")
    api_key = await accounts.issue_api_key(runtime, account_id)
    key_hash = accounts.key_hash(api_key)
    return respond(IssuedKey(account_id=account_id, api_key=api_key, key_hash=key_hash), 201)


@doc(summary="Revoke an API key", status=204, tags=["admin"])
@admin_route
async def revoke_key(request: Request) -> Response:
    """``DELETE /admin/keys/{key_hash}`` → 204; the key's sha256 (or the key itself)."""
    await accounts.revoke_api_key(runtime_of(request), str(request.path_params["key"]))
    return Response(status_code=204)


@doc(
    summary="Mint a session JWT",
    request=MintToken,
    body_required=False,
    response=MintedToken,
    status=201,
    tags=["admin"],
)
@admin_route
async def mint_token(request: Request) -> Response:
    """``POST /admin/accounts/{account_id}/tokens {ttl_s?}`` → 201 a session JWT."""
    runtime = runtime_of(request)
    account_id = path_id(request, "account_id", "acc")
    body = await decode_body(request, MintToken, optional=True)
    await accounts.get_account(runtime, account_id)  # no tokens for accounts that do not exist
    ttl_s = session_ttl(runtime, body.ttl_s)
    token = mint_session_token(runtime, account_id, ttl_s=ttl_s)
    return respond(MintedToken(account_id=account_id, session_token=token, ttl_s=ttl_s), 201)


@doc(
    summary="Revoke every session of an account",
    description=(
        "Every session token of the account issued until now stops working at once: REST "
        "answers 401, and its live WebSocket and SSE streams are closed with 4401 by every API "
        "process. Tokens minted afterwards work. API keys are not affected."
    ),
    status=204,
    errors=[404],
    tags=["admin"],
)
@admin_route
async def revoke_sessions(request: Request) -> Response:
    """``DELETE /admin/accounts/{account_id}/sessions`` → 204."""
    account_id = path_id(request, "account_id", "acc")
    await sessions.revoke_sessions(runtime_of(request), account_id)
    return Response(status_code=204)


@doc(summary="An account with its exact balance", response=AdminAccountResponse, tags=["admin"])
@admin_route
async def get_account(request: Request) -> Response:
    """``GET /admin/accounts/{account_id}`` → the account with its balance."""
    runtime = runtime_of(request)
    account = await accounts.get_account(runtime, path_id(request, "account_id", "acc"))
    return respond(AdminAccountResponse(account=render.admin_account(account)))


@doc(
    summary="The system at a glance (the operator console's poll)",
    response=OverviewResponse,
    tags=["admin"],
)
@admin_route
async def overview(request: Request) -> Response:
    """``GET /admin/overview`` → every partition's log, queues (and the oldest queued execution's
    age), leases, dead letters, projection checkpoint and lag, lease holders and schedules; the
    workers with the leases they hold; projectors and archivers with their partitions; and the
    executions accepted, done and in error per 10 s over the last 10 minutes (counted from the
    partition logs by this API process)."""
    runtime = runtime_of(request)
    state = request.app.state
    activity: Activity | None = getattr(state, "activity", None)
    if activity is None:
        activity = state.activity = Activity()
    await activity.refresh(runtime.store)
    found = await read_overview(runtime)
    archive = runtime.archive.url if runtime.archive is not None else None
    body = render_operators.overview(found, activity.points(found.at), activity.current_to, archive)
    return respond(body)


@doc(summary="Every dead letter", response=DeadLetterList, tags=["admin"])
@admin_route
async def list_dead_letters(request: Request) -> Response:
    """``GET /admin/dead-letters`` → every partition's dead letters, oldest first; those whose
    ``execution_id`` is set can be retried."""
    return respond(
        render_operators.dead_letters(await revive.dead_letters(runtime_of(request).store))
    )


@doc(
    summary="Retry a dead-lettered execution",
    request=RetryDeadLetter,
    body_required=False,
    response=RetryResponse,
    status=202,
    errors=[404, 409],
    tags=["admin"],
)
@admin_route
async def retry_dead_letter(request: Request) -> Response:
    """``POST /admin/dead-letters/{execution_id}/retry {operator?}`` → 202: the execution is
    queued again and resumes from its first step without a StepCompleted; an
    ``ExecutionRetried`` records ``admin:<operator>``. 409 when it is not dead-lettered (or was
    retried just now: of concurrent retries one wins), 404 when there is no such execution."""
    execution_id = path_id(request, "execution_id", "exc")
    body = await decode_body(request, RetryDeadLetter, optional=True)
    runtime = runtime_of(request)
    by = f"admin:{body.operator}"
    done = await revive.retry(runtime.store, execution_id, by, runtime.archive)
    return respond(render_operators.retried(done), 202)


@doc(summary="Any execution with its events", response=AdminExecution, errors=[404], tags=["admin"])
@admin_route
async def get_execution(request: Request) -> Response:
    """``GET /admin/executions/{execution_id}`` → whoever owns it: its detail folded from its
    events and the events themselves (Redis, then the archive)."""
    runtime = runtime_of(request)
    execution_id = path_id(request, "execution_id", "exc")
    history = await reader.execution_history(runtime.store, runtime.archive, execution_id)
    if not history:
        raise NotFound("no such execution")
    return respond(render_operators.admin_execution(fold(history), history))


ROUTES: list[BaseRoute] = [
    Route("/admin/accounts", create_account, methods=["POST"]),
    Route("/admin/accounts/{account_id}", get_account, methods=["GET"]),
    Route("/admin/accounts/{account_id}/credit", credit, methods=["POST"]),
    Route("/admin/accounts/{account_id}/keys", issue_key, methods=["POST"]),
    Route("/admin/accounts/{account_id}/tokens", mint_token, methods=["POST"]),
    Route("/admin/accounts/{account_id}/sessions", revoke_sessions, methods=["DELETE"]),
    Route("/admin/keys/{key}", revoke_key, methods=["DELETE"]),
    Route("/admin/overview", overview, methods=["GET"]),
    Route("/admin/dead-letters", list_dead_letters, methods=["GET"]),
    Route("/admin/dead-letters/{execution_id}/retry", retry_dead_letter, methods=["POST"]),
    Route("/admin/executions/{execution_id}", get_execution, methods=["GET"]),
]
