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
  soak      (only with --only soak) 10 minutes at 220 one-step transcripts/s with the archive on
            a directory and a 60 s hot window: Redis memory flat, bytes kept per finished
            execution, nothing lost, replay from the archive; see bench/soak.py.

drain and workflow are bench/drain.py, realtime is bench/realtime.py, soak is bench/soak.py; this
module runs the others and the command.
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
    Report,
    bench_settings,
    fresh_runtime,
    rss_mib,
    synthetic_events,
)
from bench.drain import bench_drain
from bench.http_load import build_request, open_loop
from bench.realtime import bench_realtime
from bench.soak import bench_soak
from engine.log import codec
from engine.log.ids import new_execution_id, new_id
from engine.runtime import Runtime
from tests.processes import Role, role_env, wait_http
from tests.servers import free_port, redis_server

SCENARIOS = ("drain", "workflow", "latency", "replay", "realtime")
EXTRA_SCENARIOS = ("soak",)  # run only when named: the soak alone takes about 17 minutes


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

    runtime = await fresh_runtime(bench_settings(url))
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
            if "soak" in args.only:
                await bench_soak(report, server.url, logs, quick=args.quick)
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
        choices=SCENARIOS + EXTRA_SCENARIOS,
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
