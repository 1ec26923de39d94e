"""engine.run.call._called: a tool call that answers without waiting runs bare; one that waits
finishes under the call's scope, its deadline and a cancel request both interrupting it."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from engine.run.call import _called
from engine.run.job import Job
from engine.tools.base import StepResult

pytestmark = pytest.mark.anyio

FAR = 3600.0  # a deadline no test reaches


def job() -> Job:
    return Job(execution_id="exc_p0_x", owner="acc_x", partition=0, entry_id="1-0", epoch=1)


async def test_a_call_that_answers_at_once_needs_no_scope() -> None:
    seen: list[object] = []
    held = job()

    async def answers() -> StepResult:
        seen.append(held.call_scope)
        return StepResult(output={"n": 1})

    result = await _called(answers(), held, anyio.current_time() + FAR)
    assert result == StepResult(output={"n": 1})
    assert seen == [None]
    assert held.call_scope is None


async def test_a_call_that_waits_gets_what_it_waited_for_under_the_scope() -> None:
    held = job()
    seen: list[object] = []
    send, receive = anyio.create_memory_object_stream[int](1)

    async def waits() -> StepResult:
        await anyio.lowlevel.checkpoint()
        seen.append(held.call_scope)
        got = await receive.receive()
        return StepResult(output={"got": got})

    async with send, receive, anyio.create_task_group() as tg:

        async def sender() -> None:
            await send.send(7)

        tg.start_soon(sender)
        result = await _called(waits(), held, anyio.current_time() + FAR)
    assert result == StepResult(output={"got": 7})
    assert len(seen) == 1
    assert isinstance(seen[0], anyio.CancelScope)
    assert held.call_scope is None


async def test_a_call_still_waiting_at_its_deadline_is_interrupted() -> None:
    held = job()

    async def hangs() -> StepResult:
        await anyio.sleep_forever()
        raise AssertionError("never")

    assert await _called(hangs(), held, anyio.current_time() + 0.01) is None
    assert held.call_scope is None


async def test_a_cancel_request_interrupts_a_waiting_call() -> None:
    held = job()
    cleaned: list[bool] = []
    waiting = anyio.Event()

    async def hangs() -> StepResult:
        try:
            waiting.set()
            await anyio.sleep_forever()
        finally:
            cleaned.append(True)
        raise AssertionError("never")

    async with anyio.create_task_group() as tg:

        async def cancel_when_waiting() -> None:
            await waiting.wait()
            assert held.call_scope is not None
            held.interrupt()

        tg.start_soon(cancel_when_waiting)
        result = await _called(hangs(), held, anyio.current_time() + FAR)
    assert result is None
    assert cleaned == [True]


async def test_a_call_already_cancelled_is_interrupted_at_its_first_wait() -> None:
    held = job()
    held.cancel_seen = True

    async def hangs() -> StepResult:
        await anyio.sleep_forever()
        raise AssertionError("never")

    assert await _called(hangs(), held, anyio.current_time() + FAR) is None


async def test_what_a_waiting_call_raises_reaches_the_caller() -> None:
    async def fails() -> StepResult:
        await anyio.lowlevel.checkpoint()
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await _called(fails(), job(), anyio.current_time() + FAR)
