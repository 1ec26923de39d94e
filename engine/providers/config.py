"""Which provider serves each kind, and how to reach the HTTP ones: read once from the
environment, strictly, like engine.settings.

    CLIPSTREAM_PROVIDERS           ``sim`` or ``http`` for every kind, or per kind:
                                   ``llm=http,transcriber=sim`` (unnamed kinds: sim)    (sim)
    CLIPSTREAM_LLM_URL             base of an OpenAI-compatible API      (https://api.openai.com/v1)
    CLIPSTREAM_LLM_KEY             its bearer token (optional: local servers need none)
    CLIPSTREAM_LLM_MODEL           the model asked for when a step names none
                                   (required with llm=http)
    CLIPSTREAM_TRANSCRIBER_URL     base of the transcription service (required with
                                   transcriber=http)
    CLIPSTREAM_TRANSCRIBER_KEY     its bearer token (optional)
    CLIPSTREAM_EMBEDDER_URL        base of an OpenAI-compatible embeddings API  (the LLM's URL)
    CLIPSTREAM_EMBEDDER_KEY        its bearer token (optional)                  (the LLM's key)
    CLIPSTREAM_EMBEDDER_MODEL      the model asked for when a step names none
                                                                  (text-embedding-3-small)
    CLIPSTREAM_YOUTUBE_URL         base of the YouTube Data API v3
                                   (https://www.googleapis.com/youtube/v3)
    CLIPSTREAM_YOUTUBE_KEY         its API key (required with youtube=http)
    CLIPSTREAM_PROVIDER_TIMEOUT_S  one HTTP request's deadline, 0.1-3600 seconds        (60)

A bad value raises :class:`engine.errors.ConfigError` naming the variable (never its value when
it is a key).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, cast, get_args
from urllib.parse import urlsplit

from engine.errors import ConfigError
from engine.providers.base import ProviderKindName

Mode = Literal["sim", "http"]
KINDS: tuple[ProviderKindName, ...] = get_args(ProviderKindName)

DEFAULT_LLM_URL = "https://api.openai.com/v1"
DEFAULT_YOUTUBE_URL = "https://www.googleapis.com/youtube/v3"
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_EMBEDDER_MODEL = "text-embedding-3-small"


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """Every provider knob. Keys are kept out of ``repr`` so a logged config leaks nothing."""

    modes: dict[ProviderKindName, Mode] = field(default_factory=lambda: dict.fromkeys(KINDS, "sim"))
    llm_url: str = DEFAULT_LLM_URL
    llm_key: str | None = field(default=None, repr=False)
    llm_model: str | None = None
    transcriber_url: str | None = None
    transcriber_key: str | None = field(default=None, repr=False)
    youtube_url: str = DEFAULT_YOUTUBE_URL
    youtube_key: str | None = field(default=None, repr=False)
    embedder_url: str = DEFAULT_LLM_URL
    embedder_key: str | None = field(default=None, repr=False)
    embedder_model: str = DEFAULT_EMBEDDER_MODEL
    timeout_s: float = DEFAULT_TIMEOUT_S

    def mode(self, kind: ProviderKindName) -> Mode:
        """``sim`` or ``http`` for ``kind``."""
        return self.modes.get(kind, "sim")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ProviderConfig:
        """Read ``CLIPSTREAM_*`` provider settings from ``env`` (default: the environment)."""
        src = os.environ if env is None else env

        def get(name: str) -> str | None:
            raw = src.get(f"CLIPSTREAM_{name}")
            return None if raw is None or raw.strip() == "" else raw.strip()

        modes = _modes(get("PROVIDERS"))
        llm_url = _url("LLM_URL", get("LLM_URL")) or DEFAULT_LLM_URL
        config = cls(
            modes=modes,
            llm_url=llm_url,
            llm_key=get("LLM_KEY"),
            llm_model=get("LLM_MODEL"),
            transcriber_url=_url("TRANSCRIBER_URL", get("TRANSCRIBER_URL")),
            transcriber_key=get("TRANSCRIBER_KEY"),
            youtube_url=_url("YOUTUBE_URL", get("YOUTUBE_URL")) or DEFAULT_YOUTUBE_URL,
            youtube_key=get("YOUTUBE_KEY"),
            embedder_url=_url("EMBEDDER_URL", get("EMBEDDER_URL")) or llm_url,
            embedder_key=get("EMBEDDER_KEY") or get("LLM_KEY"),
            embedder_model=get("EMBEDDER_MODEL") or DEFAULT_EMBEDDER_MODEL,
            timeout_s=_timeout(get("PROVIDER_TIMEOUT_S")),
        )
        config.check()
        return config

    def check(self) -> None:
        """ConfigError when an HTTP provider lacks what it cannot run without."""
        if self.mode("llm") == "http" and not self.llm_model:
            raise ConfigError("CLIPSTREAM_LLM_MODEL is required when the llm provider is http")
        if self.mode("transcriber") == "http" and not self.transcriber_url:
            raise ConfigError(
                "CLIPSTREAM_TRANSCRIBER_URL is required when the transcriber provider is http"
            )
        if self.mode("youtube") == "http" and not self.youtube_key:
            raise ConfigError(
                "CLIPSTREAM_YOUTUBE_KEY is required when the youtube provider is http"
            )


def _modes(raw: str | None) -> dict[ProviderKindName, Mode]:
    modes: dict[ProviderKindName, Mode] = dict.fromkeys(KINDS, "sim")
    if raw is None:
        return modes
    if raw in ("sim", "http"):
        return dict.fromkeys(KINDS, cast(Mode, raw))
    seen: set[str] = set()
    for part in raw.split(","):
        kind, eq, mode = (p.strip() for p in part.partition("="))
        problem = None
        if not eq:
            problem = f"{part.strip()!r} is not kind=mode"
        elif kind not in KINDS:
            problem = f"unknown provider kind {kind!r} (expected {', '.join(KINDS)})"
        elif mode not in ("sim", "http"):
            problem = f"{kind}={mode!r}: expected sim or http"
        elif kind in seen:
            problem = f"{kind} is named twice"
        if problem:
            raise ConfigError(f"CLIPSTREAM_PROVIDERS={raw!r} is invalid: {problem}")
        seen.add(kind)
        modes[cast(ProviderKindName, kind)] = cast(Mode, mode)  # both checked above
    return modes


def _url(name: str, raw: str | None) -> str | None:
    if raw is None:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"CLIPSTREAM_{name}={raw!r} is invalid: expected an http(s) URL")
    if parts.query or parts.fragment:
        raise ConfigError(f"CLIPSTREAM_{name}={raw!r} is invalid: a base URL has no query")
    return raw.rstrip("/")


def _timeout(raw: str | None) -> float:
    if raw is None:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.1 <= value <= 3600:
        raise ConfigError(
            f"CLIPSTREAM_PROVIDER_TIMEOUT_S={raw!r} is invalid: expected 0.1 to 3600 seconds"
        )
    return value
