"""What every HTTP provider shares: one reused ``httpx.AsyncClient``, the idempotency key header,
a deadline, and one mapping from HTTP outcomes to :class:`engine.errors.ToolError`.

    2xx                      the body, decoded into the caller's msgspec type
    429                      ``rate_limited``, retryable, ``retry_after_ms`` from Retry-After
    5xx                      ``provider_unavailable``, retryable (Retry-After honoured too)
    408, a deadline passed   ``timeout``, retryable
    404                      ``not_found``, not retryable
    other 4xx, 3xx           ``provider_rejected``, not retryable (the request itself is wrong)
    connection failures      ``provider_unavailable``, retryable
    an unreadable 2xx body   ``provider_bad_response``, not retryable (the same request would
                             get the same answer)

Secrets: keys travel in headers (or, for the YouTube Data API, its ``key`` query parameter) and
never in an error message; httpx's request log is filtered so a ``key=`` in a URL is redacted.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import math
import re
from typing import Any, TypeVar

import anyio
import httpx
import msgspec

from engine.errors import ToolError
from engine.providers.base import ProviderCall

T = TypeVar("T")

# The provider's own header, the same name as ours (api.parse): a provider that supports it
# never bills one call twice.
IDEMPOTENCY_HEADER = "Idempotency-Key"
# A provider asking for a longer pause than this is treated as asking for this long: a step's
# retry should not sleep for hours on one header.
MAX_RETRY_AFTER_MS = 15 * 60 * 1000
_SNIPPET = 200  # how much of an error body a message quotes

_KEY_IN_URL = re.compile(r"([?&]key=)[^&\s\"']+")


class _RedactKeys(logging.Filter):
    """Rewrites log records that would print an API key carried in a URL."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "key=" in message:
            record.msg = _KEY_IN_URL.sub(r"\1[redacted]", message)
            record.args = ()
        return True


# httpx logs every request's full URL at INFO; the YouTube key is in that URL.
logging.getLogger("httpx").addFilter(_RedactKeys())


def bearer(key: str | None) -> dict[str, str]:
    """The ``Authorization`` header of a provider's API key (none without a key)."""
    return {"Authorization": f"Bearer {key}"} if key else {}


def retry_after_ms(value: str | None, *, now: dt.datetime | None = None) -> int | None:
    """A Retry-After header (delay in seconds, or an HTTP date) in milliseconds from ``now``;
    None when absent or unreadable. Capped at :data:`MAX_RETRY_AFTER_MS`, never negative."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT
            when = when.replace(tzinfo=dt.UTC)
        seconds = (when - (now or dt.datetime.now(dt.UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(MAX_RETRY_AFTER_MS, max(0, math.ceil(seconds * 1000)))


class HttpProvider:
    """One provider's HTTP connection, reused for every call it makes."""

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        timeout_s: float,
        headers: dict[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.timeout_s = timeout_s
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            headers=headers or {},
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def call(
        self,
        method: str,
        path: str,
        into: type[T],
        *,
        call: ProviderCall,
        json: Any = None,
        params: dict[str, str] | None = None,
    ) -> T:
        """``method path`` with the call's idempotency key; the 2xx body decoded as ``into``,
        or ToolError (see the module docstring)."""
        headers = {IDEMPOTENCY_HEADER: call.idempotency_key}
        try:
            # httpx's timeout bounds each phase (connect, each read); this bounds the whole call,
            # so a server trickling bytes cannot hold a step forever.
            with anyio.fail_after(self.timeout_s):
                response = await self._client.request(
                    method, path.lstrip("/"), json=json, params=params, headers=headers
                )
        except (TimeoutError, httpx.TimeoutException):
            raise ToolError(
                "timeout", f"{self.name} provider: no answer within {self.timeout_s:g}s",
                retryable=True,
            ) from None  # fmt: skip
        except httpx.TransportError as exc:
            raise ToolError(
                "provider_unavailable",
                f"{self.name} provider unreachable ({type(exc).__name__})",
                retryable=True,
            ) from None
        return self._decode(response, into)

    def _decode(self, response: httpx.Response, into: type[T]) -> T:
        status = response.status_code
        if 200 <= status < 300:
            try:
                return msgspec.json.decode(response.content, type=into)
            except msgspec.DecodeError as exc:
                raise ToolError(
                    "provider_bad_response",
                    f"{self.name} provider answered {status} with an unreadable body: {exc}",
                    retryable=False,
                ) from None
        said = f"{self.name} provider answered {status}: {_snippet(response)}"
        wait = retry_after_ms(response.headers.get("retry-after"))
        if status == 429:
            raise ToolError("rate_limited", said, retryable=True, retry_after_ms=wait)
        if status >= 500:
            raise ToolError("provider_unavailable", said, retryable=True, retry_after_ms=wait)
        if status == 408:
            raise ToolError("timeout", said, retryable=True, retry_after_ms=wait)
        if status == 404:
            raise ToolError("not_found", said, retryable=False)
        raise ToolError("provider_rejected", said, retryable=False)


def _snippet(response: httpx.Response) -> str:
    """The provider's own error message when its body has one (OpenAI and Google both answer
    ``{"error": {"message": …}}``), else the start of the body."""
    try:
        body = msgspec.json.decode(response.content)
    except msgspec.DecodeError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return _KEY_IN_URL.sub(r"\1[redacted]", error["message"][:_SNIPPET])
        if isinstance(error, str):
            return _KEY_IN_URL.sub(r"\1[redacted]", error[:_SNIPPET])
    text = response.content[:_SNIPPET].decode(errors="replace").strip()
    return _KEY_IN_URL.sub(r"\1[redacted]", text) or response.reason_phrase
