"""Stream entries as the store hands them out: a partition-log or work-stream entry, decoded
(:class:`Entry`) or not yet (:class:`RawEntry`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.connection import as_str
from engine.errors import StoreError
from engine.log import codec
from engine.log.events import AnyEvent


@dataclass(frozen=True, slots=True)
class Entry:
    """One partition-log entry: its stream id and its event (None when it cannot be decoded)."""

    entry_id: str
    event: AnyEvent | None
    raw: bytes
    deliveries: int = 1


# Every event is encoded with its tag first (msgspec writes the tag field before the others), so
# an entry's type can be read from its first bytes without decoding the rest.
_TAG_PREFIX = b'{"type":"'


@dataclass(frozen=True, slots=True)
class RawEntry:
    """A partition-log entry as delivered, not decoded yet: a consumer that only acknowledges
    most entries decodes just the few it acts on."""

    entry_id: str
    raw: bytes
    deliveries: int = 1

    @property
    def event_type(self) -> str | None:
        """The event's tag read from the encoded prefix (None when the entry has another shape:
        only :meth:`decode` can tell what it is then)."""
        raw = self.raw
        if not raw.startswith(_TAG_PREFIX):
            return None
        end = raw.find(b'"', len(_TAG_PREFIX))
        return raw[len(_TAG_PREFIX) : end].decode("ascii", "replace") if end > 0 else None

    def decode(self) -> Entry:
        """The entry with its event decoded (None when it cannot be)."""
        try:
            event: AnyEvent | None = codec.decode(self.raw)
        except StoreError:
            event = None
        return Entry(self.entry_id, event, self.raw, self.deliveries)


def raw_entry_from_row(
    entry_id: bytes | str, fields: dict[Any, Any], deliveries: int = 1
) -> RawEntry:
    """The entry a stream row (its id and fields, as Redis answers them) holds, not decoded."""
    value = fields.get(codec.FIELD) or fields.get("e") or b""
    raw = value.encode() if isinstance(value, str) else bytes(value)
    return RawEntry(as_str(entry_id), raw, deliveries)


def entry_from_row(entry_id: bytes | str, fields: dict[Any, Any], deliveries: int = 1) -> Entry:
    """The entry a stream row holds, decoded (its event None when it cannot be)."""
    return raw_entry_from_row(entry_id, fields, deliveries).decode()
