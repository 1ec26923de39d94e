"""clipstream benchmarks: one command, one summary table.

    python -m bench.run            # the full run (about 4 minutes on 2 cores)
    python -m bench.run --quick    # smaller numbers, for a smoke test
    python -m bench.run --out bench/results/2026-11-29-pm.md

Every scenario runs against a private redis-server started on a free port (no persistence), with
the roles as separate processes exactly as they are deployed (`clipstream worker`, `projector`,
`api`) and the simulated providers at zero latency. Numbers are taken from the events' own
timestamps where possible, so process start-up is excluded.

Scenarios:
  drain     N one-step transcript executions queued up front, then W worker processes and one
            projector: executions/s (first ExecutionStarted → last ExecutionCompleted), and the
            projection lag behind the log while it runs.
  latency   `POST /v1/items/{id}/transcript` at a steady open-loop rate: 202 latency p50/p99,
            measured from each request's scheduled send time (no coordinated omission).
  replay    `projections.replay.rebuild` over a synthetic log of >= 1,000,000 events: events/s.
  realtime  append -> WebSocket delivery latency p50/p99 with --subscribers (1,000) connected to
            one API process at --event-rate (200) events/s; see bench/realtime.py.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import (
    PARTITIONS,
    THREE_STEPS,
    TRANSCRIPT,
    Report,
    bench_settings,
    rss_mib,
    synthetic_events,
    transcript_request,
)
from bench.http_load import build_request, open_loop
from bench.realtime import bench_realtime
from engine.connection import as_str
from engine.log import codec
from engine.log.events import (
    ExecutionCompleted,
    ExecutionStarted,
)
from engine.log.ids import new_execution_id, new_id
from engine.runtime import Runtime
from tests.processes import Role, role_env, wait_http
from tests.servers import free_port, redis_server

SCENARIOS = ("drain", "workflow", "latency", "replay", "realtime")


async def _preload(
    runtime: Runtime, n: int, tools: tuple[str, ...] = TRANSCRIPT, owners: int = 64
) -> None:
    """Queue ``n`` executions of ``tools`` spread over ``owners`` accounts, 500 at a time."""
    store = runtime.store
    accounts = [new_id("acc") for _ in range(owners)]
    for acc in accounts:
        await store.redis.set(store.keys.balance(acc), 10**15)
    for start in range(0, n, 500):
        batch = []
        for i in range(start, min(n, start + 500)):
            owner = accounts[i % owners]
            request = transcript_request(owner, store.keys.partition(owner), i, tools)
            batch.append(store.request(request))
        await asyncio.gather(*batch)


async def _log_tails(runtime: Runtime) -> dict[int, str]:
    store = runtime.store
    pipe = store.redis.pipeline(transaction=False)
    for p in store.partitions:
        pipe.xinfo_stream(store.keys.log(p))
    infos = await pipe.execute()
    return {
        p: as_str(info["last-generated-id"])
        for p, info in zip(store.partitions, infos, strict=True)
    }


async def _checkpoints(runtime: Runtime) -> dict[int, str]:
    store = runtime.store
    version = int(await store.redis.hget(store.keys.meta, "projection_version") or 1)
    pipe = store.redis.pipeline(transaction=False)
    for p in store.partitions:
        pipe.get(f"{store.keys.view_ns(p, version)}:ckpt")
    return {
        p: as_str(v) if v else "0-0"
        for p, v in zip(store.partitions, await pipe.execute(), strict=True)
    }


# Counting the entries between a checkpoint and the log's end means reading them (a stream has no
# range count): up to 50,000 per partition, which at a 150k-entry lag cost the harness a third of
# a core and Redis as much again, taken from the processes being measured. So it is sampled every
# 2 s (every 8th poll), not every 0.25 s: the peak it reports may be up to 2 s of lag early.
_BEHIND_EVERY = 8


async def _entries_behind(runtime: Runtime, checkpoints: dict[int, str]) -> int:
    store = runtime.store
    pipe = store.redis.pipeline(transaction=False)
    for p, ckpt in checkpoints.items():
        start = "-" if ckpt in ("0", "0-0") else f"({ckpt}"
        pipe.xrange(store.keys.log(p), start, "+", count=50_000)
    return sum(len(rows) for rows in await pipe.execute())


async def bench_drain(
    report: Report,
    url: str,
    n: int,
    workers: int,
    logs: Path,
    *,
    tools: tuple[str, ...] = TRANSCRIPT,
    latency_ms: int = 0,
    label: str = "one-step transcripts/s",
) -> None:
    runtime = await Runtime.open(bench_settings(url))
    await runtime.redis.flushall()
    await runtime.close()
    runtime = await Runtime.open(bench_settings(url))
    try:
        await _preload(runtime, n, tools)
        env = role_env(
            url,
            CLIPSTREAM_PARTITIONS=str(PARTITIONS),
            CLIPSTREAM_SIM_LATENCY_MS=str(latency_ms),
            CLIPSTREAM_WORKER_CONCURRENCY="200",
            CLIPSTREAM_LEASE_MS="15000",
            CLIPSTREAM_HEARTBEAT_MS="3000",
            CLIPSTREAM_CLAIM_INTERVAL_MS="5000",
        )
        procs = [Role(["worker"], env, logs / f"drain{workers}-w{i}.log") for i in range(workers)]
        procs.append(Role(["projector"], env, logs / f"drain{workers}-proj.log"))
        max_behind = 0
        try:
            deadline = time.monotonic() + 600
            polls = 0
            while True:
                await asyncio.sleep(0.25)
                tails = await _log_tails(runtime)
                ckpts = await _checkpoints(runtime)
                if polls % _BEHIND_EVERY == 0:
                    max_behind = max(max_behind, await _entries_behind(runtime, ckpts))
                polls += 1
                if await _all_acked(runtime) and tails == ckpts:
                    views_current = time.time()
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError("drain did not finish within 600 s")
            for proc in procs:
                report.rss[f"{proc.args[0]} (drain, {workers} workers)"] = max(
                    report.rss.get(f"{proc.args[0]} (drain, {workers} workers)", 0.0),
                    rss_mib(proc.proc.pid),
                )
        finally:
            for proc in procs:
                proc.terminate()
        first_start, last_done, completed = await _span(runtime)
        secs = (last_done - first_start) / 1000
        report.add(
            f"drain: {label}, {workers} worker process(es)",
            f"{completed / secs:,.0f}",
            f"{completed:,} of {n:,} executions done in {secs:.1f}s",
        )
        lag_ms = views_current * 1000 - last_done
        report.add(
            f"projection: max entries behind the log ({label}, {workers}w)",
            f"{max_behind:,}",
            f"all views current {lag_ms / 1000:.1f}s after the last completion (±0.25s)",
        )
    finally:
        await runtime.close()


async def _all_acked(runtime: Runtime) -> bool:
    """True when every queued execution has ended (no owner left in a ring, no lease pending) and
    the worker group has read and acknowledged every log entry."""
    store = runtime.store
    for p in store.partitions:
        if await store.redis.llen(store.keys.ring(p)):
            return False
        for stream in (store.keys.work(p), store.keys.log(p)):
            group = (await store.redis.xinfo_groups(stream))[0]
            if int(group["pending"]) or group.get("lag") not in (0, None):
                return False
    return True


async def _span(runtime: Runtime) -> tuple[int, int, int]:
    """(first ExecutionStarted.at, last ExecutionCompleted.at, completions) over all logs."""
    store = runtime.store
    first, last, completed = 2**62, 0, 0
    for p in store.partitions:
        after = "0-0"
        while True:
            entries = await store.read_log(p, after, 10_000)
            if not entries:
                break
            after = entries[-1].entry_id
            for e in entries:
                if isinstance(e.event, ExecutionStarted):
                    first = min(first, e.event.at)
                elif isinstance(e.event, ExecutionCompleted):
                    last = max(last, e.event.at)
                    completed += 1
    return first, last, completed


async def bench_latency(report: Report, url: str, rate: int, seconds: float, logs: Path) -> None:
    runtime = await Runtime.open(bench_settings(url))
    await runtime.redis.flushall()
    await runtime.close()
    port = free_port()
    env = role_env(url, CLIPSTREAM_PARTITIONS=str(PARTITIONS), CLIPSTREAM_SIM_LATENCY_MS="0")
    api = Role(["api", "--port", str(port)], env, logs / "latency-api.log")
    others = [
        Role(["worker"], env, logs / "latency-w.log"),
        Role(["projector"], env, logs / "latency-proj.log"),
    ]
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/healthz", role=api)
        admin = {"Authorization": f"Bearer {env['CLIPSTREAM_ADMIN_TOKEN']}"}
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as http:
            acct = (
                await http.post(
                    "/admin/accounts", json={"name": "bench", "coins": 1e6}, headers=admin
                )
            ).json()
            auth = {"Authorization": f"Bearer {acct['api_key']}"}
            item = (
                await http.post(
                    "/v1/items", json={"source": "https://youtu.be/dQw4w9WgXcQ"}, headers=auth
                )
            ).json()["item"]["item_id"]
            for _ in range(50):  # warm-up: connections, scripts, caches
                await http.post(f"/v1/items/{item}/transcript", json={}, headers=auth)
        total = int(rate * seconds)
        request = build_request(
            "POST",
            f"/v1/items/{item}/transcript",
            f"127.0.0.1:{port}",
            {**auth, "Content-Type": "application/json"},
            b"{}",
        )
        load = await open_loop("127.0.0.1", port, request, rate=rate, total=total)
        latencies = load.latencies_ms
        errors = total - load.statuses.get(202, 0)
        latencies.sort()
        p50 = statistics.median(latencies)
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        report.add(
            f"202 latency p50 / p99 at {rate} req/s (ms)",
            f"{p50:.1f} / {p99:.1f}",
            f"{total:,} requests over {seconds:.0f}s, {errors} non-202",
        )
        report.rss["api (latency run)"] = rss_mib(api.proc.pid)
    finally:
        api.terminate()
        for proc in others:
            proc.terminate()


async def bench_replay(report: Report, url: str, events: int) -> None:
    from projections import replay

    runtime = await Runtime.open(bench_settings(url))
    await runtime.redis.flushall()
    await runtime.close()
    runtime = await Runtime.open(bench_settings(url))
    try:
        store = runtime.store
        owners = [new_id("acc") for _ in range(256)]
        executions = events // 5
        t = time.perf_counter()
        pipe = store.redis.pipeline(transaction=False)
        for i in range(executions):
            owner = owners[i % len(owners)]
            p = store.keys.partition(owner)
            xid = new_execution_id(p)
            for ev in synthetic_events(xid, owner, i):
                pipe.xadd(store.keys.log(p), {"e": codec.encode(ev)})
            if len(pipe) >= 20_000:
                await pipe.execute()
        await pipe.execute()
        print(
            f"  (synthetic log of {executions * 5:,} events written in "
            f"{time.perf_counter() - t:.1f}s)",
            flush=True,
        )
        t = time.perf_counter()
        result = await replay.rebuild(runtime)
        secs = time.perf_counter() - t
        report.add(
            "replay: events folded and written per second",
            f"{executions * 5 / secs:,.0f}",
            f"{executions * 5:,} events, {executions:,} views in {secs:.1f}s (one process)",
        )
        del result
    finally:
        await runtime.close()


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    redis_v = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    redis_v = redis_v.split()[2].removeprefix("v=") if redis_v else "?"
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB, Linux {platform.release()}, "
        f"CPython {platform.python_version()}, Redis {redis_v} on loopback, no persistence"
    )


async def main_async(args: argparse.Namespace) -> Report:
    report = Report()
    n = 5_000 if args.quick else 30_000
    replay_events = 100_000 if args.quick else 1_000_000
    with tempfile.TemporaryDirectory(prefix="cs-bench-") as tmp, redis_server() as server:
        logs = Path(tmp)
        try:
            if "drain" in args.only:
                for workers in (1, 2):
                    await bench_drain(report, server.url, n, workers, logs)
            if "workflow" in args.only:
                await bench_drain(
                    report,
                    server.url,
                    n // 3,
                    1,
                    logs,
                    tools=THREE_STEPS,
                    label="three-step workflows/s, 0 ms providers",
                )
                await bench_drain(
                    report,
                    server.url,
                    2_000 if args.quick else 6_000,
                    1,
                    logs,
                    tools=THREE_STEPS,
                    latency_ms=200,
                    label="three-step workflows/s, 200 ms providers, 200 in flight",
                )
            if "latency" in args.only:
                secs = 3 if args.quick else 10
                await bench_latency(report, server.url, args.rate, secs, logs)
            if "replay" in args.only:
                await bench_replay(report, server.url, replay_events)
            if "realtime" in args.only:
                await bench_realtime(
                    report,
                    server.url,
                    subscribers=100 if args.quick else args.subscribers,
                    rate=args.event_rate,
                    seconds=3 if args.quick else 20,
                    logs=logs,
                )
        except Exception:
            _dump_logs(logs)
            raise
    return report


def _dump_logs(logs: Path) -> None:
    for log in sorted(logs.glob("*.log")):
        print(f"--- {log.name}\n{log.read_text()[-3000:]}", file=sys.stderr)


def render(report: Report, started: dt.datetime) -> str:
    lines = [
        f"# clipstream benchmark — {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {machine()}.",
        "",
        "| measure | result | detail |",
        "|---|---:|---|",
        *(f"| {r.name} | {r.value} | {r.note} |" for r in report.rows),
        "",
        "| process | peak RSS MiB |",
        "|---|---:|",
        *(f"| {name} | {mib:.0f} |" for name, mib in sorted(report.rss.items())),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="clipstream benchmarks (one summary table)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--rate", type=int, default=500, help="requests/s of the latency run")
    parser.add_argument(
        "--subscribers", type=int, default=1_000, help="WebSocket clients of the realtime run"
    )
    parser.add_argument(
        "--event-rate", type=int, default=200, help="events/s appended in the realtime run"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=SCENARIOS,
        default=list(SCENARIOS),
        help="run only these scenarios",
    )
    parser.add_argument("--out", type=Path, help="also write the table (markdown) to this file")
    args = parser.parse_args()
    started = dt.datetime.now(dt.UTC)
    report = asyncio.run(main_async(args))
    text = render(report, started)
    print("\n" + text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
