"""Providers behind the tools, one protocol per kind (engine.providers.base):

    kind         sim (default, no network)     http
    transcriber  sim.SimTranscriber            transcriber_http.HttpTranscriber
    llm          sim.SimLLM                    llm_http.HttpLLM (OpenAI-compatible)
    youtube      sim.SimYouTube                youtube_http.HttpYouTube (Data API v3)

Which one serves a kind is configuration (engine.providers.config); engine.providers.registry
builds and reuses them.
"""
