"""Resource ids: a type prefix, a time-ordered part and randomness.

Ids sort by creation time (lists can page on them), carry no owner data, and are validated by
shape before they come near a Redis key. An execution id also carries its partition number, so an
operator can route it without knowing the owner: ``exc_p7_01jd…``.
"""

from __future__ import annotations

import re
import secrets
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
_BODY = r"[0-9a-hjkmnp-tv-z]{20}"

PREFIXES = ("acc", "itm", "col", "rep", "wf", "stp", "sch", "exc", "doc", "run", "req", "key")
_SIMPLE = re.compile(rf"^(?P<kind>[a-z]{{2,3}})_(?P<body>{_BODY})$")
_EXECUTION = re.compile(rf"^exc_p(?P<partition>\d{{1,4}})_(?P<body>{_BODY})$")


def _body(now_ms: int | None = None) -> str:
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    out = []
    for _ in range(10):  # 50 bits of milliseconds: good until the year 37648
        out.append(_ALPHABET[ms & 31])
        ms >>= 5
    stamp = "".join(reversed(out))
    rand = secrets.randbits(50)
    tail = []
    for _ in range(10):
        tail.append(_ALPHABET[rand & 31])
        rand >>= 5
    return stamp + "".join(tail)


def new_id(kind: str, now_ms: int | None = None) -> str:
    """A fresh id such as ``itm_01jd…`` (not for executions: see :func:`new_execution_id`)."""
    if kind not in PREFIXES or kind == "exc":
        raise ValueError(f"unknown id kind {kind!r}")
    return f"{kind}_{_body(now_ms)}"


def new_execution_id(partition: int, now_ms: int | None = None) -> str:
    """A fresh execution id carrying its partition number."""
    return f"exc_p{partition}_{_body(now_ms)}"


def is_id(value: str, kind: str) -> bool:
    """True when ``value`` is a well-formed id of ``kind`` (``exc`` ids included)."""
    if kind == "exc":
        return _EXECUTION.match(value) is not None
    m = _SIMPLE.match(value)
    return m is not None and m.group("kind") == kind


def execution_partition(execution_id: str) -> int:
    """The partition number an execution id carries; ValueError for a malformed id."""
    m = _EXECUTION.match(execution_id)
    if m is None:
        raise ValueError(f"not an execution id: {execution_id!r}")
    return int(m.group("partition"))
