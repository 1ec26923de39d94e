"""A partition's manifest: what its archive holds, as numbered immutable generations. Pure.

    p0007/manifest/{generation:020d}.json

Each generation lists every segment of the partition (log and ledger) and the positions they
reach. It is written create-only: the archiver that writes generation N+1 first wins, a second one
finds the name taken and reads the winner's instead, so two archivers never fork the history
(docs/archive-format.md). Readers take the highest generation; the archiver deletes generations
older than the last few.
"""

from __future__ import annotations

import msgspec

from engine.archive.segments import LedgerSegmentInfo, SegmentInfo, partition_dir

FORMAT = 1
KEEP_GENERATIONS = 3


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """Generation ``generation`` of partition ``partition``'s manifest.

    ``position`` is the id of the last log entry archived ("0-0": none); ``ledger_through`` the
    ms through which ledger entries are archived (0: none). Sizes are of the stored objects.
    """

    format: int = FORMAT
    partition: int
    generation: int = 0
    position: str = "0-0"
    entries: int = 0
    bytes: int = 0
    segments: list[SegmentInfo] = msgspec.field(default_factory=list)
    ledger_through: int = 0
    ledger_entries: int = 0
    ledger_bytes: int = 0
    ledger_segments: list[LedgerSegmentInfo] = msgspec.field(default_factory=list)
    written_at: int = 0
    writer: str = ""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Manifest)


def encode(manifest: Manifest) -> bytes:
    return _encoder.encode(manifest)


def decode(data: bytes) -> Manifest:
    return _decoder.decode(data)


def manifest_dir(partition: int) -> str:
    return f"{partition_dir(partition)}/manifest/"


def manifest_name(partition: int, generation: int) -> str:
    return f"{manifest_dir(partition)}{generation:020d}.json"


def generation_of(name: str) -> int | None:
    """The generation a manifest object's name carries (None for another name)."""
    stem = name.rsplit("/", 1)[-1]
    if not stem.endswith(".json") or not stem[:-5].isdigit():
        return None
    return int(stem[:-5])


def with_log_segment(
    manifest: Manifest, segment: SegmentInfo, *, writer: str, now_ms: int
) -> Manifest:
    """The next generation: ``segment`` appended, the position moved to its last entry."""
    return msgspec.structs.replace(
        manifest,
        generation=manifest.generation + 1,
        position=segment.last,
        entries=manifest.entries + segment.count,
        bytes=manifest.bytes + segment.bytes,
        segments=[*manifest.segments, segment],
        written_at=now_ms,
        writer=writer,
    )


def with_ledger_segment(
    manifest: Manifest, segment: LedgerSegmentInfo, *, writer: str, now_ms: int
) -> Manifest:
    """The next generation: ledger ``segment`` appended, ledger entries archived through its end."""
    return msgspec.structs.replace(
        manifest,
        generation=manifest.generation + 1,
        ledger_through=segment.through_ms,
        ledger_entries=manifest.ledger_entries + segment.count,
        ledger_bytes=manifest.ledger_bytes + segment.bytes,
        ledger_segments=[*manifest.ledger_segments, segment],
        written_at=now_ms,
        writer=writer,
    )
