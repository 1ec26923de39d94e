"""ProviderConfig.from_env: strict parsing, clear errors, keys kept out of repr; and the
Retry-After parser every HTTP provider shares."""

from __future__ import annotations

import datetime as dt

import pytest

from engine.errors import ConfigError
from engine.providers.config import DEFAULT_LLM_URL, ProviderConfig
from engine.providers.http import MAX_RETRY_AFTER_MS, retry_after_ms
from engine.providers.registry import Providers
from engine.providers.sim import SimLLM, SimTranscriber, SimYouTube
from engine.settings import Settings


def test_defaults_are_all_simulated() -> None:
    config = ProviderConfig.from_env({})
    assert [config.mode(k) for k in ("llm", "transcriber", "youtube")] == ["sim"] * 3
    assert config.llm_url == DEFAULT_LLM_URL
    assert config.timeout_s == 60.0


def test_per_kind_modes_and_urls() -> None:
    config = ProviderConfig.from_env(
        {
            "CLIPSTREAM_PROVIDERS": "llm=http, transcriber=sim",
            "CLIPSTREAM_LLM_URL": "http://127.0.0.1:8000/v1/",
            "CLIPSTREAM_LLM_MODEL": "m",
            "CLIPSTREAM_LLM_KEY": "secret-llm-key",
            "CLIPSTREAM_PROVIDER_TIMEOUT_S": "2.5",
        }
    )
    assert (config.mode("llm"), config.mode("transcriber"), config.mode("youtube")) == (
        "http",
        "sim",
        "sim",
    )
    assert config.llm_url == "http://127.0.0.1:8000/v1"
    assert config.timeout_s == 2.5
    assert "secret-llm-key" not in repr(config)


def test_a_bare_mode_applies_to_every_kind() -> None:
    env = {
        "CLIPSTREAM_PROVIDERS": "http",
        "CLIPSTREAM_LLM_MODEL": "m",
        "CLIPSTREAM_TRANSCRIBER_URL": "https://tr.example",
        "CLIPSTREAM_YOUTUBE_KEY": "k",
    }
    config = ProviderConfig.from_env(env)
    assert {config.mode(k) for k in ("llm", "transcriber", "youtube")} == {"http"}


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"CLIPSTREAM_PROVIDERS": "llm=grpc"}, "CLIPSTREAM_PROVIDERS"),
        ({"CLIPSTREAM_PROVIDERS": "video=http"}, "unknown provider kind"),
        ({"CLIPSTREAM_PROVIDERS": "llm"}, "not kind=mode"),
        ({"CLIPSTREAM_PROVIDERS": "llm=sim,llm=http"}, "named twice"),
        ({"CLIPSTREAM_LLM_URL": "ftp://x"}, "CLIPSTREAM_LLM_URL"),
        ({"CLIPSTREAM_YOUTUBE_URL": "https://x/v3?key=1"}, "CLIPSTREAM_YOUTUBE_URL"),
        ({"CLIPSTREAM_PROVIDER_TIMEOUT_S": "0"}, "CLIPSTREAM_PROVIDER_TIMEOUT_S"),
        ({"CLIPSTREAM_PROVIDER_TIMEOUT_S": "soon"}, "CLIPSTREAM_PROVIDER_TIMEOUT_S"),
        ({"CLIPSTREAM_PROVIDERS": "llm=http"}, "CLIPSTREAM_LLM_MODEL"),
        ({"CLIPSTREAM_PROVIDERS": "transcriber=http"}, "CLIPSTREAM_TRANSCRIBER_URL"),
        ({"CLIPSTREAM_PROVIDERS": "youtube=http"}, "CLIPSTREAM_YOUTUBE_KEY"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        ProviderConfig.from_env(env)


def test_registry_serves_what_is_configured() -> None:
    settings = Settings(sim_latency_ms=0)
    sim = Providers()
    assert isinstance(sim.llm(settings), SimLLM)
    assert isinstance(sim.transcriber(settings), SimTranscriber)
    assert isinstance(sim.youtube(settings), SimYouTube)
    http = Providers(ProviderConfig(modes={"llm": "http"}, llm_model="m"))
    assert http.llm(settings) is http.llm(settings)  # one client, reused
    assert isinstance(http.transcriber(settings), SimTranscriber)


NOW = dt.datetime(2025, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("3", 3000),
        ("0.25", 250),
        ("-5", 0),
        ("Wed, 01 Jan 2025 12:00:30 GMT", 30_000),
        ("Wed, 01 Jan 2025 11:00:00 GMT", 0),
        ("999999", MAX_RETRY_AFTER_MS),
        ("tomorrow", None),
        ("nan", None),
    ],
)
def test_retry_after(header: str | None, expected: int | None) -> None:
    assert retry_after_ms(header, now=NOW) == expected
