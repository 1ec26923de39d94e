"""RFC 6455's server side without I/O: the handshake request read and answered, frames written,
client payloads unmasked, close codes checked. :mod:`api.realtime.websocket` is the connection
that uses them."""

from __future__ import annotations

import base64
import hashlib
import struct
from typing import Final, NamedTuple

GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
MAX_HEAD: Final = 16 * 1024  # bytes of a handshake request

# Opcodes (RFC 6455 §5.2).
CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

# Close codes (§7.4.1).
NORMAL = 1000
PROTOCOL_ERROR = 1002
NO_STATUS = 1005  # received no code; never sent
ABNORMAL = 1006  # the connection dropped without a close; never sent
INVALID_DATA = 1007
TOO_BIG = 1009
INTERNAL_ERROR = 1011
RESTART = 1012


def accept_key(key: bytes) -> bytes:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key`` (§4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked frame (the server's frames are never masked, §5.1)."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 1 << 16:
        return struct.pack("!BBH", 0x80 | opcode, 126, n) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, n) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame with ``code`` and ``reason`` (cut to fit the 125 bytes of a control
    frame)."""
    body = reason.encode()[:123]
    return frame(CLOSE, code.to_bytes(2, "big") + body.decode(errors="ignore").encode())


def unmask(payload: bytes, mask: bytes) -> bytes:
    """A client frame's payload XORed with its 4-byte key (§5.3), as one big-integer XOR."""
    n = len(payload)
    if not n:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def valid_close_code(code: int) -> bool:
    """Whether a client may send this close code (§7.4: registered codes but the reserved, and
    3000-4999)."""
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014) or (
        3000 <= code <= 4999
    )


def response(status: str, headers: list[tuple[bytes, bytes]]) -> bytes:
    """An HTTP/1.1 response head."""
    lines = [b"HTTP/1.1 " + status.encode() + b"\r\n"]
    lines += [name + b": " + value + b"\r\n" for name, value in headers]
    return b"".join(lines) + b"\r\n"


REFUSED: Final = response("403 Forbidden", [(b"content-length", b"0"), (b"connection", b"close")])
SERVER_ERROR: Final = response(
    "500 Internal Server Error", [(b"content-length", b"0"), (b"connection", b"close")]
)


def bad_request(why: str) -> bytes:
    body = why.encode()
    head = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    return response("400 Bad Request", head) + body


WRONG_VERSION: Final = response(
    "426 Upgrade Required",
    [(b"sec-websocket-version", b"13"), (b"content-length", b"0"), (b"connection", b"close")],
)


class Upgrade(NamedTuple):
    """A valid handshake request (§4.2.1)."""

    target: bytes  # the request target: path and query string
    headers: list[tuple[bytes, bytes]]  # names lower-cased, in the request's order
    accept: bytes  # the Sec-WebSocket-Accept of its key
    subprotocols: tuple[str, ...]  # offered, in the client's order


def parse_upgrade(head: bytes) -> Upgrade | bytes:
    """The handshake request ``head`` (up to the blank line) read: an :class:`Upgrade`, or the
    HTTP answer that refuses it (400, or 426 for another protocol version)."""
    lines = head.split(b"\r\n")
    try:
        method, target, version = lines[0].split(b" ")
    except ValueError:
        return bad_request("malformed request line")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            return bad_request("malformed header line")
        headers.append((name.strip().lower(), value.strip()))
    fields = dict(headers)  # the last of each name: they are single-valued here
    key = fields.get(b"sec-websocket-key", b"")
    connection = {t.strip().lower() for t in fields.get(b"connection", b"").split(b",")}
    if method != b"GET" or version != b"HTTP/1.1":
        return bad_request("a WebSocket handshake is an HTTP/1.1 GET")
    if fields.get(b"upgrade", b"").lower() != b"websocket" or b"upgrade" not in connection:
        return bad_request("not a WebSocket upgrade")
    if fields.get(b"sec-websocket-version") != b"13":
        return WRONG_VERSION
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError(key)
    except ValueError:
        return bad_request("Sec-WebSocket-Key must be 16 bytes in base64")
    offered = fields.get(b"sec-websocket-protocol", b"").decode("latin-1")
    subprotocols = tuple(p.strip() for p in offered.split(",") if p.strip())
    return Upgrade(target, headers, accept_key(key), subprotocols)


class Frame(NamedTuple):
    """A client frame read whole, its payload unmasked."""

    opcode: int
    fin: bool
    payload: bytes
    end: int  # where the next frame starts in the buffer


class Violation(NamedTuple):
    """Why a frame fails the connection: the close code and reason to send."""

    code: int
    reason: str


def next_frame(buf: bytes, pos: int, room: int) -> Frame | Violation | None:
    """The client frame at ``buf[pos:]``; None while it has not all arrived. ``room``: how many
    more message bytes the connection takes (a data frame beyond it is ``1009``, decided from
    its header, before its payload is waited for)."""
    end = len(buf)
    if end - pos < 2:
        return None
    b0, b1 = buf[pos], buf[pos + 1]
    opcode, length, head = b0 & 0x0F, b1 & 0x7F, 2
    if length == 126:
        if end - pos < 4:
            return None
        length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
    elif length == 127:
        if end - pos < 10:
            return None
        length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
    fin = bool(b0 & 0x80)
    if b0 & 0x70:
        return Violation(PROTOCOL_ERROR, "reserved bits set")
    if not b1 & 0x80:
        return Violation(PROTOCOL_ERROR, "unmasked frame")
    if opcode >= CLOSE and (not fin or length > 125):
        return Violation(PROTOCOL_ERROR, "fragmented or long control frame")
    if opcode < CLOSE and length > room:
        return Violation(TOO_BIG, "message over the size limit")
    start = pos + head + 4
    if end - start < length:
        return None
    payload = unmask(buf[start : start + length], buf[pos + head : start])
    return Frame(opcode, fin, payload, start + length)
