"""Reporters ``rep_``, their workflows ``wf_`` and the workflows' steps ``stp_``.

A reporter lists its workflows (``repwfs``) and schedules (``repschs``); deleting it deletes them
all in one script. Steps live inside their workflow's record: they are only ever read with it and
replaced in order, so one record keeps a workflow and its steps consistent. Every step names a
catalogue tool and params that validate against the tool's params schema: the caller passes the
check (engine.tools.catalog.check_step), so resources know nothing of tools.

A workflow is addressed through its reporter: another reporter's workflow id is NotFound, and a
reporter's ``default_workflow_id`` must name one of its own workflows (InvalidRequest otherwise).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from engine.clock import now_ms
from engine.errors import EngineError, InvalidRequest, NotFound
from engine.log.ids import is_id, new_id
from engine.resources.records import (
    REPORTERS,
    SCHEDULES,
    WORKFLOWS,
    Reporter,
    Step,
    Workflow,
)
from engine.resources.relations import (
    COLLECTION_SCHEDULES,
    REPORTER_SCHEDULES,
    REPORTER_WORKFLOWS,
)
from engine.resources.schedules import forget_runs
from engine.resources.store import Store, Txn, retrying, revised
from engine.runtime import Runtime

MAX_STEPS = 50

# Checks one step — its tool id, its params, and where the request names it (for the message) —
# and raises InvalidRequest when the step is not one the worker can run.
StepCheck = Callable[[str, dict[str, Any], str], None]


class StepInput(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A step as a client writes it (the server gives it its ``step_id``)."""

    tool_id: str
    prompt_text: str = ""
    params: dict[str, Any] = msgspec.field(default_factory=dict)


def make_steps(
    steps: Sequence[StepInput], check_step: StepCheck, where: str = "steps"
) -> list[Step]:
    """Steps with fresh ids, each passed by ``check_step``; InvalidRequest naming the first bad
    one."""
    if len(steps) > MAX_STEPS:
        raise InvalidRequest(f"{where}: at most {MAX_STEPS} steps")
    out = []
    for index, step in enumerate(steps):
        check_step(step.tool_id, step.params, f"{where}[{index}]")
        out.append(
            Step(
                step_id=new_id("stp"),
                tool_id=step.tool_id,
                prompt_text=step.prompt_text,
                params=step.params,
            )
        )
    return out


# -- reporters -----------------------------------------------------------------------------------


async def create_reporter(runtime: Runtime, owner: str, fields: dict[str, Any]) -> Reporter:
    """Store a new reporter. It has no workflows yet, so a ``default_workflow_id`` is refused."""
    if fields.get("default_workflow_id") is not None:
        raise InvalidRequest("default_workflow_id: not a workflow of this reporter")
    now = now_ms()
    reporter = Reporter(
        reporter_id=new_id("rep"), owner=owner, created_at=now, updated_at=now, **fields
    )
    st = Store(runtime)
    key = st.record(owner, REPORTERS, reporter.reporter_id)
    index = st.index(owner, REPORTERS)
    txn = st.txn().within(index, runtime.settings.quotas.reporters, "reporters")
    await txn.insert(key, reporter, index, reporter.reporter_id).commit()
    return reporter


async def get_reporter(runtime: Runtime, owner: str, reporter_id: str) -> Reporter:
    """The owner's reporter; NotFound when it is missing or someone else's."""
    reporter, _ = await Store(runtime).load(owner, REPORTERS, reporter_id)
    return reporter


async def list_reporters(
    runtime: Runtime, owner: str, *, limit: int, cursor: str | None
) -> tuple[list[Reporter], str | None]:
    """A page of the owner's reporters, newest first, and the next cursor."""
    st = Store(runtime)
    return await st.list(owner, REPORTERS, st.index(owner, REPORTERS), limit=limit, cursor=cursor)


async def update_reporter(
    runtime: Runtime, owner: str, reporter_id: str, changes: dict[str, Any]
) -> Reporter:
    """Apply a partial update; a new ``default_workflow_id`` must be one of its workflows."""
    st = Store(runtime)

    async def attempt() -> Reporter | None:
        current, raw = await st.load(owner, REPORTERS, reporter_id)
        key = st.record(owner, REPORTERS, reporter_id)
        txn = st.txn().unchanged(key, raw)
        default = changes.get("default_workflow_id")
        if default is not None:
            if not is_id(default, WORKFLOWS.prefix) or not await _has_workflow(
                st, owner, reporter_id, default
            ):
                raise InvalidRequest("default_workflow_id: not a workflow of this reporter")
            txn.exists(st.record(owner, WORKFLOWS, default))
        updated = revised(current, changes)
        return updated if await txn.put(key, updated).commit() else None

    return await retrying(attempt)


async def delete_reporter(runtime: Runtime, owner: str, reporter_id: str) -> None:
    """Delete the reporter with its workflows and schedules (and detach those schedules from
    their collections)."""
    st = Store(runtime)

    async def attempt() -> bool | None:
        _, raw = await st.load(owner, REPORTERS, reporter_id)
        key = st.record(owner, REPORTERS, reporter_id)
        workflows_key = st.children(owner, REPORTER_WORKFLOWS, reporter_id)
        schedules_key = st.children(owner, REPORTER_SCHEDULES, reporter_id)
        workflow_ids = await st.members(workflows_key)
        schedule_ids = await st.members(schedules_key)
        txn = st.txn().unchanged(key, raw)
        txn.exactly(workflows_key, workflow_ids).exactly(schedules_key, schedule_ids)
        for workflow_id in workflow_ids:
            txn.delete(st.record(owner, WORKFLOWS, workflow_id))
        for schedule in await st.load_many(owner, SCHEDULES, schedule_ids):
            schedule_key = st.record(owner, SCHEDULES, schedule.schedule_id)
            txn.unchanged(schedule_key, await _raw(st, schedule_key)).delete(schedule_key)
            forget_runs(st, txn, owner, schedule.schedule_id)
            for collection_id in schedule.collection_ids:
                txn.remove(
                    st.children(owner, COLLECTION_SCHEDULES, collection_id), schedule.schedule_id
                )
        txn.delete(workflows_key).delete(schedules_key).delete(key)
        txn.remove(st.index(owner, REPORTERS), reporter_id)
        return True if await txn.commit() else None

    await retrying(attempt)


# -- workflows -----------------------------------------------------------------------------------


async def create_workflow(
    runtime: Runtime,
    owner: str,
    reporter_id: str,
    fields: dict[str, Any],
    steps: Sequence[StepInput] = (),
    *,
    check_step: StepCheck,
) -> Workflow:
    """Store a new workflow under the owner's reporter, with ``steps`` passed by ``check_step``."""
    st = Store(runtime)
    await st.load(owner, REPORTERS, reporter_id)
    now = now_ms()
    workflow = Workflow(
        workflow_id=new_id("wf"),
        reporter_id=reporter_id,
        owner=owner,
        steps=make_steps(steps, check_step),
        created_at=now,
        updated_at=now,
        **fields,
    )
    key = st.record(owner, WORKFLOWS, workflow.workflow_id)
    children = st.children(owner, REPORTER_WORKFLOWS, reporter_id)
    txn = st.txn().exists(st.record(owner, REPORTERS, reporter_id))
    txn.within(children, runtime.settings.quotas.workflows, "workflows in this reporter")
    txn.insert(key, workflow, children, workflow.workflow_id)
    if not await txn.commit():
        raise REPORTERS.missing()  # the reporter was deleted meanwhile
    return workflow


async def get_workflow(
    runtime: Runtime, owner: str, reporter_id: str, workflow_id: str
) -> Workflow:
    """The workflow of the owner's reporter; NotFound otherwise (another reporter's included)."""
    workflow, _ = await _load_workflow(Store(runtime), owner, reporter_id, workflow_id)
    return workflow


async def reporter_workflow(
    runtime: Runtime, owner: str, reporter_id: str, workflow_id: str | None
) -> Workflow:
    """The workflow a reporter runs: ``workflow_id``, else the reporter's default.

    NotFound for a missing reporter or workflow (or another owner's); InvalidRequest when there is
    no default, or the workflow has no steps."""
    reporter = await get_reporter(runtime, owner, reporter_id)
    chosen = workflow_id or reporter.default_workflow_id
    if chosen is None:
        raise InvalidRequest("workflow_id: the reporter has no default workflow; name one")
    workflow = await get_workflow(runtime, owner, reporter_id, chosen)
    if not workflow.steps:
        raise InvalidRequest(f"workflow_id: workflow {workflow.workflow_id} has no steps")
    return workflow


async def list_workflows(
    runtime: Runtime, owner: str, reporter_id: str, *, limit: int, cursor: str | None
) -> tuple[list[Workflow], str | None]:
    """A page of the reporter's workflows, newest first, and the next cursor."""
    st = Store(runtime)
    await st.load(owner, REPORTERS, reporter_id)
    key = st.children(owner, REPORTER_WORKFLOWS, reporter_id)
    return await st.list(owner, WORKFLOWS, key, limit=limit, cursor=cursor)


async def update_workflow(
    runtime: Runtime, owner: str, reporter_id: str, workflow_id: str, changes: dict[str, Any]
) -> Workflow:
    """Apply a partial update (name, target_kind) to the reporter's workflow."""
    return await _rewrite(Store(runtime), owner, reporter_id, workflow_id, lambda wf: changes)


async def delete_workflow(runtime: Runtime, owner: str, reporter_id: str, workflow_id: str) -> None:
    """Delete the reporter's workflow. A schedule that runs it is a conflict (delete or repoint
    the schedule first); a reporter whose default it was is left without a default."""
    st = Store(runtime)

    async def attempt() -> bool | None:
        _, raw = await _load_workflow(st, owner, reporter_id, workflow_id)
        key = st.record(owner, WORKFLOWS, workflow_id)
        reporter, reporter_raw = await st.load(owner, REPORTERS, reporter_id)
        reporter_key = st.record(owner, REPORTERS, reporter_id)
        schedules_key = st.children(owner, REPORTER_SCHEDULES, reporter_id)
        schedule_ids = await st.members(schedules_key)
        txn = st.txn().unchanged(key, raw).unchanged(reporter_key, reporter_raw)
        txn.exactly(schedules_key, schedule_ids)
        for schedule_id in schedule_ids:
            schedule, schedule_raw = await st.load(owner, SCHEDULES, schedule_id)
            if schedule.workflow_id == workflow_id:
                raise WorkflowInUse(f"workflow is run by schedule {schedule_id}")
            txn.unchanged(st.record(owner, SCHEDULES, schedule_id), schedule_raw)
        if reporter.default_workflow_id == workflow_id:
            cleared = msgspec.structs.replace(
                reporter, default_workflow_id=None, updated_at=now_ms()
            )
            txn.put(reporter_key, cleared)
        txn.delete(key).remove(st.children(owner, REPORTER_WORKFLOWS, reporter_id), workflow_id)
        return True if await txn.commit() else None

    await retrying(attempt)


# -- steps ---------------------------------------------------------------------------------------


async def add_step(
    runtime: Runtime,
    owner: str,
    reporter_id: str,
    workflow_id: str,
    step: StepInput,
    *,
    check_step: StepCheck,
) -> tuple[Workflow, Step]:
    """Append one step, passed by ``check_step``, to the workflow; the workflow and the new
    step."""
    [new] = make_steps([step], check_step, "step")
    workflow = await _rewrite(
        Store(runtime),
        owner,
        reporter_id,
        workflow_id,
        lambda wf: {"steps": [*_capped(wf.steps), new]},
    )
    return workflow, new


async def replace_steps(
    runtime: Runtime,
    owner: str,
    reporter_id: str,
    workflow_id: str,
    steps: Sequence[StepInput],
    *,
    check_step: StepCheck,
) -> Workflow:
    """Replace every step of the workflow with ``steps`` (each passed by ``check_step``), in
    order (fresh step ids)."""
    new = make_steps(steps, check_step)
    return await _rewrite(
        Store(runtime), owner, reporter_id, workflow_id, lambda wf: {"steps": new}
    )


async def delete_step(
    runtime: Runtime, owner: str, reporter_id: str, workflow_id: str, step_id: str
) -> Workflow:
    """Remove one step from the workflow; NotFound when it has no such step."""

    def without(wf: Workflow) -> dict[str, Any]:
        kept = [s for s in wf.steps if s.step_id != step_id]
        if len(kept) == len(wf.steps):
            raise NotFound("no such step")
        return {"steps": kept}

    return await _rewrite(Store(runtime), owner, reporter_id, workflow_id, without)


# -- helpers -------------------------------------------------------------------------------------


class WorkflowInUse(EngineError):
    """A workflow a schedule still runs cannot be deleted (409)."""

    code = "conflict"


def _capped(steps: list[Step]) -> list[Step]:
    if len(steps) >= MAX_STEPS:
        raise InvalidRequest(f"steps: at most {MAX_STEPS} steps")
    return steps


async def _raw(st: Store, key: str) -> bytes:
    raw = await st.redis.get(key)
    return bytes(raw) if raw is not None else b""


async def _has_workflow(st: Store, owner: str, reporter_id: str, workflow_id: str) -> bool:
    key = st.children(owner, REPORTER_WORKFLOWS, reporter_id)
    return await st.redis.zscore(key, workflow_id) is not None


async def _load_workflow(
    st: Store, owner: str, reporter_id: str, workflow_id: str
) -> tuple[Workflow, bytes]:
    await st.load(owner, REPORTERS, reporter_id)
    workflow, raw = await st.load(owner, WORKFLOWS, workflow_id)
    if workflow.reporter_id != reporter_id:
        raise WORKFLOWS.missing()
    return workflow, raw


async def _rewrite(
    st: Store,
    owner: str,
    reporter_id: str,
    workflow_id: str,
    change: Callable[[Workflow], dict[str, Any]],
) -> Workflow:
    """Read the workflow, apply ``change(workflow) -> fields`` and write it back if nobody
    changed it meanwhile (else read again)."""

    async def attempt() -> Workflow | None:
        current, raw = await _load_workflow(st, owner, reporter_id, workflow_id)
        updated = revised(current, change(current))
        key = st.record(owner, WORKFLOWS, workflow_id)
        txn: Txn = st.txn().unchanged(key, raw).put(key, updated)
        return updated if await txn.commit() else None

    return await retrying(attempt)
