"""What the benchmarks share: the report table, settings, a runtime on an emptied Redis, the
synthetic executions they queue and the memory probe."""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from engine.log import codec
from engine.log.events import (
    AnyEvent,
    ExecutionCompleted,
    ExecutionRequested,
    ExecutionStarted,
    StepCompleted,
    StepSpec,
    StepStarted,
    Target,
    WorkflowSnapshot,
)
from engine.log.ids import new_execution_id, new_id
from engine.runtime import Runtime
from engine.settings import Settings
from tests.processes import role_env

PARTITIONS = 16

# CLIPSTREAM_* settings given to every role process the scenarios start, over their own
# (bench.run --role-env NAME=VALUE): to measure a setting side by side with its default.
ROLE_ENV: dict[str, str] = {}


def bench_role_env(url: str, **overrides: str) -> dict[str, str]:
    """The environment of a role process of a scenario: tests.processes.role_env with the
    scenario's ``overrides``, then :data:`ROLE_ENV`."""
    return role_env(url, **overrides) | ROLE_ENV


@dataclass
class Result:
    name: str
    value: str
    note: str = ""


@dataclass
class Report:
    rows: list[Result] = field(default_factory=list)
    rss: dict[str, float] = field(default_factory=dict)
    # The machine-readable figures written to bench/results/latest.json (None: not measured).
    figures: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, value: str, note: str = "") -> None:
        self.rows.append(Result(name, value, note))
        print(f"  {name:<52} {value:>14}  {note}", flush=True)


def bench_settings(url: str) -> Settings:
    return replace(Settings(), redis_url=url, partitions=PARTITIONS, sim_latency_ms=0)


async def fresh_runtime(settings: Settings) -> Runtime:
    """A runtime on the emptied Redis of ``settings``: every scenario starts from nothing. It is
    opened again after the flush, so its store sets itself up (groups, scripts) in the empty
    server."""
    runtime = await Runtime.open(settings)
    await runtime.redis.flushall()
    await runtime.close()
    return await Runtime.open(settings)


TRANSCRIPT = ("transcribe",)
THREE_STEPS = ("transcribe", "summary_review", "extract_claims")


def transcript_request(
    owner: str, partition: int, i: int, tools: tuple[str, ...] = TRANSCRIPT
) -> ExecutionRequested:
    item_id = new_id("itm")
    return ExecutionRequested(
        execution_id=new_execution_id(partition),
        owner=owner,
        kind="transcript",
        target=Target(kind="youtube_video", item_id=item_id, external_id=f"vid{i:08d}"),
        workflow=WorkflowSnapshot(
            workflow_id=None,
            name="+".join(tools),
            target_kind="youtube_video",
            steps=[
                StepSpec(step_id=f"step_{n}", tool_id=tool, params={"lang": "en"})
                for n, tool in enumerate(tools, 1)
            ],
        ),
        step_inputs=[
            {
                "item_id": item_id,
                "source": f"https://youtu.be/vid{i:08d}",
                "external_id": f"vid{i:08d}",
                "lang": "en",
                "text": None,
            }
            for _ in tools
        ],
        fee=10_000,
        request_id=new_id("req"),
    )


def runs_note(rates: Sequence[float], what: str = "runs") -> str:
    """The rates behind a median, in the order they were measured ("" for a single one)."""
    if len(rates) < 2:
        return ""
    return f"median of {len(rates)} {what}: " + " / ".join(f"{rate:,.0f}" for rate in rates)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    """Peak resident memory of a process (VmHWM), MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def synthetic_events(execution_id: str, owner: str, i: int) -> list[AnyEvent]:
    req = transcript_request(owner, 0, i)
    req = replace_struct(req, execution_id=execution_id)
    now = 1_790_000_000_000 + i
    return [
        codec.stamp(req, 1, now),
        codec.stamp(
            ExecutionStarted(execution_id=execution_id, worker_id="bench", epoch=1), 2, now
        ),
        codec.stamp(
            StepStarted(
                execution_id=execution_id, step_index=0, attempt=1, epoch=1, worker_id="bench"
            ),
            3,
            now,
        ),
        codec.stamp(
            StepCompleted(
                execution_id=execution_id,
                step_index=0,
                attempt=1,
                output={"kind": "note", "chars": 42},
                cost=1_200,
            ),
            4,
            now,
        ),
        codec.stamp(ExecutionCompleted(execution_id=execution_id, cost=11_200), 5, now),
    ]


def replace_struct(event: ExecutionRequested, **changes: Any) -> ExecutionRequested:
    import msgspec

    return msgspec.structs.replace(event, **changes)


async def write_synthetic_log(runtime: Runtime, events: int, owners: int = 256) -> int:
    """Append ``events`` (rounded down to whole executions of 5) to the partition logs, as a
    finished one-step execution each, pipelined; the number of executions."""
    store = runtime.store
    accounts = [new_id("acc") for _ in range(owners)]
    executions = events // 5
    pipe = store.redis.pipeline(transaction=False)
    for i in range(executions):
        owner = accounts[i % owners]
        p = store.keys.partition(owner)
        xid = new_execution_id(p)
        for ev in synthetic_events(xid, owner, i):
            pipe.xadd(store.keys.log(p), {"e": codec.encode(ev)})
        if len(pipe) >= 20_000:
            await pipe.execute()
    await pipe.execute()
    return executions


def role_settings(items: list[str]) -> dict[str, str]:
    """``--role-env`` values (``NAME=VALUE``, NAME with or without its CLIPSTREAM_ prefix) as
    the environment variables they set; ValueError naming a malformed one."""
    out: dict[str, str] = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise ValueError(f"--role-env {item!r}: expected NAME=VALUE")
        out[f"CLIPSTREAM_{name.strip().removeprefix('CLIPSTREAM_')}"] = value
    return out


def script_names() -> dict[str, str]:
    """sha1 -> module.NAME, for every Lua script text a module of engine, projections or api
    holds (the SLOWLOG shows EVALSHA with the sha only)."""
    import importlib
    import pkgutil

    names: dict[str, str] = {}
    for package in ("engine", "projections", "api"):
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, f"{package}."):
            if info.name.endswith("__main__"):
                continue
            try:
                module = importlib.import_module(info.name)
            except Exception:  # an optional dependency missing: its scripts stay unnamed
                continue
            for name, value in vars(module).items():
                if isinstance(value, str) and "redis.call" in value:
                    sha = hashlib.sha1(value.encode()).hexdigest()
                    names.setdefault(sha, f"{info.name.rsplit('.', 1)[-1]}.{name}")
    import limits

    lua = Path(limits.__file__).parent / "resources" / "redis" / "lua_scripts"
    for path in lua.glob("*.lua"):  # the rate limiter's (api.rate_limits)
        names[hashlib.sha1(path.read_bytes()).hexdigest()] = f"limits.{path.stem}"
    return names


def slowlog_by_command(slow: list[dict[str, Any]], names: dict[str, str]) -> dict[str, list[float]]:
    """SLOWLOG entries' durations (ms) by command, scripts by their name."""
    by: dict[str, list[float]] = defaultdict(list)
    for entry in slow:
        raw = entry["command"]
        words = (raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)).split()
        head = words[0].upper() if words else "?"
        if head in ("EVALSHA", "EVAL") and len(words) > 1:
            head = names.get(words[1], f"script {words[1][:10]}")
        by[head].append(entry["duration"] / 1000)
    return by
