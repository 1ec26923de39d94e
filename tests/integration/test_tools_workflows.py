"""The new tools inside real executions: the worker runs multi-step workflows on both backends,
outputs flow forward through the store's blobs, and an HTTP provider is retried with one stable
idempotency key."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from engine.log.events import (
    ExecutionCompleted,
    StepCompleted,
    StepFailed,
    StepRetryScheduled,
    StepSpec,
)
from engine.log.ids import new_id
from engine.log.store import EventStore
from engine.providers import registry
from engine.providers.config import ProviderConfig
from engine.run.worker import Worker
from engine.runtime import Runtime
from tests.integration.test_worker import FEE, of_type, request
from tests.providers.stub import reply, scripted, stub_server

pytestmark = pytest.mark.anyio


def step(tool_id: str, prompt: str = "", **params: Any) -> StepSpec:
    return StepSpec(step_id=new_id("stp"), tool_id=tool_id, prompt_text=prompt, params=params)


async def blob_of(store: EventStore, owner: str, done: StepCompleted) -> Any:
    assert done.output_ref is not None
    data = await store.blobs.get(store.keys.partition(owner), done.output_ref.sha256)
    assert data is not None
    return msgspec.json.decode(data)


async def test_transcript_summary_claims_flow_forward(runtime: Runtime) -> None:
    store = runtime.store
    steps = [step("transcribe"), step("summary_review", "Who is quoted?"), step("extract_claims")]
    req = await request(store, steps)
    await Worker(runtime).run_until_idle()

    history = await store.log.history(req.execution_id)
    assert isinstance(history[-1], ExecutionCompleted)
    transcript, summary, claims = of_type(history, StepCompleted)
    assert [transcript.output["kind"], summary.output["kind"], claims.output["kind"]] == [
        "transcript",
        "summary",
        "claims",
    ]
    assert transcript.output_ref is not None
    # Both documents name the one transcript; neither paid for audio again.
    assert summary.output["transcript_sha256"] == transcript.output_ref.sha256
    assert claims.output["transcript_sha256"] == transcript.output_ref.sha256
    assert "audio_seconds" not in summary.usage
    assert "audio_seconds" not in claims.usage
    claims_doc = await blob_of(store, req.owner, claims)
    summary_doc = await blob_of(store, req.owner, summary)
    assert claims_doc["claims"]
    assert summary_doc["instructions"] == "Who is quoted?"
    assert summary.output["item_id"] == req.target.item_id
    assert history[-1].cost == FEE + transcript.cost + summary.cost + claims.cost


async def test_a_summary_without_a_transcript_step_fetches_one(runtime: Runtime) -> None:
    store = runtime.store
    req = await request(store, [step("summary_review", length="short")])
    await Worker(runtime).run_until_idle()

    history = await store.log.history(req.execution_id)
    [summary] = of_type(history, StepCompleted)
    assert summary.usage["audio_seconds"] > 0
    assert summary.usage["completion_tokens"] > 0
    doc = await blob_of(store, req.owner, summary)
    assert doc["transcript"]["origin"] == "simulated"
    assert doc["length"] == "short"


async def test_youtube_steps(runtime: Runtime) -> None:
    store = runtime.store
    channel = [{"channel": "@newsroom"}]
    meta = await request(store, [step("youtube_metadata")])
    sync = await request(store, [step("channel_sync", max_videos=3)], channel)
    await Worker(runtime).run_until_idle()

    [video] = of_type(await store.log.history(meta.execution_id), StepCompleted)
    assert video.output["kind"] == "video_metadata"
    assert video.output["video_id"] == meta.step_inputs[0]["source"].rsplit("/", 1)[-1]
    [listing] = of_type(await store.log.history(sync.execution_id), StepCompleted)
    doc = await blob_of(store, sync.owner, listing)
    assert len(doc["videos"]) == listing.output["count"] == 3


async def test_http_llm_retried_with_one_idempotency_key(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok = reply(
        200,
        {
            "model": "stub-model",
            "choices": [{"message": {"content": "A reply."}}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 3},
        },
    )
    store = runtime.store
    async with stub_server(scripted(reply(500, {}), reply(429, {}, retry_after="0"), ok)) as server:
        config = ProviderConfig(modes={"llm": "http"}, llm_url=server.url, llm_model="stub-model")
        providers = registry.Providers(config)
        monkeypatch.setattr(registry, "_current", providers)
        req = await request(store, [step("llm_prompt", "Say something.")], [{"text": "Hello."}])
        await Worker(runtime).run_until_idle()
        await providers.aclose()

    history = await store.log.history(req.execution_id)
    assert [(f.code, f.retryable) for f in of_type(history, StepFailed)] == [
        ("provider_unavailable", True),
        ("rate_limited", True),
    ]
    assert len(of_type(history, StepRetryScheduled)) == 2
    [done] = of_type(history, StepCompleted)
    prompt = "Say something.\n\nHello."
    sent = {"prompt": prompt, "model": "stub-model", "max_tokens": 512}
    assert done.output == {
        "kind": "completion",
        "text": "A reply.",
        "model": "stub-model",
        "sent": {**sent, "prompt_chars": len(prompt)},
    }
    assert done.output_ref is not None
    blob = await store.blobs.get(store.keys.partition(req.owner), done.output_ref.sha256)
    assert blob is not None
    assert msgspec.json.decode(blob)["sent"] == sent  # what was sent, whole
    assert done.usage == {"prompt_tokens": 30, "completion_tokens": 3}
    keys = {r.headers["idempotency-key"] for r in server.requests}
    assert keys == {f"{req.execution_id}:0"}
    assert len(server.requests) == 3
    assert isinstance(history[-1], ExecutionCompleted)
