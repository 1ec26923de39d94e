"""The providers a process uses, one per kind, chosen by :class:`ProviderConfig`.

HTTP providers are built on first use and then reused (one ``httpx.AsyncClient`` each, so
connections are pooled across calls); simulated ones are cheap and built per call from the
worker's :class:`Settings` (their latency and failure rate live there).

The HTTP providers' modules (and httpx, ~8 MiB of a process's memory) are imported when one is
first built: a process that only simulates, or that never calls a provider (the API), does not
load them.

A process uses :func:`current` (built from the environment on first use); a worker calls
:func:`configure` at start so a bad provider setting fails the start, and ``aclose`` at stop.
Tests hand their own :class:`Providers` to a tool through ``ToolContext.providers``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.providers.base import LLM, Embedder, Transcriber, YouTube
from engine.providers.config import ProviderConfig
from engine.providers.sim import SimEmbedder, SimLLM, SimTranscriber, SimYouTube
from engine.settings import Settings

if TYPE_CHECKING:
    import httpx

    from engine.providers.embedder_http import HttpEmbedder
    from engine.providers.llm_http import HttpLLM
    from engine.providers.transcriber_http import HttpTranscriber
    from engine.providers.youtube_http import HttpYouTube


class Providers:
    """One provider per kind: the simulation, or the configured HTTP service."""

    def __init__(
        self,
        config: ProviderConfig | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config or ProviderConfig()
        self.config.check()
        self._transport = transport  # tests: an httpx.MockTransport in place of the network
        self._llm: HttpLLM | None = None
        self._transcriber: HttpTranscriber | None = None
        self._youtube: HttpYouTube | None = None
        self._embedder: HttpEmbedder | None = None

    def llm(self, settings: Settings) -> LLM:
        """The LLM provider."""
        if self.config.mode("llm") == "sim":
            return SimLLM(settings)
        if self._llm is None:
            from engine.providers.llm_http import HttpLLM

            self._llm = HttpLLM(self.config, transport=self._transport)
        return self._llm

    def transcriber(self, settings: Settings) -> Transcriber:
        """The transcriber provider."""
        if self.config.mode("transcriber") == "sim":
            return SimTranscriber(settings)
        if self._transcriber is None:
            from engine.providers.transcriber_http import HttpTranscriber

            self._transcriber = HttpTranscriber(self.config, transport=self._transport)
        return self._transcriber

    def youtube(self, settings: Settings) -> YouTube:
        """The YouTube provider."""
        if self.config.mode("youtube") == "sim":
            return SimYouTube(settings)
        if self._youtube is None:
            from engine.providers.youtube_http import HttpYouTube

            self._youtube = HttpYouTube(self.config, transport=self._transport)
        return self._youtube

    def embedder(self, settings: Settings) -> Embedder:
        """The embeddings provider."""
        if self.config.mode("embedder") == "sim":
            return SimEmbedder(settings)
        if self._embedder is None:
            from engine.providers.embedder_http import HttpEmbedder

            self._embedder = HttpEmbedder(self.config, transport=self._transport)
        return self._embedder

    async def aclose(self) -> None:
        """Close the HTTP providers' connection pools (they are rebuilt if used again)."""
        for provider in (self._llm, self._transcriber, self._youtube, self._embedder):
            if provider is not None:
                await provider.aclose()
        self._llm = self._transcriber = self._youtube = self._embedder = None


_current: Providers | None = None


def current() -> Providers:
    """The process's providers, built from the environment on first use."""
    global _current
    if _current is None:
        _current = Providers(ProviderConfig.from_env())
    return _current


def configure(providers: Providers | None = None) -> Providers:
    """Install ``providers`` (default: built from the environment now, so a bad setting raises
    ConfigError at start) as the process's; returns them."""
    global _current
    _current = providers if providers is not None else Providers(ProviderConfig.from_env())
    return _current
