"""Reading a request: the body as its Struct, path ids, paging, flags and coin amounts.

Bodies are decoded by ``msgspec.json`` in one pass into the Structs of ``api.schemas.requests``:
malformed JSON is ``400 invalid_request``; a wrong type, a missing or an unknown field is ``422
invalid_request`` whose message names the field (msgspec's message carries the path, e.g.
``Expected `str`, got `int` - at `$.source```).

Path ids are checked by shape (``engine.log.ids.is_id``) before anything touches Redis: a malformed
id is simply ``404``, like a missing one.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request

from api.schemas.requests import DEFAULT_LIMIT, MAX_LIMIT
from engine.errors import InvalidRequest, NotFound
from engine.log.ids import is_id
from engine.settings import coins_to_micro

T = TypeVar("T")

# The header a client names a retried POST with (DESIGN §5: the same key and body within 24 h is
# the same request).
IDEMPOTENCY_HEADER = "Idempotency-Key"
# Deeper request JSON is 400: far beyond any real body, well within what the encoder nests.
MAX_JSON_DEPTH = 32


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
    would be deeper than ``api.render.encode`` can answer with.
    """
    body = await request.body()
    if optional and not body.strip():
        body = b"{}"
    if _too_deep(body):
        raise HTTPException(400, f"malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:  # before DecodeError: it is a subclass
        if "got `float`" not in str(exc):
            raise InvalidRequest(str(exc)) from None
        # JSON Schema counts 24.0 as an integer: so does the API (the document says integer).
        try:
            return msgspec.convert(_integral(msgspec.json.decode(body)), kind)
        except msgspec.ValidationError as again:
            raise InvalidRequest(str(again)) from None
    except msgspec.DecodeError as exc:
        raise HTTPException(400, f"malformed JSON: {exc}") from None
    except RecursionError:  # a last guard; the depth check should make it unreachable
        raise HTTPException(400, "malformed JSON: nested too deeply") from None


def _integral(value: object) -> object:
    """``value`` with every float that is a whole number made an int, at any depth."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    if isinstance(value, list):
        return [_integral(v) for v in value]
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    return value


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
