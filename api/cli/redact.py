"""What the ``clipstream`` command keeps out of what it prints: session tokens in the server's
request lines, and the password in a Redis URL."""

from __future__ import annotations

import logging
import re


class TokenRedactingFilter(logging.Filter):
    """Removes ``token=…`` from log records (uvicorn's request lines print the query string).

    A logger's filters see only the records logged on that very logger (and uvicorn.access does
    not propagate), so :func:`redact_tokens_in_server_logs` attaches it to each logger uvicorn
    writes request lines to.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and isinstance(record.args, tuple):
            record.args = tuple(_redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = _redact(record.msg)
        return True


_TOKEN_FILTER = TokenRedactingFilter()


def redact_tokens_in_server_logs() -> None:
    """Put the token filter on the loggers uvicorn writes request lines to (idempotent):
    ``uvicorn.access`` for HTTP, and ``uvicorn.error``, where the WebSocket handshake's line
    (``"WebSocket /v1/realtime?token=…" [accepted]``) goes."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).addFilter(_TOKEN_FILTER)


def _redact(text: str) -> str:
    return re.sub(r"(token=)[^&\s\"]+", r"\1[redacted]", text)


def safe_url(url: str) -> str:
    """The Redis URL without its password."""
    return re.sub(r"//([^:/@]*):[^@]*@", r"//\1:***@", url)
