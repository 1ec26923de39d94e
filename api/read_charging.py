"""Read fees at the HTTP edge (DESIGN §6): which requests pay, and when.

A read is an authenticated ``GET`` of the account API: every route declared
``account_route("read")`` or ``account_route("own")``, the SSE stream ``GET /v1/executions/stream``
included. ``GET /v1/me`` is ``free``; writes pay their own fees (async routes) or nothing
(synchronous resources); the realtime WebSocket is not an HTTP read and is not charged.

- Before the handler, :func:`admit_read` admits the caller and takes the fee, pending, under a
  charge id unique to this request (engine.money.read_fees): 402 when the balance does not cover
  it — except for an ``own`` read (``/v1/me/ledger``, the owner's execution and its events,
  DESIGN §6), which is then served free.
- :class:`ChargeReads`, a middleware, settles it once the answer has gone out: after the last
  byte of an ordinary response, or when a stream ends (a stream is one read, however long it
  lasts). A 2xx/3xx answer keeps the fee; an error answer (4xx, 5xx) or a request that failed
  before answering gets it back. Settling never delays or fails the answer: a Redis failure queues
  it for a retry, and the sweep of engine.money.read_fees settles what a crashed process left.
"""

from __future__ import annotations

import anyio
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import REQUEST_ID_HEADER, request_id_of
from engine.log.ids import new_id
from engine.money.read_fees import ReadCharge, ReadFees

_STATE_KEY = "read_charge"
# Longest a settlement may hold a finished request; past it the sweep settles the charge.
SETTLE_TIMEOUT_S = 5.0


def read_fees_of(request: Request) -> ReadFees:
    """The app's :class:`ReadFees`."""
    fees: ReadFees = request.app.state.read_fees
    return fees


def charge_id(request: Request) -> str:
    """``read:{request id}``, unique per request: a client may name its requests (X-Request-ID)
    and name them all alike, so only an id the edge drew itself is reused."""
    request_id = request_id_of(request)
    if request.headers.get(REQUEST_ID_HEADER) == request_id:
        request_id = new_id("req")
    return f"read:{request_id}"


async def admit_read(request: Request, account_id: str, *, lenient: bool = False) -> None:
    """Admit this read for ``account_id`` (InsufficientBalance: 402, unless ``lenient``) and leave
    its pending charge for :class:`ChargeReads` to settle."""
    charge = await read_fees_of(request).admit(account_id, charge_id(request), lenient=lenient)
    if charge is not None:
        request.scope.setdefault("state", {})[_STATE_KEY] = charge


class ChargeReads:
    """ASGI middleware: settles the read charge admitted for a request once it has been answered
    (see the module docstring)."""

    def __init__(self, app: ASGIApp, fees: ReadFees) -> None:
        self.app = app
        self.fees = fees

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            charge: ReadCharge | None = scope.get("state", {}).pop(_STATE_KEY, None)
            if charge is not None:
                # Shielded: a client that hung up still owes a read it was sent.
                with anyio.move_on_after(SETTLE_TIMEOUT_S, shield=True):
                    await self.fees.settle(charge, served=200 <= status < 400)
