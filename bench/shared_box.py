"""Where a 202's time goes when the API shares its box with a worker and a projector.

    python -m bench.shared_box                 # 500 req/s for 10 s, API + worker + projector
    python -m bench.shared_box --alone         # the API only
    python -m bench.shared_box --bg-nice 0     # worker and projector at nice 0
    python -m bench.shared_box --realtime redis  # Redis never waits for a core (attribution)

The latency scenario of bench.run, with probes around it:

- the load generator's own lateness: how long after its scheduled time each request was written
  (a starved generator shows up here, not as the server's fault);
- the API's own view: ``clipstream_http_request_duration_seconds`` of the route (request in ->
  first byte out), from its /metrics before and after;
- Redis as any client sees it: a sampler at a real-time priority (bench.pinger) PINGs the private
  server every millisecond, so a long round trip is Redis busy with others' commands or Redis
  waiting for a core, never the sampler waiting;
- Redis's SLOWLOG (every command over --slowlog-us, by script) and its commandstats;
- each process's CPU and its time runnable but waiting for a core (/proc schedstat), and the
  box's CPU used by other programs meanwhile (/proc/stat less ours);
- what the worker and the projector had not caught up with when the load ended.

bench/results/2026-12-05-sharedbox.md reads its output.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from bench.common import (
    PARTITIONS,
    bench_role_env,
    bench_settings,
    role_settings,
    script_names,
    slowlog_by_command,
)
from bench.http_load import open_loop, transcript_post
from engine.runtime import Runtime
from tests.processes import Role, wait_http
from tests.servers import free_port, redis_server

ROUTE = "/v1/items/{item_id}/transcript"


def _times(pid: int) -> tuple[float, float]:
    """(CPU ms, ms runnable but waiting for a core) of ``pid`` so far, all its threads."""
    cpu = waited = 0.0
    tasks = Path(f"/proc/{pid}/task")
    for task in tasks.iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")
            waited += int((task / "schedstat").read_text().split()[1]) / 1e6
        except (OSError, IndexError, ValueError):
            pass
    return cpu, waited


def _busy_ms() -> float:
    """CPU time every process of the box has used so far (ms, all cores; /proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) * 1000 / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, max(0, int(len(values) * q) - 1))]


def _histogram(text: str) -> dict[float, float]:
    """The route's POST duration buckets (le -> count) from a /metrics page."""
    out: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith("clipstream_http_request_duration_seconds_bucket") and ROUTE in line:
            if 'method="POST"' not in line:
                continue
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return out


def _dist(values: list[float]) -> str:
    if not values:
        return "none measured"
    return (
        f"p50 {_pct(values, 0.5):7.2f}  p90 {_pct(values, 0.9):7.2f}  "
        f"p99 {_pct(values, 0.99):7.2f}  max {max(values):7.2f}"
    )


def _start_pinger(port: int, realtime: bool) -> subprocess.Popen[bytes]:
    """bench.pinger on ``port``, a PING a millisecond, at a real-time priority if ``realtime``."""
    prefix = ["chrt", "-f", "50"] if realtime else []
    command = [*prefix, sys.executable, "-m", "bench.pinger", str(port), "1"]
    return subprocess.Popen(command, stdout=subprocess.PIPE)


def _realtime(pid: int) -> None:
    """Put every thread of ``pid`` at a real-time priority (SCHED_FIFO 40): it then never waits
    for a core behind normal processes. A diagnosis, not a deployment: with it, the rest of a
    latency is what that process did not cause by waiting."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setscheduler(int(task.name), os.SCHED_FIFO, os.sched_param(40))


async def _account(base: str, admin_token: str) -> tuple[dict[str, str], str]:
    """An account's auth header and an item of it; 50 warm-up requests (connections, scripts)."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        admin = {"Authorization": f"Bearer {admin_token}"}
        body = {"name": "bench", "coins": 1e6}
        acct = (await http.post("/admin/accounts", json=body, headers=admin)).json()
        auth = {"Authorization": f"Bearer {acct['api_key']}"}
        source = {"source": "https://youtu.be/dQw4w9WgXcQ"}
        item = (await http.post("/v1/items", json=source, headers=auth)).json()["item"]["item_id"]
        for _ in range(50):
            await http.post(f"/v1/items/{item}/transcript", json={}, headers=auth)
    return auth, item


async def _backlog(url: str) -> str:
    """What the worker and the projector had not caught up with when the load ended."""
    from projections import inspection

    runtime = await Runtime.open(bench_settings(url))
    try:
        parts = await inspection.partitions(runtime)
    finally:
        await runtime.close()
    oldest = max((p.oldest_pending_ms or 0) for p in parts)
    return (
        f"{sum(p.queued for p in parts)} executions waiting for a lease (oldest {oldest} ms), "
        f"{sum(p.leased for p in parts)} leased, {sum(p.projection_lag_entries for p in parts)} "
        f"log entries not folded yet (oldest {max(p.projection_lag_ms for p in parts)} ms)"
    )


async def _metrics(base: str) -> dict[float, float]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        return _histogram((await http.get("/metrics")).text)


async def probe(args: argparse.Namespace) -> None:
    """Run the latency scenario with the probes around it and print what they saw."""
    names = script_names()
    with tempfile.TemporaryDirectory(prefix="cs-sharedbox-") as tmp, redis_server() as server:
        logs = Path(tmp)
        r = aioredis.Redis(port=server.port)
        await r.config_set("slowlog-log-slower-than", args.slowlog_us)
        await r.config_set("slowlog-max-len", 1_000_000)
        port = free_port()
        extra = role_settings(args.role_env)
        if args.bg_nice is not None:
            extra["CLIPSTREAM_BACKGROUND_NICE"] = str(args.bg_nice)
        env = bench_role_env(
            server.url, CLIPSTREAM_PARTITIONS=str(PARTITIONS), CLIPSTREAM_SIM_LATENCY_MS="0"
        )
        env |= extra
        api = Role(["api", "--port", str(port)], env, logs / "api.log")
        others = (
            []
            if args.alone
            else [Role(["worker"], env, logs / "w.log"), Role(["projector"], env, logs / "p.log")]
        )
        base = f"http://127.0.0.1:{port}"
        pinger: subprocess.Popen[bytes] | None = None
        try:
            wait_http(f"{base}/healthz", role=api)
            auth, item = await _account(base, env["CLIPSTREAM_ADMIN_TOKEN"])
            hist_before = await _metrics(base)
            request = transcript_post(port, item, auth)
            total = int(args.rate * args.seconds)
            await r.slowlog_reset()
            await r.config_resetstat()
            assert server.proc is not None
            pids = {"api": api.proc.pid, "redis": server.proc.pid, "loadgen": os.getpid()}
            pids |= {role.args[0]: role.proc.pid for role in others}
            for name in args.realtime:  # attribution runs: this one never waits for a core
                _realtime(pids[name])
            pinger = _start_pinger(server.port, args.rt_pinger)
            pids["pinger"] = pinger.pid
            before = {name: _times(pid) for name, pid in pids.items()}
            busy_before = _busy_ms()
            load_before = os.getloadavg()
            t = time.perf_counter()
            load = await open_loop("127.0.0.1", port, request, rate=args.rate, total=total)
            wall = time.perf_counter() - t
            load_after = os.getloadavg()
            after = {name: _times(pid) for name, pid in pids.items()}
            busy = _busy_ms() - busy_before
            pinger.terminate()
            pings = [int(x) / 1000 for x in pinger.communicate()[0].split()]
            pinger = None
            backlog = await _backlog(server.url)
            slow = await r.slowlog_get(1_000_000)
            stats = await r.info("commandstats")
            hist_after = await _metrics(base)
        finally:
            if pinger is not None:
                pinger.terminate()
                pinger.wait()
            api.terminate()
            for role in others:
                role.terminate()
            await r.aclose()

    print(f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f}")
    print(f"{total} requests at {args.rate}/s over {wall:.1f}s; statuses {load.statuses}")
    print(f"client latency ms   {_dist(load.latencies_ms)}")
    print(f"generator late ms   {_dist(load.late_ms)}")
    print(f"Redis PING rtt ms   {_dist(pings)}  ({len(pings)} pings)")
    print(f"when the load ended: {backlog}")
    n = hist_after.get(float("inf"), 0) - hist_before.get(float("inf"), 0)
    cum = " ".join(
        f"<={le * 1000:g}ms:{(hist_after[le] - hist_before.get(le, 0)) / max(n, 1):.1%}"
        for le in sorted(hist_after)
        if le != float("inf") and le <= 1.0
    )
    print(f"API's own duration (in -> first byte), cumulative share: {cum}")
    ours = sum(after[k][0] - before[k][0] for k in pids)
    print(
        f"box CPU busy {busy / wall / 10:.0f}% of one core (of {100 * (os.cpu_count() or 1)}%),"
        f" ours {ours / wall / 10:.0f}%, others' {(busy - ours) / wall / 10:.0f}%"
    )
    print("process     CPU ms/202  wait ms/202  CPU %  wait %")
    for name in pids:
        cpu = after[name][0] - before[name][0]
        wait = after[name][1] - before[name][1]
        print(
            f"{name:<10} {cpu / total:10.3f} {wait / total:12.3f} {cpu / wall / 10:6.1f}"
            f" {wait / wall / 10:6.1f}"
        )
    print(f"SLOWLOG (commands over {args.slowlog_us} µs):")
    by = slowlog_by_command(slow, names)
    for head, durs in sorted(by.items(), key=lambda kv: -sum(kv[1])):
        print(f"  {head:<32} n={len(durs):6d}  sum {sum(durs):8.1f} ms  {_dist(durs)}")
    print("commandstats (top by total µs):")
    rows: list[tuple[str, Any]] = sorted(stats.items(), key=lambda kv: -kv[1]["usec"])
    for name, st in rows[:8]:
        print(
            f"  {name:<28} calls {st['calls']:8d}  usec/call {st['usec_per_call']:8.1f}"
            f"  total {st['usec'] / 1000:8.1f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rate", type=int, default=500, help="requests/s (500)")
    parser.add_argument("--seconds", type=float, default=10, help="how long (10)")
    parser.add_argument("--alone", action="store_true", help="the API only")
    parser.add_argument(
        "--bg-nice",
        type=int,
        default=None,
        help="CLIPSTREAM_BACKGROUND_NICE of the worker and projector (default: theirs)",
    )
    parser.add_argument("--slowlog-us", type=int, default=1000, help="SLOWLOG threshold, µs (1000)")
    parser.add_argument(
        "--no-rt-pinger",
        dest="rt_pinger",
        action="store_false",
        help="run the PING sampler at a normal priority (chrt needs the privilege)",
    )
    parser.add_argument(
        "--realtime",
        action="append",
        default=[],
        choices=["api", "redis", "loadgen", "worker", "projector"],
        help="run this process at a real-time priority (repeatable; needs the privilege): what "
        "is left of the latency is not its waiting for a core",
    )
    parser.add_argument(
        "--role-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a CLIPSTREAM_NAME setting for every role (repeatable), as bench.run's",
    )
    asyncio.run(probe(parser.parse_args()))


if __name__ == "__main__":
    main()
