"""Each new tool run once on the simulated providers: its output shape, how it finds the
transcript before it (or fetches one and pays for it), and its input errors."""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
import pytest

from engine.errors import ToolError
from engine.log.events import StepSpec
from engine.providers.registry import Providers
from engine.settings import Settings
from engine.tools import TOOLS, StepResult, ToolContext
from engine.tools.extract_claims import locate, parse_claims
from engine.tools.summary_review import system_prompt
from engine.tools.youtube import channel_of, video_id_of

pytestmark = pytest.mark.anyio


class Blobs(dict[str, bytes]):
    def put(self, result: StepResult) -> dict[str, Any]:
        """Store ``result``'s blob as the worker would; the ``previous`` the next step sees."""
        assert result.blob is not None
        digest = hashlib.sha256(result.blob).hexdigest()
        self[digest] = result.blob
        ref = {"sha256": digest, "size": len(result.blob)}
        return {"step_index": 0, "tool_id": "?", "output": result.output, "output_ref": ref}

    async def load(self, sha256: str) -> bytes | None:
        return self.get(sha256)


async def run(
    tool_id: str,
    input: dict[str, Any],
    blobs: Blobs | None = None,
    params: dict[str, Any] | None = None,
    prompt: str = "",
) -> StepResult:
    spec = StepSpec(step_id="stp_1", tool_id=tool_id, prompt_text=prompt, params=params or {})
    ctx = ToolContext(
        execution_id="exe_1",
        owner="acc_1",
        step_index=1,
        attempt=1,
        spec=spec,
        input=input,
        settings=Settings(sim_latency_ms=0),
        load_blob=(blobs or Blobs()).load,
        providers=Providers(),
    )
    return await TOOLS[tool_id].run(ctx)


ITEM = {"item_id": "itm_1", "source": "https://youtu.be/dQw4w9WgXcQ", "lang": "en"}


async def test_summary_reads_the_transcript_before_it_without_paying_again() -> None:
    blobs = Blobs()
    transcript = await run("transcribe", ITEM)
    previous = blobs.put(transcript)
    result = await run("summary_review", {"previous": previous}, blobs, prompt="Focus on data.")
    assert set(result.usage) == {"prompt_tokens", "completion_tokens"}  # no audio
    assert result.blob is not None
    doc = msgspec.json.decode(result.blob)
    assert doc["kind"] == "summary"
    assert doc["text"]
    assert doc["instructions"] == "Focus on data."
    assert doc["transcript"] == {"sha256": previous["output_ref"]["sha256"]}
    assert (
        result.output
        == {
            "kind": "summary",
            "item_id": "itm_1",  # named by the transcript before it
            "model": "sim-1",
            "chars": len(doc["text"]),
            "excerpt": doc["text"][:280],
            "transcript_sha256": previous["output_ref"]["sha256"],
            "transcript_chars": previous["output"]["chars"],  # what the next step estimates from
            "sha256": hashlib.sha256(result.blob).hexdigest(),
            "sent": {**doc["sent"], "prompt_chars": len(doc["sent"]["prompt"])},  # short: whole
        }
    )
    transcript_text = msgspec.json.decode(transcript.blob or b"")["text"]
    assert doc["sent"] == {
        "prompt": f"Focus on data.\n\n{transcript_text}",
        "model": "sim-1",
        "max_tokens": 800,
        "system": system_prompt("medium"),
    }
    assert result == await run(
        "summary_review", {"previous": previous}, blobs, prompt="Focus on data."
    )


async def test_summary_fetches_a_transcript_when_there_is_none() -> None:
    result = await run("summary_review", ITEM)
    fetched = await run("transcribe", ITEM)
    assert result.usage["audio_seconds"] == fetched.usage["audio_seconds"]
    llm_part = result.cost - fetched.cost
    assert llm_part > 0
    assert result.usage["prompt_tokens"] > 0
    assert result.blob is not None
    doc = msgspec.json.decode(result.blob)
    assert doc["transcript"]["origin"] == "simulated"
    assert doc["transcript"]["text"] == msgspec.json.decode(fetched.blob or b"")["text"]
    assert result.output["transcript_sha256"] is None


async def test_claims_after_a_summary_follow_it_back_to_the_transcript() -> None:
    blobs = Blobs()
    transcript = await run("transcribe", ITEM)
    summary = await run("summary_review", {"previous": blobs.put(transcript)}, blobs)
    claims = await run("extract_claims", {"previous": blobs.put(summary)}, blobs)
    assert "audio_seconds" not in claims.usage
    assert claims.blob is not None
    doc = msgspec.json.decode(claims.blob)
    segments = msgspec.json.decode(transcript.blob or b"")["segments"]
    assert doc["kind"] == "claims"
    assert doc["claims"]
    assert claims.output["count"] == len(doc["claims"])
    assert claims.output["transcript_sha256"] == summary.output["transcript_sha256"]
    spans = {(s["start_ms"] / 1000, s["end_ms"] / 1000) for s in segments}  # in seconds
    assert all((c["start"], c["end"]) in spans for c in doc["claims"])
    assert all("start_ms" not in c for c in doc["claims"])


async def test_claims_over_supplied_text_cost_only_the_llm() -> None:
    result = await run(
        "extract_claims", {"text": "The sky is blue. Water is wet."}, params={"max_claims": 1}
    )
    assert set(result.usage) == {"prompt_tokens", "completion_tokens"}
    doc = msgspec.json.decode(result.blob or b"")
    assert len(doc["claims"]) == 1
    assert doc["transcript"]["origin"] == "provided"


def test_parse_claims_shapes() -> None:
    assert parse_claims('["A is B.", "C is D.", "a is b."]', 10) == ["A is B.", "C is D."]
    assert parse_claims('```json\n[{"claim": "X."}, {"text": "Y."}]\n```', 10) == ["X.", "Y."]
    assert parse_claims("1. First claim\n- Second claim\n\n* Third", 2) == [
        "First claim",
        "Second claim",
    ]
    assert parse_claims("One thing. Another thing!", 10) == ["One thing.", "Another thing!"]
    assert parse_claims("", 10) == []


def test_locate_picks_the_segment_sharing_most_words() -> None:
    segments = [
        {"start_ms": 0, "end_ms": 1000, "text": "the river rose"},
        {"start_ms": 1000, "end_ms": 2500, "text": "the market fell sharply today"},
        {"start": 2.5, "end": 4, "text": "a segment stored in seconds"},
    ]
    found = locate("Markets: the market fell today", segments)
    assert found == {"text": "Markets: the market fell today", "start": 1.0, "end": 2.5}
    assert locate("in seconds", segments) == {"text": "in seconds", "start": 2.5, "end": 4}
    assert locate("unrelated", segments) == {"text": "unrelated", "start": None, "end": None}


async def test_youtube_metadata_output() -> None:
    result = await run("youtube_metadata", ITEM)
    out = result.output
    assert result.blob is None
    assert out["kind"] == "video_metadata"
    assert out["video_id"] == "dQw4w9WgXcQ"
    assert set(out) == {
        "kind", "video_id", "title", "description", "channel_id", "channel_title",
        "published_at", "duration_s", "tags",
    }  # fmt: skip
    assert result.usage == {"quota_units": 1}
    assert result.cost == 0


async def test_channel_sync_output() -> None:
    result = await run(
        "channel_sync", {"source": "https://www.youtube.com/@newsroom"}, params={"max_videos": 4}
    )
    assert result.blob is not None
    doc = msgspec.json.decode(result.blob)
    assert doc["kind"] == "channel_videos"
    assert len(doc["videos"]) == 4
    assert all(set(v) == {"video_id", "title", "published_at"} for v in doc["videos"])
    assert result.output["count"] == 4
    assert result.output["newest_published_at"] == doc["videos"][0]["published_at"]
    assert result.output["sha256"] == hashlib.sha256(result.blob).hexdigest()


@pytest.mark.parametrize(
    ("tool_id", "input"),
    [
        ("youtube_metadata", {"source": "https://example.com/video"}),
        ("channel_sync", {"source": "https://www.youtube.com/c/legacy-name"}),
        ("summary_review", {}),
    ],
)
async def test_unusable_input_is_not_retryable(tool_id: str, input: dict[str, Any]) -> None:
    with pytest.raises(ToolError) as caught:
        await run(tool_id, input)
    assert caught.value.code == "invalid_input"
    assert not caught.value.retryable


async def test_params_that_do_not_fit_are_invalid_input() -> None:
    with pytest.raises(ToolError) as caught:
        await run("summary_review", ITEM, params={"length": "epic"})
    assert caught.value.code == "invalid_input"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dQw4w9WgXcQ", "dQw4w9WgXcQ"),
        ("https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=10", "dQw4w9WgXcQ"),
        ("https://youtu.be/dQw4w9WgXcQ?si=x", "dQw4w9WgXcQ"),
        ("youtube.com/shorts/dQw4w9WgXcQ", "dQw4w9WgXcQ"),
        ("https://m.youtube.com/embed/dQw4w9WgXcQ", "dQw4w9WgXcQ"),
        ("https://vimeo.com/dQw4w9WgXcQ", None),
        ("https://www.youtube.com/watch?v=short", None),
    ],
)
def test_video_ids(text: str, expected: str | None) -> None:
    assert video_id_of(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("@newsroom", "@newsroom"),
        ("UC" + "x" * 22, "UC" + "x" * 22),
        ("https://www.youtube.com/@newsroom/videos", "@newsroom"),
        ("https://youtube.com/channel/UC" + "y" * 22, "UC" + "y" * 22),
        ("https://example.com/@newsroom", None),
        ("newsroom", None),
    ],
)
def test_channels(text: str, expected: str | None) -> None:
    assert channel_of(text) == expected


async def test_a_blob_the_tool_hashed_names_its_own_bytes() -> None:
    """The worker names a blob by the digest its tool gives (StepResult.blob_sha256), hashing it
    only when the tool did not: that digest must be the blob's, as its preview says."""
    blobs = Blobs()
    transcript = await run("transcribe", ITEM)
    summary = await run("summary_review", {"previous": blobs.put(transcript)}, blobs)
    claims = await run("extract_claims", {"previous": blobs.put(summary)}, blobs)
    embedded = await run("embed", {"previous": blobs.put(transcript)}, blobs)
    for result in (transcript, summary, claims, embedded):
        assert result.blob is not None
        assert result.blob_sha256 == hashlib.sha256(result.blob).hexdigest()
        assert result.output["sha256"] == result.blob_sha256
