"""The latency scenario: ``POST /v1/items/{id}/transcript`` at a steady open-loop rate against one
API process, alone or with a worker and a projector on the same box (at their
CLIPSTREAM_BACKGROUND_NICE, as deployed). Latency is measured from each request's scheduled send
time (bench.http_load: no coordinated omission); besides the 202's p50 and p99 it reports the API
process's CPU per 202 and its time runnable but waiting for a core (/proc), and how late the
generator itself wrote the requests. bench.shared_box breaks the shared case down further.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import httpx

from bench.common import (
    PARTITIONS,
    Report,
    bench_role_env,
    bench_settings,
    cpu_seconds,
    rss_mib,
)
from bench.http_load import open_loop, transcript_post
from engine.runtime import Runtime
from tests.processes import Role, wait_http
from tests.servers import free_port


async def bench_latency(
    report: Report, url: str, rate: int, seconds: float, logs: Path, *, alone: bool = False
) -> float:
    """202 latency at ``rate`` req/s: the p99 (ms). ``alone``: the API process only, no worker or
    projector sharing the box."""
    runtime = await Runtime.open(bench_settings(url))
    await runtime.redis.flushall()
    await runtime.close()
    port = free_port()
    env = bench_role_env(url, CLIPSTREAM_PARTITIONS=str(PARTITIONS), CLIPSTREAM_SIM_LATENCY_MS="0")
    api = Role(["api", "--port", str(port)], env, logs / "latency-api.log")
    others = (
        []
        if alone
        else [
            Role(["worker"], env, logs / "latency-w.log"),
            Role(["projector"], env, logs / "latency-proj.log"),
        ]
    )
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
        request = transcript_post(port, item, auth)
        before = process_times(api.proc.pid)
        started = time.perf_counter()
        load = await open_loop("127.0.0.1", port, request, rate=rate, total=total)
        wall_ms = (time.perf_counter() - started) * 1000
        cpu_ms, waited_ms = (
            (after - start) / total
            for after, start in zip(process_times(api.proc.pid), before, strict=True)
        )
        late = sorted(load.late_ms)
        late_p99 = late[int(len(late) * 0.99) - 1]
        latencies = load.latencies_ms
        errors = total - load.statuses.get(202, 0)
        latencies.sort()
        p50 = statistics.median(latencies)
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        where = "API alone" if alone else "worker and projector on the same box"
        report.add(
            f"202 latency p50 / p99 at {rate} req/s, {where} (ms)",
            f"{p50:.1f} / {p99:.1f}",
            f"{total:,} requests over {seconds:.0f}s, {errors} non-202; the generator wrote "
            f"them p99 {late_p99:.1f} ms after their scheduled time; load average "
            f"{os.getloadavg()[0]:.2f}",
        )
        report.add(
            f"API process per 202, {where}: CPU / waiting for a core (ms)",
            f"{cpu_ms:.2f} / {waited_ms:.2f}",
            "where a 202's time goes besides Redis: the process's CPU, and its time runnable "
            "but not running (/proc schedstat: the other processes held the cores); waiting "
            f"{waited_ms * total / wall_ms:.0%} of the run, which every request in flight then "
            "waits through",
        )
        key = "api_alone" if alone else "shared_box"
        report.figures[f"api_cpu_ms_per_202_{key}"] = round(cpu_ms, 3)
        report.figures[f"api_runqueue_wait_ms_per_202_{key}"] = round(waited_ms, 3)
        report.figures[f"latency_202_generator_late_p99_ms_{key}"] = round(late_p99, 2)
        report.rss[f"api (latency run, {where})"] = rss_mib(api.proc.pid)
        return p99
    finally:
        api.terminate()
        for proc in others:
            proc.terminate()


def process_times(pid: int) -> tuple[float, float]:
    """The CPU time (user + system) a process has used and the time it spent runnable but
    waiting for a core, in ms (0 for the wait where the kernel keeps no schedstat)."""
    cpu_ms = cpu_seconds(pid) * 1000
    try:
        waited_ms = int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e6
    except (OSError, IndexError, ValueError):
        waited_ms = 0.0
    return cpu_ms, waited_ms
