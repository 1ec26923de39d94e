"""Seconds wherever a client reads a time span (issue 15 #8): an HTTP transcription service may
answer its segments in seconds (``start``/``end``, a Whisper-style answer) or in milliseconds
(``start_ms``/``end_ms``), and either way the transcript and the claims located in it read in
seconds; a claims document stored in milliseconds before reads in seconds too."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec
import pytest

from engine.providers import registry
from engine.providers.config import ProviderConfig
from engine.resources.documents import create_document
from engine.run.worker import Worker
from engine.runtime import Runtime
from projections.projector import Projector
from tests.api.conftest import ApiAccount
from tests.api.test_process import _ok, process_video
from tests.providers.stub import reply, scripted, stub_server

pytestmark = pytest.mark.anyio

# Two segments: (text, start s, end s).
SPANS = [("The river rose two metres overnight.", 0.0, 2.48), ("Markets fell sharply.", 2.48, 5.5)]
WHISPER = {  # the shape of a Whisper-style verbose_json answer: seconds, "duration", extra fields
    "task": "transcribe",
    "language": "english",
    "duration": 5.5,
    "text": " ".join(t for t, _, _ in SPANS),
    "segments": [
        {"id": i, "seek": 0, "start": s, "end": e, "text": t, "tokens": [1, 2]}
        for i, (t, s, e) in enumerate(SPANS)
    ],
}
IN_MS = {
    "duration_s": 5.5,
    "text": WHISPER["text"],
    "segments": [
        {"start_ms": round(s * 1000), "end_ms": round(e * 1000), "text": t} for t, s, e in SPANS
    ],
}
LLM_ANSWER = {
    "model": "stub-model",
    "choices": [{"message": {"content": '["Markets fell sharply.", "Nothing matches this."]'}}],
    "usage": {"prompt_tokens": 40, "completion_tokens": 12},
}


@pytest.mark.parametrize("answer", [WHISPER, IN_MS], ids=["seconds", "milliseconds"])
async def test_a_service_answering_seconds_or_ms_reads_in_seconds(
    client: httpx.AsyncClient,
    runtime: Runtime,
    alice: ApiAccount,
    monkeypatch: pytest.MonkeyPatch,
    answer: dict[str, Any],
) -> None:
    steps = [{"tool_id": "transcribe"}, {"tool_id": "extract_claims"}]
    async with (
        stub_server(scripted(reply(200, answer))) as transcriber,
        stub_server(scripted(reply(200, LLM_ANSWER))) as llm,
    ):
        config = ProviderConfig(
            modes={"transcriber": "http", "llm": "http", "youtube": "sim", "embedder": "sim"},
            transcriber_url=transcriber.url,
            llm_url=llm.url,
            llm_model="stub-model",
        )
        providers = registry.Providers(config)
        monkeypatch.setattr(registry, "_current", providers)
        xid = await process_video(client, alice, steps)
        await Worker(runtime).run_until_idle()
        await providers.aclose()
    await Projector(runtime).run_until_idle()
    detail = await _ok(await client.get(f"/v1/executions/{xid}", headers=alice.key_auth))
    assert detail["execution"]["status"] == "done", detail
    item_id = detail["execution"]["target"]["item_id"]

    transcript = (
        await _ok(await client.get(f"/v1/items/{item_id}/transcript", headers=alice.key_auth))
    )["transcript"]
    assert transcript["segments"] == [{"start": s, "end": e, "text": t} for t, s, e in SPANS]

    want = [
        {"text": "Markets fell sharply.", "start": 2.48, "end": 5.5},
        {"text": "Nothing matches this.", "start": None, "end": None},
    ]
    whole = (await _ok(await client.get(f"/v1/executions/{xid}/steps/1", headers=alice.key_auth)))[
        "step"
    ]
    assert whole["output"]["claims"] == want
    listed = await _ok(
        await client.get(f"/v1/documents?item_id={item_id}&kind=claims", headers=alice.key_auth)
    )
    [document] = listed["documents"]
    shown = await _ok(
        await client.get(f"/v1/documents/{document['document_id']}", headers=alice.key_auth)
    )
    assert shown["document"]["content"]["claims"] == want


async def test_a_claims_document_stored_in_milliseconds_reads_in_seconds(
    client: httpx.AsyncClient, runtime: Runtime, alice: ApiAccount
) -> None:
    stored = {
        "kind": "claims",
        "model": "sim-1",
        "claims": [
            {"text": "Markets fell sharply.", "start_ms": 2480, "end_ms": 5500},
            {"text": "Nothing matches this.", "start_ms": None, "end_ms": None},
        ],
    }
    document = await create_document(
        runtime, alice.account_id, kind="claims", content=msgspec.json.encode(stored)
    )
    shown = await _ok(
        await client.get(f"/v1/documents/{document.document_id}", headers=alice.key_auth)
    )
    assert shown["document"]["content"]["claims"] == [
        {"text": "Markets fell sharply.", "start": 2.48, "end": 5.5},
        {"text": "Nothing matches this.", "start": None, "end": None},
    ]
