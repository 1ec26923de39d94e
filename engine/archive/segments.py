"""The segment format: immutable, compressed, checksummed runs of log or ledger entries. Pure: no
I/O, no clock. docs/archive.md describes the same bytes for readers without clipstream.

A segment is one zstd frame (level 3, content checksum on, content size in the header) of JSON
lines, one line per entry, in order:

    log segment     {"id":"1733300000000-0","e":{...the event JSON as the log holds it...}}
    ledger segment  {"account":"acc_…","id":"1733300000000-0","fields":{"charge_id":…,…}}

A log entry whose only field is ``e`` holding JSON is written as above, its event bytes verbatim;
any other entry keeps every field as text under ``fields`` (values that are not UTF-8 are base64,
their names listed under ``base64``). Ledger lines are sorted by account, then id.

Names carry the range, zero-padded so that name order is id order:

    p0007/log/{first ms:020d}-{first seq:020d}_{last ms:020d}-{last seq:020d}.jsonl.zst
    p0007/ledger/{after ms:020d}_{through ms:020d}.jsonl.zst   (ledger entries after ``after``,
                                                               through ``through``, in ms)

The same entries always encode to the same bytes (fixed level, fixed line shape), so a segment
written again after a crash is byte-identical and its sha256 proves it.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import msgspec
import orjson
import zstandard

from engine.errors import ArchiveCorrupt

LEVEL = 3
MAX_SEQ = 2**64 - 1
_E_PREFIX = b'{"id":"'
_E_MIDDLE = b'","e":'


# -- stream ids ------------------------------------------------------------------------------------


def parse_id(entry_id: str) -> tuple[int, int]:
    """A stream id ``ms-seq`` as a pair of ints (``"0"`` is ``(0, 0)``)."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def format_id(ms: int, seq: int) -> str:
    return f"{ms}-{seq}"


def successor(entry_id: str) -> str:
    """The smallest stream id after ``entry_id``."""
    ms, seq = parse_id(entry_id)
    return format_id(ms + 1, 0) if seq >= MAX_SEQ else format_id(ms, seq + 1)


def id_key(entry_id: str) -> tuple[int, int]:
    """Sort key of a stream id (string order is not id order)."""
    return parse_id(entry_id)


def padded(entry_id: str) -> str:
    """``entry_id`` with both halves zero-padded to 20 digits, as segment names carry it."""
    ms, seq = parse_id(entry_id)
    return f"{ms:020d}-{seq:020d}"


def unpadded(text: str) -> str:
    """The stream id a padded name part stands for."""
    ms, _, seq = text.partition("-")
    return format_id(int(ms), int(seq))


def partition_dir(partition: int) -> str:
    return f"p{partition:04d}"


def log_segment_name(partition: int, first: str, last: str) -> str:
    return f"{log_segments_dir(partition)}{padded(first)}_{padded(last)}.jsonl.zst"


def log_segments_dir(partition: int) -> str:
    return f"{partition_dir(partition)}/log/"


def log_names_after(partition: int, position: str) -> str:
    """A name every log segment starting after ``position`` sorts after, and no segment starting
    at or before it does (to find one a crashed archiver left behind)."""
    return f"{log_segments_dir(partition)}{padded(position)}_~"


def ledger_segment_name(partition: int, after_ms: int, through_ms: int) -> str:
    return f"{partition_dir(partition)}/ledger/{after_ms:020d}_{through_ms:020d}.jsonl.zst"


def ledger_segment_prefix(partition: int, after_ms: int) -> str:
    return f"{partition_dir(partition)}/ledger/{after_ms:020d}_"


def log_range_of(name: str) -> tuple[str, str]:
    """The (first, last) ids a log segment's name carries."""
    stem = name.rsplit("/", 1)[-1].removesuffix(".jsonl.zst")
    first, _, last = stem.partition("_")
    return unpadded(first), unpadded(last)


def ledger_range_of(name: str) -> tuple[int, int]:
    """The (after, through) ms a ledger segment's name carries."""
    stem = name.rsplit("/", 1)[-1].removesuffix(".jsonl.zst")
    after, _, through = stem.partition("_")
    return int(after), int(through)


# -- what the manifest records of a segment --------------------------------------------------------


class SegmentInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A log segment as the manifest lists it: its name, id range, entries, sizes, sha256."""

    name: str
    first: str
    last: str
    count: int
    bytes: int
    raw_bytes: int
    sha256: str


class LedgerSegmentInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A ledger segment as the manifest lists it: ledger entries with ``after_ms`` < ms <=
    ``through_ms`` of the ``accounts`` it names."""

    name: str
    after_ms: int
    through_ms: int
    count: int
    bytes: int
    raw_bytes: int
    sha256: str
    accounts: list[str]


@dataclass(frozen=True, slots=True)
class Encoded:
    """A segment's bytes with what the manifest records about them."""

    data: bytes
    raw_bytes: int
    sha256: str


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def compress(raw: bytes) -> Encoded:
    """One zstd frame of ``raw`` (level 3, checksum and content size written)."""
    cctx = zstandard.ZstdCompressor(level=LEVEL, write_checksum=True, write_content_size=True)
    data = cctx.compress(raw)
    return Encoded(data, len(raw), sha256(data))


def decompress(data: bytes, expected_sha256: str | None = None) -> bytes:
    """The lines of a segment; ArchiveCorrupt when its sha256 or its zstd frame is wrong."""
    if expected_sha256 is not None and sha256(data) != expected_sha256:
        raise ArchiveCorrupt("segment checksum mismatch (sha256)")
    try:
        with zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True) as reader:
            return reader.read()
    except zstandard.ZstdError as exc:
        raise ArchiveCorrupt(f"segment does not decompress: {exc}") from exc


# -- log lines -------------------------------------------------------------------------------------

Fields = Mapping[bytes, bytes]


def log_line(entry_id: str, fields: Fields) -> bytes:
    """One log entry as its segment line (see the module docstring)."""
    raw = fields.get(b"e")
    if raw is not None and len(fields) == 1 and _is_json(raw):
        return _E_PREFIX + entry_id.encode() + _E_MIDDLE + raw + b"}\n"
    text: dict[str, str] = {}
    b64: list[str] = []
    for name, value in sorted(fields.items()):
        key = name.decode(errors="replace")
        try:
            text[key] = value.decode()
        except UnicodeDecodeError:
            text[key] = base64.b64encode(value).decode()
            b64.append(key)
    row: dict[str, object] = {"id": entry_id, "fields": text}
    if b64:
        row["base64"] = b64
    return orjson.dumps(row) + b"\n"


def _is_json(raw: bytes) -> bool:
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    # A line holds one JSON value per entry: a raw value spanning lines would split it.
    return b"\n" not in raw


def encode_log(rows: Iterable[tuple[str, Fields]]) -> Encoded:
    """A log segment of ``rows`` (entry id, fields), in order."""
    return compress(b"".join(log_line(entry_id, fields) for entry_id, fields in rows))


def log_rows(raw: bytes) -> Iterator[tuple[str, dict[bytes, bytes]]]:
    """The (entry id, fields) of each line of a decompressed log segment."""
    for line in raw.splitlines():
        if not line:
            continue
        if line.startswith(_E_PREFIX):
            end = line.find(_E_MIDDLE, len(_E_PREFIX))
            if end > 0 and line.endswith(b"}"):
                entry_id = line[len(_E_PREFIX) : end].decode()
                yield entry_id, {b"e": line[end + len(_E_MIDDLE) : -1]}
                continue
        yield _general_row(line)


def _general_row(line: bytes) -> tuple[str, dict[bytes, bytes]]:
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ArchiveCorrupt(f"unreadable segment line: {exc}") from exc
    if not isinstance(row, dict) or not isinstance(row.get("id"), str):
        raise ArchiveCorrupt("a segment line without an id")
    if "e" in row:
        return row["id"], {b"e": orjson.dumps(row["e"])}
    b64 = set(row.get("base64") or ())
    fields: dict[bytes, bytes] = {}
    for name, value in (row.get("fields") or {}).items():
        data = base64.b64decode(value) if name in b64 else str(value).encode()
        fields[name.encode()] = data
    return row["id"], fields


# -- ledger lines ----------------------------------------------------------------------------------


def encode_ledger(rows: Sequence[tuple[str, str, Mapping[str, str]]]) -> Encoded:
    """A ledger segment of ``rows`` (account, entry id, fields), sorted by account then id."""
    ordered = sorted(rows, key=lambda r: (r[0], id_key(r[1])))
    lines = [
        orjson.dumps({"account": account, "id": entry_id, "fields": dict(sorted(fields.items()))})
        + b"\n"
        for account, entry_id, fields in ordered
    ]
    return compress(b"".join(lines))


def ledger_rows(raw: bytes) -> Iterator[tuple[str, str, dict[str, str]]]:
    """The (account, entry id, fields) of each line of a decompressed ledger segment."""
    for line in raw.splitlines():
        if not line:
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ArchiveCorrupt(f"unreadable ledger line: {exc}") from exc
        yield row["account"], row["id"], {str(k): str(v) for k, v in row["fields"].items()}
