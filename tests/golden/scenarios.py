"""Event histories of typical executions, shared by the fold, golden, projector and chaos tests.

Each scenario returns the events of one execution, stamped with seq and a deterministic time, in
the shapes the API and the worker write. ``python -m tests.golden.scenarios`` rewrites the golden
logs and their expected views from these (review the diff before committing it).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from engine.log import codec
from engine.log.events import (
    DEAD_LETTER_ABANDONED,
    AnyEvent,
    BlobRef,
    CostCharged,
    ExecutionCancelled,
    ExecutionCancelRequested,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionRequested,
    ExecutionRetried,
    ExecutionStarted,
    StepCompleted,
    StepFailed,
    StepRetryScheduled,
    StepSpec,
    StepStarted,
    Target,
    WorkflowSnapshot,
)
from engine.money import billing

T0 = 1_790_000_000_000  # a fixed clock for golden logs
GOLDEN = Path(__file__).resolve().parent


def requested(
    execution_id: str,
    owner: str,
    tools: list[str],
    *,
    item_id: str = "itm_00000000000000000001",
    kind: Any = "transcript",
    reporter_id: str | None = None,
    fee: int = 10_000,
) -> ExecutionRequested:
    """An ExecutionRequested for a workflow running ``tools`` in order."""
    steps = [StepSpec(step_id=f"stp_{i:020d}", tool_id=t) for i, t in enumerate(tools)]
    return ExecutionRequested(
        execution_id=execution_id,
        owner=owner,
        kind=kind,
        target=Target(kind="youtube_video", item_id=item_id, source="https://youtu.be/x"),
        workflow=WorkflowSnapshot(
            workflow_id=None,
            name=kind,
            target_kind="youtube_video",
            steps=steps,
            reporter_id=reporter_id,
        ),
        step_inputs=[
            {"item_id": item_id, "lang": "en"} if t == "transcribe" else {} for t in tools
        ],
        fee=fee,
        request_id="req_00000000000000000000",
        reporter_id=reporter_id,
    )


def transcript_output(item_id: str, lang: str, sha: str) -> dict[str, Any]:
    """The preview a transcribe step completes with (its full text is the blob ``sha``)."""
    return {
        "kind": "transcript",
        "item_id": item_id,
        "lang": lang,
        "chars": 42,
        "segments": 3,
        "sha256": sha,
    }


def stamp(events: list[AnyEvent], t0: int = T0) -> list[AnyEvent]:
    """``events`` with seq 1, 2, 3 … and times 100 ms apart from ``t0``."""
    return [codec.stamp(e, i, t0 + 100 * (i - 1)) for i, e in enumerate(events, 1)]


def transcript_done(xid: str, owner: str, t0: int = T0, lang: str = "en") -> list[AnyEvent]:
    """A one-step transcript that completes with its blob."""
    req = requested(xid, owner, ["transcribe"])
    item = req.target.item_id or ""
    sha = "a" * 64
    return stamp(
        [
            req,
            ExecutionStarted(execution_id=xid, worker_id="w1", epoch=1),
            StepStarted(execution_id=xid, step_index=0, attempt=1, epoch=1, worker_id="w1"),
            StepCompleted(
                execution_id=xid,
                step_index=0,
                attempt=1,
                output=transcript_output(item, lang, sha),
                output_ref=BlobRef(sha256=sha, size=321),
                usage={"audio_seconds": 60},
                cost=3_000,
                duration_ms=180,
            ),
            ExecutionCompleted(execution_id=xid, cost=13_000),
        ],
        t0,
    )


def retried_then_done(xid: str, owner: str, t0: int = T0) -> list[AnyEvent]:
    """A step that fails retryably once, is retried, and completes."""
    return stamp(
        [
            requested(
                xid, owner, ["llm_prompt"], kind="process", reporter_id="rep_00000000000000000001"
            ),
            ExecutionStarted(execution_id=xid, worker_id="w1", epoch=1),
            StepStarted(execution_id=xid, step_index=0, attempt=1, epoch=1, worker_id="w1"),
            StepFailed(
                execution_id=xid,
                step_index=0,
                attempt=1,
                code="provider_failed",
                message="429 from the provider",
                retryable=True,
            ),
            StepRetryScheduled(
                execution_id=xid, step_index=0, next_attempt=2, not_before=t0 + 2_000
            ),
            StepStarted(execution_id=xid, step_index=0, attempt=2, epoch=1, worker_id="w1"),
            StepCompleted(
                execution_id=xid,
                step_index=0,
                attempt=2,
                output={"text": "a summary"},
                usage={"tokens": 900},
                cost=2_500,
            ),
            ExecutionCompleted(execution_id=xid, cost=12_500),
        ],
        t0,
    )


def provider_failed(xid: str, owner: str, t0: int = T0) -> list[AnyEvent]:
    """A step that fails for good: the execution ends in error ``provider_failed``."""
    return stamp(
        [
            requested(xid, owner, ["transcribe", "llm_prompt"]),
            ExecutionStarted(execution_id=xid, worker_id="w1", epoch=1),
            StepStarted(execution_id=xid, step_index=0, attempt=1, epoch=1, worker_id="w1"),
            StepFailed(
                execution_id=xid,
                step_index=0,
                attempt=1,
                code="provider_failed",
                message="the transcriber refused the file",
                retryable=False,
            ),
            ExecutionFailed(
                execution_id=xid, code="provider_failed", message="the transcriber refused"
            ),
        ],
        t0,
    )


def cancelled(xid: str, owner: str, t0: int = T0) -> list[AnyEvent]:
    """Cancelled while its step runs; the partial provider cost is charged."""
    return stamp(
        [
            requested(xid, owner, ["transcribe"]),
            ExecutionStarted(execution_id=xid, worker_id="w1", epoch=1),
            StepStarted(execution_id=xid, step_index=0, attempt=1, epoch=1, worker_id="w1"),
            ExecutionCancelRequested(execution_id=xid, requested_by=owner, reason="changed mind"),
            CostCharged(execution_id=xid, charge_id=f"cost:{xid}:0", amount=700, step_index=0),
            ExecutionCancelled(execution_id=xid, step_index=0),
        ],
        t0,
    )


def three_steps(xid: str, owner: str, t0: int = T0) -> list[AnyEvent]:
    """transcribe → llm_prompt → llm_prompt, all done, one takeover (epoch 2) on the way."""
    req = requested(xid, owner, ["transcribe", "llm_prompt", "llm_prompt"], kind="process")
    item = req.target.item_id or ""
    sha = "b" * 64
    return stamp(
        [
            req,
            ExecutionStarted(execution_id=xid, worker_id="w1", epoch=1),
            StepStarted(execution_id=xid, step_index=0, attempt=1, epoch=1, worker_id="w1"),
            StepCompleted(
                execution_id=xid,
                step_index=0,
                attempt=1,
                output=transcript_output(item, "pt", sha),
                output_ref=BlobRef(sha256=sha, size=999),
                cost=1_000,
            ),
            StepStarted(execution_id=xid, step_index=1, attempt=1, epoch=2, worker_id="w2"),
            StepCompleted(
                execution_id=xid, step_index=1, attempt=1, output={"text": "claims"}, cost=400
            ),
            StepStarted(
                execution_id=xid,
                step_index=2,
                attempt=1,
                epoch=2,
                worker_id="w2",
                input={"previous": "claims"},
            ),
            StepCompleted(
                execution_id=xid, step_index=2, attempt=1, output={"text": "review"}, cost=600
            ),
            ExecutionCompleted(execution_id=xid, cost=12_000),
        ],
        t0,
    )


def insufficient_balance(xid: str, owner: str, t0: int = T0) -> list[AnyEvent]:
    """The first step's estimated cost cannot be covered: error 402, no step ran."""
    return stamp(
        [
            requested(xid, owner, ["transcribe"]),
            ExecutionStarted(execution_id=xid, worker_id="w1", epoch=1),
            ExecutionFailed(
                execution_id=xid,
                code="insufficient_balance",
                message="the balance cannot cover the step",
                http_status=402,
            ),
        ],
        t0,
    )


def uncovered_cost_capped(xid: str, owner: str, t0: int = T0) -> list[AnyEvent]:
    """Provider cost passed through (engine.money.billing): a takeover releases the reservation of
    the attempt a dead worker left open, the next attempt costs more than its reservation and the
    balance together, so its charge is capped and the rest recorded as uncovered."""
    req = requested(
        xid, owner, ["llm_prompt"], kind="process", reporter_id="rep_00000000000000000001"
    )
    first = billing.reservation(xid, 0, 1, 2_000)
    second = billing.reservation(xid, 0, 2, 2_000)
    return stamp(
        [
            req,
            ExecutionStarted(execution_id=xid, worker_id="w1", epoch=1),
            first,
            StepStarted(execution_id=xid, step_index=0, attempt=1, epoch=1, worker_id="w1"),
            *billing.releases([first], "abandoned"),
            second,
            StepStarted(execution_id=xid, step_index=0, attempt=2, epoch=2, worker_id="w2"),
            StepCompleted(
                execution_id=xid,
                step_index=0,
                attempt=2,
                output={"kind": "completion", "text": "a summary", "model": "sim-1"},
                usage={"prompt_tokens": 900, "completion_tokens": 700},
                cost=3_000,
            ),
            *billing.releases([second], "settled"),
            billing.capped(billing.settlement(xid, 0, 2, 3_000), 2_500),
            ExecutionCompleted(execution_id=xid, cost=12_500),
        ],
        t0,
    )


def with_dead_letter_retried(xid: str, owner: str, t0: int = T0) -> list[AnyEvent]:
    """Step 1's workers kept dying: dead-lettered (engine.run.claims), then retried by an
    operator (engine.run.revive); step 1 starts again as attempt 2 and the execution ends done."""
    reason = "delivered 6 times (max 5): dead-lettered as entry 1790000000500-0 of partition 1"
    return stamp(
        [
            requested(xid, owner, ["llm_prompt", "llm_prompt"], kind="process"),
            ExecutionStarted(execution_id=xid, worker_id="w1", epoch=1),
            StepStarted(execution_id=xid, step_index=0, attempt=1, epoch=1, worker_id="w1"),
            StepCompleted(
                execution_id=xid, step_index=0, attempt=1, output={"text": "claims"}, cost=400
            ),
            StepStarted(execution_id=xid, step_index=1, attempt=1, epoch=5, worker_id="w5"),
            StepFailed(
                execution_id=xid,
                step_index=1,
                attempt=1,
                code="internal",
                message=DEAD_LETTER_ABANDONED,
                retryable=False,
            ),
            ExecutionFailed(execution_id=xid, code="internal", message=reason),
            ExecutionRetried(
                execution_id=xid,
                requested_by="cli:ops@host",
                partition=1,
                dead_id="1790000000700-0",
                reason=reason,
            ),
            StepStarted(execution_id=xid, step_index=1, attempt=2, epoch=1, worker_id="w6"),
            StepCompleted(
                execution_id=xid, step_index=1, attempt=2, output={"text": "review"}, cost=600
            ),
            ExecutionCompleted(execution_id=xid, cost=11_000),
        ],
        t0,
    )


def _reserving(xid: str, index: int, attempt: int, epoch: int, estimate: int) -> StepStarted:
    """A StepStarted holding its estimate, as the worker writes it since the money moved onto the
    step's own events."""
    started = StepStarted(
        execution_id=xid,
        step_index=index,
        attempt=attempt,
        epoch=epoch,
        worker_id=f"w{epoch}",
        estimated_cost=estimate,
    )
    return billing.reserving(started)


def settled_one_step(xid: str, owner: str, t0: int = T0) -> list[AnyEvent]:
    """A one-step transcript in five events: the StepStarted holds the estimate, the
    StepCompleted releases it and is charged its actual cost."""
    req = requested(xid, owner, ["transcribe"])
    item = req.target.item_id or ""
    sha = "c" * 64
    started = _reserving(xid, 0, 1, 1, 4_000)
    done = StepCompleted(
        execution_id=xid,
        step_index=0,
        attempt=1,
        output=transcript_output(item, "en", sha),
        output_ref=BlobRef(sha256=sha, size=321),
        usage={"audio_seconds": 60},
        cost=3_000,
        duration_ms=180,
    )
    return stamp(
        [
            req,
            ExecutionStarted(execution_id=xid, worker_id="w1", epoch=1),
            started,
            billing.settled(done, billing.reservation(xid, 0, 1, 4_000)),
            ExecutionCompleted(execution_id=xid, cost=13_000),
        ],
        t0,
    )


def settled_takeover_capped(xid: str, owner: str, t0: int = T0) -> list[AnyEvent]:
    """uncovered_cost_capped in the shape the worker writes now: a takeover releases the
    reservation a dead worker's attempt held, a retryable failure releases its own, and the last
    attempt costs more than its reservation and the balance together (its charge capped, the
    rest uncovered)."""
    req = requested(
        xid, owner, ["llm_prompt"], kind="process", reporter_id="rep_00000000000000000001"
    )
    failed = StepFailed(
        execution_id=xid,
        step_index=0,
        attempt=2,
        code="provider_unavailable",
        message="503 from the provider",
        retryable=True,
    )
    done = StepCompleted(
        execution_id=xid,
        step_index=0,
        attempt=3,
        output={"kind": "completion", "text": "a summary", "model": "sim-1"},
        usage={"prompt_tokens": 900, "completion_tokens": 700},
        cost=3_000,
    )
    return stamp(
        [
            req,
            ExecutionStarted(execution_id=xid, worker_id="w1", epoch=1),
            _reserving(xid, 0, 1, 1, 2_000),
            *billing.releases([billing.reservation(xid, 0, 1, 2_000)], "abandoned"),
            _reserving(xid, 0, 2, 2, 2_000),
            billing.settled(failed, billing.reservation(xid, 0, 2, 2_000)),
            StepRetryScheduled(
                execution_id=xid, step_index=0, next_attempt=3, not_before=t0 + 2_000
            ),
            _reserving(xid, 0, 3, 2, 2_000),
            billing.capped(billing.settled(done, billing.reservation(xid, 0, 3, 2_000)), 2_500),
            ExecutionCompleted(execution_id=xid, cost=12_500),
        ],
        t0,
    )


SCENARIOS: dict[str, Callable[[str, str], list[AnyEvent]]] = {
    "transcript_done": transcript_done,
    "retried_then_done": retried_then_done,
    "provider_failed": provider_failed,
    "cancelled": cancelled,
    "three_steps": three_steps,
    "insufficient_balance": insufficient_balance,
    "uncovered_cost_capped": uncovered_cost_capped,
    "with_dead_letter_retried": with_dead_letter_retried,
    "settled_one_step": settled_one_step,
    "settled_takeover_capped": settled_takeover_capped,
}

GOLDEN_OWNER = "acc_00000000000000000001"


def golden_id(n: int) -> str:
    return f"exc_p1_{n:020d}"


# Scenarios whose logs were recorded in an older shape of the catalogue (before the money moved
# onto the step's own events, engine.log.events): their ``.jsonl`` is kept byte for byte, so old
# logs are proven to still fold; only their expected views are rewritten from them.
FROZEN = frozenset(
    {
        "transcript_done",
        "retried_then_done",
        "provider_failed",
        "cancelled",
        "three_steps",
        "insufficient_balance",
        "uncovered_cost_capped",
    }
)


def write_golden() -> None:
    """Rewrite ``*.jsonl`` (but the frozen ones) and ``*.view.json`` from the scenarios (a
    deliberate act)."""
    from projections.fold import fold
    from tests.rendered import execution_body

    enc = msgspec.json.Encoder()
    for n, (name, scenario) in enumerate(sorted(SCENARIOS.items()), 1):
        log = GOLDEN / f"{name}.jsonl"
        if name in FROZEN and log.exists():
            events = [codec.decode(line) for line in log.read_bytes().splitlines() if line]
        else:
            events = scenario(golden_id(n), GOLDEN_OWNER)
            log.write_bytes(b"".join(codec.encode(e) + b"\n" for e in events))
        view = execution_body(fold(events))
        (GOLDEN / f"{name}.view.json").write_bytes(msgspec.json.format(enc.encode(view)) + b"\n")


if __name__ == "__main__":
    write_golden()
    sys.exit(0)
