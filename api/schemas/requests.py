"""Request bodies and the helpers that decode requests and encode responses.

Bodies are msgspec Structs with ``forbid_unknown_fields=True``, decoded by ``msgspec.json`` in one
pass: malformed JSON is ``400 invalid_request``; a wrong type, a missing or an unknown field is
``422 invalid_request`` whose message names the field (msgspec's message carries the path, e.g.
``Expected `str`, got `int` - at `$.source```). Responses are encoded with orjson.

Path ids are checked by shape (``engine.log.ids.is_id``) before anything touches Redis: a malformed
id is simply ``404``, like a missing one.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal, TypeVar

import msgspec
import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from engine.errors import InvalidRequest, NotFound
from engine.language import LANG_PATTERN
from engine.log.events import BlobRef, Status, Target, WorkflowSnapshot
from engine.log.ids import is_id
from engine.money.accounts import Account, LedgerEntry
from engine.resources.items import Item, ItemType
from engine.settings import coins_to_micro, micro_to_coins

T = TypeVar("T")

# The header a client names a retried POST with (DESIGN §5: the same key and body within 24 h is
# the same request).
IDEMPOTENCY_HEADER = "Idempotency-Key"
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_COINS = 1e9  # engine.money.accounts.MAX_MICRO in coins: every amount up to it is exact
# Deeper request JSON is 400: far beyond any real body, well within orjson's encoding limit.
MAX_JSON_DEPTH = 32

# JSON numbers of coins (integers decode too); exact micro-coins are derived from their repr.
Coins = Annotated[float, msgspec.Meta(ge=0, le=MAX_COINS)]


class CreateAccount(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``POST /admin/accounts``."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    coins: Coins = 0


class Credit(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``POST /admin/accounts/{id}/credit``: ``credit_id`` makes a retried credit a no-op."""

    coins: Coins
    credit_id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{1,100}$")]


class MintToken(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``POST /admin/accounts/{id}/tokens`` (the body is optional)."""

    ttl_s: Annotated[int, msgspec.Meta(ge=60, le=30 * 86_400)] = 86_400


class CreateItem(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``POST /v1/items``: a URL or a handle."""

    source: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]


class TranscriptRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``POST /v1/items/{id}/transcript``; ``text`` given: it is the transcript."""

    lang: Annotated[str, msgspec.Meta(pattern=LANG_PATTERN)] | None = None
    embed: bool = False
    text: str | None = None


# -- query strings (documented as parameters; parsed by page_params, flag …) ---------------------


class PageQuery(msgspec.Struct, kw_only=True):
    """``?limit=&cursor=`` of every list."""

    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT
    cursor: str | None = None


class ExecutionListQuery(PageQuery, kw_only=True):
    """``GET /v1/executions/me?active=1``: pending and running only."""

    active: Literal["1", "0", "true", "false", "yes", "no"] = "0"


class TranscriptQuery(msgspec.Struct, kw_only=True):
    """``GET /v1/items/{item_id}/transcript?lang=``: absent, the newest in any language."""

    lang: Annotated[str, msgspec.Meta(pattern=LANG_PATTERN)] | None = None


# -- response bodies (what the handlers' dicts look like; the OpenAPI document uses them) --------


class AccountOut(msgspec.Struct, kw_only=True):
    """An account as its owner sees it."""

    account_id: str
    name: str
    balance_coins: float


class AccountResponse(msgspec.Struct, kw_only=True):
    account: AccountOut


class LedgerEntryOut(msgspec.Struct, kw_only=True):
    """One movement of the account's coins. ``amount_coins`` is signed (a credit is positive, a
    charge negative) and ``balance_coins`` is the balance right after it. ``kind``: ``credit``,
    ``fee`` (an execution's flat fee), ``read`` (a read's fee), and kinds added later, shown as
    they are. ``execution_id`` names the execution a charge belongs to, when it belongs to one."""

    charge_id: str
    kind: str
    amount_coins: float
    balance_coins: float
    execution_id: str | None
    at: str


class LedgerPage(msgspec.Struct, kw_only=True):
    """``GET /v1/me/ledger``: newest first; ``next_cursor`` pages on to older entries."""

    entries: list[LedgerEntryOut]
    next_cursor: str | None


class AdminAccountOut(AccountOut, kw_only=True):
    """An account as an operator sees it: the exact balance too."""

    balance_micro: int


class AdminAccountResponse(msgspec.Struct, kw_only=True):
    account: AdminAccountOut


class CreatedAccount(msgspec.Struct, kw_only=True):
    """``POST /admin/accounts``: the account, its first API key and a session token."""

    account: AccountOut
    api_key: str
    session_token: str


class IssuedKey(msgspec.Struct, kw_only=True):
    """A new API key (shown once) and its sha256, by which it is revoked."""

    account_id: str
    api_key: str
    key_hash: str


class MintedToken(msgspec.Struct, kw_only=True):
    account_id: str
    session_token: str
    ttl_s: int


class ItemOut(msgspec.Struct, kw_only=True):
    item_id: str
    source: str
    type: ItemType
    external_id: str
    created_at: str


class ItemResponse(msgspec.Struct, kw_only=True):
    item: ItemOut


class ItemList(msgspec.Struct, kw_only=True):
    items: list[ItemOut]
    next_cursor: str | None


class ErrorOut(msgspec.Struct, kw_only=True):
    """Why an execution or a step failed."""

    code: str
    message: str
    http_status: int | None


class ExecutionSummary(msgspec.Struct, kw_only=True):
    """An execution: the 202 body, list entries, and the head of the detail."""

    execution_id: str
    status: Status
    kind: str
    target: Target
    reporter_id: str | None
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    updated_at: str | None
    fee_coins: float
    cost_coins: float
    error: ErrorOut | None
    cancel_requested: bool
    current_step: int | None
    steps_total: int
    steps_done: int
    # Only on a schedule run and on the executions it started: the schedule and the run.
    schedule_id: str | msgspec.UnsetType = msgspec.UNSET
    run_id: str | msgspec.UnsetType = msgspec.UNSET


class ExecutionResponse(msgspec.Struct, kw_only=True):
    execution: ExecutionSummary


class ExecutionList(msgspec.Struct, kw_only=True):
    executions: list[ExecutionSummary]
    next_cursor: str | None


class StepSummary(msgspec.Struct, kw_only=True):
    """A step that has started: attempts, input, output (or ``output_ref``), usage, cost."""

    step_index: int
    step_id: str
    tool_id: str
    status: Literal["pending", "running", "retrying", "done", "error"]
    attempts: int
    input: dict[str, Any]
    output: dict[str, Any] | None
    output_ref: BlobRef | None
    usage: dict[str, int]
    cost_coins: float
    started_at: str | None
    finished_at: str | None
    duration_ms: int | None
    retry_at: str | None
    error: ErrorOut | None


class StepInputOut(msgspec.Struct, kw_only=True):
    """A step not run yet and the input it will get."""

    step_index: int
    step_id: str
    tool_id: str
    input: dict[str, Any]


class ItemProgress(msgspec.Struct, kw_only=True):
    """One item of a ``process_collection`` execution (a channel of a ``schedule_run``): its
    progress and, once done, its output."""

    item_index: int
    item_id: str | None
    source: str | None
    status: Literal["pending", "running", "done", "error"]
    steps_total: int
    steps_done: int
    steps_skipped: int
    step_indexes: list[int]
    cost_coins: float
    error: ErrorOut | None
    output: dict[str, Any] | None


class ExecutionDetail(msgspec.Struct, kw_only=True):
    """``GET /v1/executions/{execution_id}``; ``items`` only for the executions that run per
    item: ``process_collection`` and ``schedule_run`` (whose items are its channels)."""

    execution: ExecutionSummary
    workflow: WorkflowSnapshot
    steps: list[StepSummary]
    step_inputs: list[StepInputOut]
    items: list[ItemProgress] | msgspec.UnsetType = msgspec.UNSET


class EventList(msgspec.Struct, kw_only=True):
    """The raw events of an execution, oldest first (each tagged by ``type``)."""

    events: list[dict[str, Any]]


class TranscriptOut(msgspec.Struct, kw_only=True):
    item_id: str
    lang: str
    text: str
    segments: list[Any]
    execution_id: str | None
    created_at: str | None


class TranscriptResponse(msgspec.Struct, kw_only=True):
    transcript: TranscriptOut


class HealthOut(msgspec.Struct, kw_only=True):
    status: Literal["ok", "ready"]


# -- decoding ------------------------------------------------------------------------------------


def nesting_depth(body: bytes, limit: int) -> int:
    """How deeply the JSON in ``body`` nests arrays and objects, counting no further than
    ``limit + 1``; brackets inside strings are skipped, escapes included."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


def _too_deep(body: bytes) -> bool:
    # Cheap first: a body with few brackets cannot nest deeply, so most bodies skip the scan.
    if body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH:
        return False
    return nesting_depth(body, MAX_JSON_DEPTH) > MAX_JSON_DEPTH


async def decode_body(request: Request, kind: type[T], *, optional: bool = False) -> T:
    """The request body as ``kind``; an empty body is ``{}`` when ``optional``.

    JSON nested deeper than :data:`MAX_JSON_DEPTH` is refused (400) before decoding: msgspec
    would recurse into free-form fields (``params``) until RecursionError, and what it stored
    would be deeper than orjson encodes on the way out.
    """
    body = await request.body()
    if optional and not body.strip():
        body = b"{}"
    if _too_deep(body):
        raise HTTPException(400, f"malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:  # before DecodeError: it is a subclass
        raise InvalidRequest(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise HTTPException(400, f"malformed JSON: {exc}") from None
    except RecursionError:  # a last guard; the depth check should make it unreachable
        raise HTTPException(400, "malformed JSON: nested too deeply") from None


def path_id(request: Request, name: str, kind: str) -> str:
    """The path parameter ``name`` when it is a well-formed ``kind`` id; NotFound otherwise."""
    value = str(request.path_params.get(name, ""))
    if not is_id(value, kind):
        raise NotFound(f"no such {_NOUNS.get(kind, 'resource')}")
    return value


_NOUNS = {"acc": "account", "itm": "item", "exc": "execution"}


def page_params(request: Request) -> tuple[int, str | None]:
    """``limit`` (default 20, 1-100) and ``cursor`` from the query string."""
    raw = request.query_params.get("limit")
    limit = DEFAULT_LIMIT
    if raw is not None:
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
            raise InvalidRequest(f"limit: a whole number from 1 to {MAX_LIMIT}")
        limit = int(raw)
    cursor = request.query_params.get("cursor") or None
    return limit, cursor


def flag(request: Request, name: str) -> bool:
    """A boolean query parameter (``1``/``true``/``yes``); absent is False."""
    raw = request.query_params.get(name)
    if raw is None:
        return False
    low = raw.lower()
    if low in ("1", "true", "yes"):
        return True
    if low in ("0", "false", "no", ""):
        return False
    raise InvalidRequest(f"{name}: expected 1 or 0")


def micro(coins: float) -> int:
    """A JSON number of coins as exact micro-coins; more than 6 decimals is invalid."""
    try:
        return coins_to_micro(repr(coins))
    except ValueError:
        raise InvalidRequest("coins: at most 6 decimal places") from None


# -- encoding ------------------------------------------------------------------------------------


def respond(body: Any, status: int = 200) -> Response:
    """A JSON response encoded with orjson."""
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def iso(ms: int) -> str:
    """Milliseconds since the epoch as an ISO 8601 UTC timestamp."""
    stamp = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def account_body(account: Account) -> dict[str, Any]:
    """The ``account`` object clients see."""
    return {
        "account_id": account.account_id,
        "name": account.name,
        "balance_coins": micro_to_coins(account.balance),
    }


def item_body(item: Item) -> dict[str, Any]:
    """The ``item`` object clients see."""
    return {
        "item_id": item.item_id,
        "source": item.source,
        "type": item.type,
        "external_id": item.external_id,
        "created_at": iso(item.created_at),
    }


def ledger_entry_body(entry: LedgerEntry) -> dict[str, Any]:
    """A ledger entry as its owner sees it."""
    return {
        "charge_id": entry.charge_id,
        "kind": entry.kind,
        "amount_coins": micro_to_coins(entry.amount),
        "balance_coins": micro_to_coins(entry.balance),
        "execution_id": entry.execution_id,
        "at": iso(entry.at),
    }
