"""The OpenAI-compatible LLM against a local stub server: what it sends, and how every kind of
answer becomes a Completion or a ToolError."""

from __future__ import annotations

import datetime as dt
import email.utils
import logging

import pytest

from engine.errors import ToolError
from engine.providers.base import ProviderCall, llm_cost
from engine.providers.config import ProviderConfig
from engine.providers.llm_http import HttpLLM
from tests.providers.stub import reply, scripted, stub_server

pytestmark = pytest.mark.anyio

KEY = "sk-test-secret-0123456789"
CALL = ProviderCall("exe_1:2", 1)
OK = reply(
    200,
    {
        "model": "gpt-test-0613",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there."}}],
        "usage": {"prompt_tokens": 21, "completion_tokens": 4, "total_tokens": 25},
    },
)


def llm(url: str, timeout_s: float = 5.0) -> HttpLLM:
    config = ProviderConfig(
        modes={"llm": "http", "transcriber": "sim", "youtube": "sim"},
        llm_url=f"{url}/v1",
        llm_key=KEY,
        llm_model="gpt-test",
        timeout_s=timeout_s,
    )
    return HttpLLM(config)


async def test_completion_request_and_cost() -> None:
    async with stub_server(scripted(OK)) as server:
        provider = llm(server.url)
        got = await provider.complete(
            prompt="Say hello.", max_tokens=50, call=CALL, system="Be brief."
        )
        await provider.aclose()
    [sent] = server.requests
    assert (sent.method, sent.path) == ("POST", "/v1/chat/completions")
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["idempotency-key"] == "exe_1:2"
    assert sent.json() == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello."},
        ],
        "max_tokens": 50,
    }
    assert got.text == "Hello there."
    assert got.model == "gpt-test-0613"
    assert got.usage == {"prompt_tokens": 21, "completion_tokens": 4}
    assert got.cost == llm_cost(21, 4)


async def test_step_model_overrides_the_configured_one() -> None:
    async with stub_server(scripted(OK)) as server:
        provider = llm(server.url)
        await provider.complete(prompt="x", max_tokens=5, call=CALL, model="other-model")
        await provider.aclose()
    assert server.requests[0].json()["model"] == "other-model"
    assert server.requests[0].json()["messages"] == [{"role": "user", "content": "x"}]


async def test_429_is_retryable_with_retry_after_seconds() -> None:
    answer = reply(429, {"error": {"message": "Rate limit reached"}}, retry_after="7")
    async with stub_server(scripted(answer)) as server:
        provider = llm(server.url)
        with pytest.raises(ToolError) as caught:
            await provider.complete(prompt="x", max_tokens=5, call=CALL)
        await provider.aclose()
    err = caught.value
    assert (err.code, err.retryable, err.retry_after_ms) == ("rate_limited", True, 7000)
    assert "Rate limit reached" in err.message


async def test_429_with_an_http_date_retry_after() -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=120)
    answer = reply(429, {}, retry_after=email.utils.format_datetime(later, usegmt=True))
    async with stub_server(scripted(answer)) as server:
        provider = llm(server.url)
        with pytest.raises(ToolError) as caught:
            await provider.complete(prompt="x", max_tokens=5, call=CALL)
        await provider.aclose()
    assert caught.value.retryable
    assert caught.value.retry_after_ms is not None
    assert 100_000 <= caught.value.retry_after_ms <= 121_000


async def test_500_is_retryable_and_400_is_not() -> None:
    async with stub_server(
        scripted(
            reply(500, b"upstream exploded"), reply(400, {"error": {"message": "bad max_tokens"}})
        )
    ) as server:
        provider = llm(server.url)
        with pytest.raises(ToolError) as first:
            await provider.complete(prompt="x", max_tokens=5, call=CALL)
        with pytest.raises(ToolError) as second:
            await provider.complete(prompt="x", max_tokens=5, call=CALL)
        await provider.aclose()
    assert (first.value.code, first.value.retryable) == ("provider_unavailable", True)
    assert first.value.retry_after_ms is None
    assert "upstream exploded" in first.value.message
    assert (second.value.code, second.value.retryable) == ("provider_rejected", False)
    assert "bad max_tokens" in second.value.message
    assert KEY not in first.value.message + second.value.message


async def test_a_hanging_server_is_a_retryable_timeout() -> None:
    async with stub_server(scripted("hang")) as server:
        provider = llm(server.url, timeout_s=0.2)
        with pytest.raises(ToolError) as caught:
            await provider.complete(prompt="x", max_tokens=5, call=CALL)
        await provider.aclose()
    assert (caught.value.code, caught.value.retryable) == ("timeout", True)


async def test_an_unreadable_200_is_not_retried() -> None:
    async with stub_server(scripted(reply(200, b"<html>proxy</html>"))) as server:
        provider = llm(server.url)
        with pytest.raises(ToolError) as caught:
            await provider.complete(prompt="x", max_tokens=5, call=CALL)
        await provider.aclose()
    assert (caught.value.code, caught.value.retryable) == ("provider_bad_response", False)


async def test_missing_usage_is_estimated() -> None:
    answer = reply(200, {"choices": [{"message": {"content": "abcdefgh"}}]})
    async with stub_server(scripted(answer)) as server:
        provider = llm(server.url)
        got = await provider.complete(prompt="x" * 40, max_tokens=5, call=CALL)
        await provider.aclose()
    assert got.usage == {"prompt_tokens": 10, "completion_tokens": 2}
    assert got.model == "gpt-test"


async def test_the_key_never_reaches_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with stub_server(scripted(reply(401, {"error": {"message": "bad key"}}))) as server:
        provider = llm(server.url)
        with pytest.raises(ToolError):
            await provider.complete(prompt="x", max_tokens=5, call=CALL)
        await provider.aclose()
    assert caplog.records  # httpx did log the request
    assert all(KEY not in r.getMessage() for r in caplog.records)
