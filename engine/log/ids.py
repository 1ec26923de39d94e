"""Resource ids: a type prefix, a time-ordered part and randomness.

Ids sort by creation time (lists can page on them), carry no owner data, and are validated by
shape before they come near a Redis key. An execution id also carries its partition number, so an
operator can route it without knowing the owner: ``exc_p7_01jd…``. A schedule run is an execution;
its public id is ``run_`` + the execution id's body (the owner's partition gives the rest back).
"""

from __future__ import annotations

import re
import secrets

from engine import clock

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
_BODY = r"[0-9a-hjkmnp-tv-z]{20}"

PREFIXES = ("acc", "itm", "col", "rep", "wf", "stp", "sch", "exc", "doc", "run", "req", "key")
_SIMPLE = re.compile(rf"^(?P<kind>[a-z]{{2,3}})_(?P<body>{_BODY})$")
_EXECUTION = re.compile(rf"^exc_p(?P<partition>\d{{1,4}})_(?P<body>{_BODY})$")


_RAND_BITS = 50
_last_ms = -1
_last_rand = 0


# Every 10-bit value as its two base32 characters: an id half is five lookups, not ten steps of
# a loop (a worker makes one per document it publishes).
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]


def _encode(value: int) -> str:
    """``value`` (its low 50 bits) as 10 base32 characters, most significant first."""
    pairs = _PAIRS
    return (
        pairs[(value >> 40) & 1023]
        + pairs[(value >> 30) & 1023]
        + pairs[(value >> 20) & 1023]
        + pairs[(value >> 10) & 1023]
        + pairs[value & 1023]
    )


def _body(now_ms: int | None = None) -> str:
    """50 bits of milliseconds (good until the year 37648) then 50 random bits.

    Within one millisecond the random part of the previous id is incremented instead of drawn
    afresh (as ULIDs do), so ids made by one process sort in creation order: lists page on them.
    """
    global _last_ms, _last_rand
    ms = clock.now_ms() if now_ms is None else now_ms
    if ms == _last_ms and _last_rand + 1 < (1 << _RAND_BITS):
        rand = _last_rand + 1
    else:
        rand = secrets.randbits(_RAND_BITS - 1)  # leave headroom for increments
    _last_ms, _last_rand = ms, rand
    return _encode(ms) + _encode(rand)


def new_id(kind: str, now_ms: int | None = None) -> str:
    """A fresh id such as ``itm_01jd…`` (not for executions: see :func:`new_execution_id`)."""
    if kind not in PREFIXES or kind == "exc":
        raise ValueError(f"unknown id kind {kind!r}")
    return f"{kind}_{_body(now_ms)}"


def derived_id(kind: str, ms: int, low: int) -> str:
    """An id of ``kind`` made from given parts rather than the clock and randomness: ``ms`` in the
    time-ordered half, ``low`` (50 bits) in the other. For ids that whoever makes them must make
    the same (a step's document, made again by a retry or a takeover)."""
    if kind not in PREFIXES or kind == "exc":
        raise ValueError(f"unknown id kind {kind!r}")
    return f"{kind}_{_encode(ms)}{_encode(low & ((1 << _RAND_BITS) - 1))}"


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


def id_time_ms(value: str) -> int | None:
    """The creation time (ms) a well-formed id carries in its time-ordered half; None otherwise."""
    m = _EXECUTION.match(value) or _SIMPLE.match(value)
    if m is None:
        return None
    ms = 0
    for char in m.group("body")[:10]:
        ms = ms * 32 + _ALPHABET.index(char)
    return ms


def run_id(execution_id: str) -> str:
    """The public id of the schedule run that is execution ``execution_id``."""
    m = _EXECUTION.match(execution_id)
    if m is None:
        raise ValueError(f"not an execution id: {execution_id!r}")
    return f"run_{m.group('body')}"


def run_execution_id(run: str, partition: int) -> str | None:
    """The execution id of run ``run`` of an owner of ``partition``; None when malformed."""
    if not is_id(run, "run"):
        return None
    return f"exc_p{partition}_{run.removeprefix('run_')}"
