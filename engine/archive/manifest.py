"""A partition's manifest: what its archive holds, as numbered immutable generations. Pure.

    p0007/manifest/{generation:020d}.json

Each generation lists the partition's recent segments (log and ledger) and the positions they
reach; older segments are frozen, a few hundred at a time, into immutable **volumes** that the
manifest lists instead (``pNNNN/volumes/{kind}-{first}_{last}.json``), so a manifest stays small
however long the archive grows. It is written create-only: the archiver that writes generation
N+1 first wins, a second one finds the name taken and reads the winner's instead, so two
archivers never fork the history (docs/archive.md). Readers take the highest generation; the
archiver deletes generations older than the last few.
"""

from __future__ import annotations

import msgspec

from engine.archive.segments import (
    LedgerSegmentInfo,
    SegmentInfo,
    padded,
    partition_dir,
    sha256,
)

FORMAT = 1
KEEP_GENERATIONS = 3
MAX_SEGMENTS = 1_000  # segments of one kind a manifest lists before the oldest become a volume
VOLUME_SEGMENTS = 500  # segments per volume


class VolumeInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A volume: ``count`` consecutive segments of one kind frozen into one immutable object (a
    JSON list of their SegmentInfo or LedgerSegmentInfo). ``first`` and ``last`` are the first
    segment's first and the last segment's last entry id (for ledger segments: ``after_ms`` and
    ``through_ms``, as text); ``entries`` and ``bytes`` add up its segments'."""

    name: str
    first: str
    last: str
    count: int
    entries: int
    bytes: int
    sha256: str


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
    volumes: list[VolumeInfo] = msgspec.field(default_factory=list)
    ledger_through: int = 0
    ledger_entries: int = 0
    ledger_bytes: int = 0
    ledger_segments: list[LedgerSegmentInfo] = msgspec.field(default_factory=list)
    ledger_volumes: list[VolumeInfo] = msgspec.field(default_factory=list)
    written_at: int = 0
    writer: str = ""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Manifest)


def encode(manifest: Manifest) -> bytes:
    return _encoder.encode(manifest)


def decode(data: bytes) -> Manifest:
    return _decoder.decode(data)


_log_list = msgspec.json.Decoder(list[SegmentInfo])
_ledger_list = msgspec.json.Decoder(list[LedgerSegmentInfo])


def encode_volume(segments: list[SegmentInfo] | list[LedgerSegmentInfo]) -> bytes:
    return _encoder.encode(segments)


def decode_log_volume(data: bytes) -> list[SegmentInfo]:
    return _log_list.decode(data)


def decode_ledger_volume(data: bytes) -> list[LedgerSegmentInfo]:
    return _ledger_list.decode(data)


def volume_name(partition: int, kind: str, first: str, last: str) -> str:
    return f"{partition_dir(partition)}/volumes/{kind}-{first}_{last}.json"


def log_volume(partition: int, segments: list[SegmentInfo]) -> tuple[VolumeInfo, bytes]:
    """The oldest ``segments`` frozen into a volume: its info and its bytes."""
    data = encode_volume(segments)
    first, last = padded(segments[0].first), padded(segments[-1].last)
    info = VolumeInfo(
        name=volume_name(partition, "log", first, last),
        first=segments[0].first,
        last=segments[-1].last,
        count=len(segments),
        entries=sum(s.count for s in segments),
        bytes=sum(s.bytes for s in segments),
        sha256=sha256(data),
    )
    return info, data


def ledger_volume(partition: int, segments: list[LedgerSegmentInfo]) -> tuple[VolumeInfo, bytes]:
    data = encode_volume(segments)
    first, last = segments[0].after_ms, segments[-1].through_ms
    info = VolumeInfo(
        name=volume_name(partition, "ledger", f"{first:020d}", f"{last:020d}"),
        first=str(first),
        last=str(last),
        count=len(segments),
        entries=sum(s.count for s in segments),
        bytes=sum(s.bytes for s in segments),
        sha256=sha256(data),
    )
    return info, data


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


def with_volume(manifest: Manifest, kind: str, volume: VolumeInfo) -> Manifest:
    """``manifest`` with its oldest ``volume.count`` segments of ``kind`` listed as ``volume``
    (same generation: the caller commits it with the segment it adds)."""
    if kind == "log":
        return msgspec.structs.replace(
            manifest,
            volumes=[*manifest.volumes, volume],
            segments=manifest.segments[volume.count :],
        )
    return msgspec.structs.replace(
        manifest,
        ledger_volumes=[*manifest.ledger_volumes, volume],
        ledger_segments=manifest.ledger_segments[volume.count :],
    )
