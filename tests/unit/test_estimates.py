"""Every tool's cost estimate is within twice what an attempt costs on the simulated providers,
either way (the worker reserves the estimate and settles the actual cost, charging past the
reservation up to the balance: engine.money.billing), for random inputs, prompts and params; the
request path gives the video's length the simulation knows as ``duration_s``."""

from __future__ import annotations

from typing import Any

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.log.events import StepSpec
from engine.providers.sim import _sim_transcript
from engine.tools import TOOLS
from tests.unit.test_tools_outputs import Blobs, run

_words = st.lists(st.sampled_from(["budget", "vote", "ünïcode", "river", "!", "\n"]), max_size=400)
text = _words.map(" ".join)
prompt = st.text(max_size=300)


def _item(n: int, lang: str) -> dict[str, Any]:
    source = f"https://youtu.be/{n:011d}"
    seconds = _sim_transcript(source, lang)[1]
    return {"item_id": f"itm_{n}", "source": source, "lang": lang, "duration_s": seconds}


item = st.builds(
    _item,
    st.integers(0, 10**9),
    st.sampled_from(["en", "pt", "de"]),
)
_CHECKS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(
    tool_id: str,
    input: dict[str, Any],
    blobs: Blobs,
    params: dict[str, Any] | None = None,
    prompt: str = "",
) -> None:
    spec = StepSpec(step_id="stp_1", tool_id=tool_id, prompt_text=prompt, params=params or {})
    estimate = TOOLS[tool_id].estimate_cost(input, spec)
    cost = anyio.run(run, tool_id, input, blobs, params, prompt).cost
    assert estimate <= 2 * cost, (tool_id, cost, estimate)
    assert cost <= 2 * estimate, (tool_id, cost, estimate)


@_CHECKS
@given(item=item)
def test_transcribe_estimate_covers_the_transcriber(item: dict[str, Any]) -> None:
    _check("transcribe", item, Blobs())


@_CHECKS
@given(
    context=st.one_of(text, st.none()),
    prompt=prompt,
    max_tokens=st.integers(1, 8192),
    before=st.sampled_from([None, "inline", "transcript"]),
    item=item,
)
def test_llm_prompt_estimate_covers_the_completion(
    context: str | None, prompt: str, max_tokens: int, before: str | None, item: dict[str, Any]
) -> None:
    blobs = Blobs()
    input: dict[str, Any] = {} if context is None else {"text": context}
    if before == "inline":
        output = {"text": f"x{context or ''}"}
        input["previous"] = {"step_index": 0, "tool_id": "?", "output": output}
    elif before == "transcript":
        input["previous"] = blobs.put(anyio.run(run, "transcribe", item, blobs))
    if not (prompt.strip() or (context or "").strip() or before):
        return  # no prompt and no input: the tool refuses before calling the LLM
    _check("llm_prompt", input, blobs, {"max_tokens": max_tokens}, prompt)


@_CHECKS
@given(
    tool_id=st.sampled_from(["summary_review", "extract_claims"]),
    source=st.sampled_from(["fetch", "text", "transcript", "document"]),
    context=text.filter(lambda t: any(c.isalpha() for c in t)),
    prompt=prompt,
    max_tokens=st.integers(16, 8192),
    item=item,
)
def test_document_estimates_cover_the_llm_and_a_fetched_transcript(
    tool_id: str, source: str, context: str, prompt: str, max_tokens: int, item: dict[str, Any]
) -> None:
    blobs = Blobs()
    input: dict[str, Any] = dict(item)
    if source == "text":
        input["text"] = context
    elif source in ("transcript", "document"):
        input = {"previous": blobs.put(anyio.run(run, "transcribe", item, blobs))}
        if source == "document":  # claims after a summary: it hops to the summary's transcript
            input = {"previous": blobs.put(anyio.run(run, "summary_review", input, blobs))}
    _check(tool_id, input, blobs, {"max_tokens": max_tokens}, prompt)


def test_youtube_tools_cost_nothing() -> None:
    for tool_id in ("youtube_metadata", "channel_sync"):
        assert TOOLS[tool_id].estimate_cost({}, StepSpec(step_id="s", tool_id=tool_id)) == 0
