"""The only place bytes become events and events become bytes.

Events are JSON (msgspec) in the log: readable with ``redis-cli XRANGE`` and served as-is by the
events endpoint. One module-level encoder and one typed decoder, reused everywhere.
"""

from __future__ import annotations

import msgspec

from engine import clock
from engine.errors import StoreError
from engine.log.events import AnyEvent

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AnyEvent)

# The field of a stream entry that holds the encoded event.
FIELD = b"e"


def encode(event: AnyEvent) -> bytes:
    """Encode one event."""
    return _encoder.encode(event)


def decode(data: bytes | str) -> AnyEvent:
    """Decode one event; a malformed or unknown entry is a StoreError naming why."""
    try:
        event: AnyEvent = _decoder.decode(data)
        return event
    except msgspec.ValidationError as exc:
        raise StoreError(f"undecodable event: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise StoreError(f"undecodable event: {exc}") from exc


def stamp(event: AnyEvent, seq: int, at: int | None = None) -> AnyEvent:
    """A copy of ``event`` with its seq (and, unless given, the current time) filled in."""
    now = clock.now_ms() if at is None else at
    return msgspec.structs.replace(event, seq=seq, at=now)


def to_builtins(event: AnyEvent) -> dict[str, object]:
    """The event as plain JSON-ready data, tag included."""
    data = msgspec.to_builtins(event)
    assert isinstance(data, dict)
    return data
