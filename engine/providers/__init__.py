"""Providers behind the tools: ``sim`` (deterministic, no network) today; HTTP providers (an
OpenAI-compatible LLM, a transcription service, the YouTube Data API) plug in beside it."""
