"""projections.views.encode_view / decode_view: a view stored and read back is the view folded,
and a step's ``previous`` input (the step before's output, as the worker adds it) is stored once,
as that step's output, not again in the step after it."""

from __future__ import annotations

from typing import Any

import msgspec

from engine.log.events import AnyEvent, BlobRef, StepCompleted, StepStarted
from engine.run import plan
from projections.fold import fold
from projections.views import ExecutionView, decode_view, encode_view, pack_view
from tests.golden.scenarios import requested, stamp

XID = "exc_p1_00000000000000000009"
OWNER = "acc_00000000000000000001"
PROMPT = "a transcript " * 60
SENT = {"prompt": PROMPT, "model": "sim-1", "max_tokens": 800, "system": "be brief"}


def output(index: int) -> dict[str, Any]:
    kinds = ("transcript", "summary", "claims")
    return {"kind": kinds[index], "item_id": "itm_1", "sha256": f"{index:064d}", "sent": SENT}


def three_steps(*, given_previous: dict[str, Any] | None = None) -> list[AnyEvent]:
    """A three-step execution as the worker writes it: each StepStarted's input is
    plan.step_input's (the step before's output under ``previous``), unless the request gave
    step 2 a ``previous`` of its own."""
    req = requested(XID, OWNER, ["transcribe", "summary_review", "extract_claims"])
    inputs: list[dict[str, Any]] = [{"item_id": "itm_1", "lang": "en"} for _ in range(3)]
    if given_previous is not None:
        inputs[1]["previous"] = given_previous
    events: list[AnyEvent] = [msgspec.structs.replace(req, step_inputs=inputs)]
    for index in range(3):
        state = plan.fold(stamp(events))
        started = StepStarted(
            execution_id=XID,
            step_index=index,
            attempt=1,
            epoch=1,
            worker_id="w",
            input=plan.step_input(state, index),
        )
        completed = StepCompleted(
            execution_id=XID,
            step_index=index,
            attempt=1,
            output=output(index),
            output_ref=BlobRef(sha256=f"{index:064d}", size=1000 + index),
        )
        events += [started, completed]
    return stamp(events)


def stored_steps(view: ExecutionView) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = msgspec.json.decode(encode_view(view))["steps"]
    return steps


def test_a_view_reads_back_as_folded_with_each_previous_output_stored_once() -> None:
    view = fold(three_steps())
    assert "previous" in view.steps[2].input  # what the fold holds and the API shows
    assert decode_view(encode_view(view)) == view
    assert decode_view(pack_view(encode_view(view))) == view
    stored = stored_steps(view)
    assert [s.get("input_previous_shared", False) for s in stored] == [False, True, True]
    assert all("previous" not in s["input"] for s in stored)
    assert encode_view(view).count(PROMPT.encode()) == 3  # each step's output, once


def test_every_state_of_the_execution_reads_back_as_folded() -> None:
    events = three_steps()
    for n in range(1, len(events) + 1):
        view = fold(events[:n])
        assert decode_view(encode_view(view)) == view


def test_a_previous_the_request_gave_is_stored_as_given() -> None:
    mine = {"note": "from the client"}
    view = fold(three_steps(given_previous=mine))
    assert view.steps[1].input["previous"] == mine
    assert decode_view(encode_view(view)) == view
    stored = stored_steps(view)
    assert stored[1]["input"]["previous"] == mine
    assert "input_previous_shared" not in stored[1]
    assert stored[2].get("input_previous_shared") is True


def test_a_view_stored_with_every_previous_written_out_still_reads() -> None:
    """Views stored before the previous outputs were shared hold them in full."""
    view = fold(three_steps())
    assert decode_view(msgspec.json.encode(view)) == view
