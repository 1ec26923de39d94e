"""Step summaries as DESIGN §7 says (issue 15 #1): an LLM step's summary (llm_prompt,
summary_review, extract_claims) shows what was sent (the rendered prompt, the model) and what came
back, cut to a stated length with the cut said, and ``GET /v1/executions/{id}/steps/{index}``
returns one step whole."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from api.render import SUMMARY_CHARS
from engine.run.worker import Worker
from engine.runtime import Runtime
from engine.tools.extract_claims import SYSTEM_PROMPT
from engine.tools.summary_review import system_prompt
from projections.projector import Projector
from tests.api.conftest import ApiAccount
from tests.api.test_process import VIDEO, _ok, process_video

pytestmark = pytest.mark.anyio

LONG_PROMPT = "Summarise the video for a newsletter, in plain words. " * 40  # > SUMMARY_CHARS


LLM_STEPS: list[dict[str, Any]] = [
    {"tool_id": "transcribe"},
    {"tool_id": "llm_prompt", "prompt_text": LONG_PROMPT, "params": {"max_tokens": 64}},
]


async def _run(
    client: httpx.AsyncClient,
    runtime: Runtime,
    who: ApiAccount,
    steps: list[dict[str, Any]] = LLM_STEPS,
) -> str:
    xid = await process_video(client, who, steps)
    await Worker(runtime).run_until_idle()
    await Projector(runtime).run_until_idle()
    return xid


async def test_an_llm_step_shows_what_was_sent_and_what_came_back(
    client: httpx.AsyncClient, runtime: Runtime, alice: ApiAccount, bob: ApiAccount
) -> None:
    xid = await _run(client, runtime, alice)
    detail = await _ok(await client.get(f"/v1/executions/{xid}", headers=alice.key_auth))
    assert detail["execution"]["status"] == "done", detail
    transcribe, llm = detail["steps"]

    # The LLM step: its input is the rendered prompt (the step's prompt, then the transcript)
    # and the model, cut to the stated length, the cut said.
    assert set(llm["input"]) >= {"prompt", "model", "max_tokens", "prompt_chars"}
    assert llm["input"]["prompt"] == LONG_PROMPT[:SUMMARY_CHARS]
    assert llm["input"]["model"]
    assert llm["input"]["prompt_chars"] > SUMMARY_CHARS
    assert llm["output"]["kind"] == "completion"
    assert llm["output"]["text"]
    assert "sent" not in llm["output"]
    url = f"/v1/executions/{xid}/steps/1"
    assert llm["cut"] == {"limit": SUMMARY_CHARS, "fields": ["input.prompt"], "detail": url}
    assert transcribe["cut"] is None  # nothing long in it
    assert transcribe["input"]["source"] == VIDEO  # a tool step shows what it was given

    # The step whole: the whole prompt (the step's prompt and the transcript it ran over).
    whole = (await _ok(await client.get(url, headers=alice.key_auth)))["step"]
    transcript = await _ok(
        await client.get(
            f"/v1/items/{detail['execution']['target']['item_id']}/transcript",
            headers=alice.key_auth,
        )
    )
    prompt = whole["input"]["prompt"]
    assert prompt == f"{LONG_PROMPT}\n\n{transcript['transcript']['text']}".strip()
    assert len(prompt) == llm["input"]["prompt_chars"]
    assert whole["input"]["model"] == llm["input"]["model"]
    assert whole["output"]["text"] == llm["output"]["text"]
    assert (whole["usage"], whole["cost_coins"], whole["attempts"]) == (
        llm["usage"],
        llm["cost_coins"],
        llm["attempts"],
    )
    assert whole["errors"] == []
    # A transcribe step whole: its output is the transcript's blob.
    first = (await _ok(await client.get(f"/v1/executions/{xid}/steps/0", headers=alice.key_auth)))[
        "step"
    ]
    assert first["output"]["text"] == transcript["transcript"]["text"]
    assert first["output"]["segments"] == transcript["transcript"]["segments"]  # in seconds

    for missing in (f"/v1/executions/{xid}/steps/2", f"/v1/executions/{xid}/steps/x"):
        assert (await client.get(missing, headers=alice.key_auth)).status_code == 404
    assert (await client.get(url, headers=bob.key_auth)).status_code == 404


async def test_the_document_tools_show_what_they_sent_the_llm(
    client: httpx.AsyncClient, runtime: Runtime, alice: ApiAccount
) -> None:
    """summary_review and extract_claims say what they sent as llm_prompt does: the prompt (the
    step's prompt, then the transcript) cut with the cut said, the model, max_tokens and the
    system prompt; the step whole has the whole prompt, and the document itself as its output."""
    steps: list[dict[str, Any]] = [
        {"tool_id": "transcribe"},
        {"tool_id": "summary_review", "prompt_text": LONG_PROMPT, "params": {"max_tokens": 64}},
        {"tool_id": "extract_claims", "params": {"max_tokens": 128}},
    ]
    xid = await _run(client, runtime, alice, steps)
    detail = await _ok(await client.get(f"/v1/executions/{xid}", headers=alice.key_auth))
    assert detail["execution"]["status"] == "done", detail
    item_id = detail["execution"]["target"]["item_id"]
    text = (await _ok(await client.get(f"/v1/items/{item_id}/transcript", headers=alice.key_auth)))[
        "transcript"
    ]["text"]
    summary, claims = detail["steps"][1:]
    for step, tool, prompt, max_tokens, system in (
        (
            summary,
            "summary_review",
            f"{LONG_PROMPT.strip()}\n\n{text}",
            64,
            system_prompt("medium"),
        ),
        (claims, "extract_claims", text, 128, SYSTEM_PROMPT),
    ):
        assert step["tool_id"] == tool
        given = step["input"]
        assert given["prompt"] == prompt[:SUMMARY_CHARS]
        assert given["prompt_chars"] == len(prompt)
        assert (given["max_tokens"], given["system"]) == (max_tokens, system)
        assert given["model"]
        assert "sent" not in step["output"]  # the output is the document's preview
        assert step["output"]["kind"] == {"summary_review": "summary"}.get(tool, "claims")
        url = f"/v1/executions/{xid}/steps/{step['step_index']}"
        if len(prompt) > SUMMARY_CHARS:
            assert step["cut"] == {
                "limit": SUMMARY_CHARS,
                "fields": ["input.prompt"],
                "detail": url,
            }
        whole = (await _ok(await client.get(url, headers=alice.key_auth)))["step"]
        assert whole["input"] == {
            "prompt": prompt,
            "model": given["model"],
            "max_tokens": max_tokens,
            "system": system,
        }
        assert whole["output"]["kind"] == step["output"]["kind"]
        assert "sent" not in whole["output"]
    assert summary["cut"] is not None  # the long prompt was cut in the summary
    whole_summary = (
        await _ok(await client.get(f"/v1/executions/{xid}/steps/1", headers=alice.key_auth))
    )["step"]
    assert whole_summary["output"]["text"].startswith(summary["output"]["excerpt"])
