"""Realtime latency: append → WebSocket delivery with many subscribers on one (or more) API
process(es), and what each process costs per subscriber.

    python -m bench.run --only realtime                     # 1,000 subscribers, 200 events/s, 20 s
    python -m bench.run --only realtime --subscribers 10000 # the issue's figure
    python -m bench.run --only realtime --quick             # 100 subscribers for 3 s: a smoke run
    python -m bench.realtime --subscribers 10000 --api-processes 2   # two API processes share them
    python -m bench.realtime --subscribers 10000 --profile DIR       # py-spy the API meanwhile

The roles run as deployed: the API (``bench.realtime_api``: ``clipstream api``'s app and uvicorn
configuration, plus its measurements on a signal) and one ``clipstream projector`` (which writes
the feed entries in the same commit as the views), against a private redis-server. Nothing else
shares their event loops:

- the subscribers run in separate processes (``bench.realtime_clients``, 2,500 each; the first
  1,000 in a process of their own so the API's memory can be read at 1,000): one WebSocket per
  owner, permessage-deflate offered as browsers do; each gets its ``reset``, then only its
  owner's events;
- this process is the writer: it appends events as a worker would (expected-seq appends of
  five-event synthetic executions to the execution stream and the partition log), one at a time
  at ``rate`` per second, round-robin over the owners, noting the wall clock just before each.

Three clocks split each delivery: the writer's stamp (append), the feed entry's id (Redis's clock
when the projector added it: "append → feed entry" is the projector's share), the server's stamp
when its write of the message returned (``FeedHub.deliveries``: "feed entry → written" is the
hub's and the API's share) and the client's when the message arrived ("feed entry → client"; the
difference from "→ written" is the socket and the clients' own processes). The API process also
reports its event loop's lag and its GC pauses over the measured window. All on one machine, so
one wall clock. The first second of events warms up and is not counted.

How to read the rows: p50 is the typical wait of a live dashboard; p99 is what one update in a
hundred waits. ``missing`` must be 0 and no connection may be closed early (either is a bug, not
a slow run). Memory: the API process's RSS with 0, 1,000 and all subscribers connected, and its
peak; "per subscriber" is the peak divided by the subscribers (the issue's measure) and, beside
it, the growth over the idle process. CPU shares are of one core, over the measured window.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import anyio
import orjson

from api.auth import mint_session_token
from bench.common import (
    PARTITIONS,
    Report,
    bench_role_env,
    bench_settings,
    cpu_seconds,
    rss_mib,
    synthetic_events,
)
from engine.log.events import AnyEvent, ExecutionRequested
from engine.log.ids import new_execution_id, new_id
from engine.runtime import Runtime
from tests.processes import ROOT, Role, wait_http
from tests.servers import free_port, redis_server

WARMUP_S = 1.0
DRAIN_S = 30.0  # how long deliveries may trail the last append before they count as missing
PER_CLIENT_PROCESS = 2_500  # subscribers per client process
FIRST_STAGE = 1_000  # connected first, in a process of their own: the API's RSS is read there


@dataclass
class Writer:
    """Appends the owners' executions one event at a time, as a worker would."""

    runtime: Runtime
    stamps: dict[tuple[str, int], float] = field(default_factory=dict)  # measured appends
    _current: dict[str, tuple[str, list[AnyEvent], int]] = field(default_factory=dict)

    async def append_next(self, owner: str, *, measured: bool) -> None:
        """The owner's next event; its stamp is kept when ``measured``."""
        xid, events, k = self._current.get(owner) or self._new_execution(owner)
        store = self.runtime.store
        stamp = time.time()
        if k == 0:
            request = events[0]
            assert isinstance(request, ExecutionRequested)
            await store.admission.request(request)
        else:
            await store.log.append(xid, k, [events[k]])
        if measured:
            self.stamps[(xid, k + 1)] = stamp
        self._current[owner] = (xid, events, k + 1)
        if k + 1 == len(events):
            del self._current[owner]

    def _new_execution(self, owner: str) -> tuple[str, list[AnyEvent], int]:
        xid = new_execution_id(self.runtime.store.keys.partition(owner))
        # The store stamps each event's seq and time again as it appends it.
        return xid, synthetic_events(xid, owner, 0), 0


def _allow_open_files(count: int) -> None:
    """Raise this process's open-file limit to ``count`` if the hard limit allows (the processes
    it starts inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < count:
        ceiling = count if hard == resource.RLIM_INFINITY else min(count, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))


def rss_now_mib(pid: int) -> float:
    """Resident memory of a process now (VmRSS), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _schedule(rate: float, count: int) -> Iterator[tuple[int, float]]:
    """(i, the monotonic time event i is due) for an open-loop schedule starting now."""
    t0 = time.monotonic()
    for i in range(count):
        yield i, t0 + i / rate


@dataclass
class CpuMeter:
    """CPU share of some processes over a window (of one core: 100% is one core busy)."""

    pids: dict[str, list[int]]
    _start: dict[str, float] = field(default_factory=dict)
    _t0: float = 0.0

    def _total(self, name: str) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids[name])

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._start = {name: self._total(name) for name in self.pids}

    def shares(self) -> dict[str, float]:
        wall = time.monotonic() - self._t0
        return {name: (self._total(name) - self._start[name]) / wall for name in self.pids}


class ApiProcess:
    """One API process (``bench.realtime_api``) with its measurements file."""

    def __init__(
        self, env: Mapping[str, str], logs: Path, index: int, args: tuple[str, ...] = ()
    ) -> None:
        self.port = free_port()
        self.stats_path = logs / f"realtime-api-{index}.json"
        self.role = Role([], env, logs / f"realtime-api-{index}.log")  # its log file only
        self.role.proc.kill()  # (Role starts `clipstream`; this process is started below)
        self.role.proc.wait()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.realtime_api", "--port", str(self.port),
             "--stats", str(self.stats_path), *args],
            cwd=ROOT, env=dict(env), stdout=self.role._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.role.proc = self.proc

    def clear(self) -> None:
        self.proc.send_signal(signal.SIGUSR2)

    async def stats(self) -> dict[str, Any]:
        """The hub's measurements since the last clear."""
        self.stats_path.unlink(missing_ok=True)
        self.proc.send_signal(signal.SIGUSR1)
        for _ in range(600):  # 30 s
            await anyio.sleep(0.05)
            stats = _read_stats(self.stats_path)
            if stats is not None:
                return stats
        raise RuntimeError(f"the API process wrote no {self.stats_path.name}")

    def stop(self) -> None:
        self.role.terminate()


def _read_stats(path: Path) -> dict[str, Any] | None:
    """The measurements an API process wrote, or None while it has not finished writing."""
    try:
        stats: dict[str, Any] = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return stats


def _profile(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """py-spy recording process ``pid`` for ``seconds`` into ``out`` (raw: folded stacks)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "py-spy"), "record", "--nonblocking", "--format",
         "raw", "--rate", "250", "--duration", str(int(seconds)), "--pid", str(pid), "--output",
         str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip


class ClientProcess:
    """Subscribers in a process of their own (``bench.realtime_clients``)."""

    def __init__(self, urls: list[str], env: Mapping[str, str], logs: Path, index: int) -> None:
        self.count = len(urls)
        urls_file = logs / f"realtime-clients-{index}.urls"
        urls_file.write_text("\n".join(urls))
        self.out = logs / f"realtime-clients-{index}.json"
        self._log = (logs / f"realtime-clients-{index}.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.realtime_clients", str(urls_file), str(self.out)],
            cwd=ROOT, env=dict(env), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._log,
        )  # fmt: skip

    async def wait_line(self, expected: str, deadline_s: float) -> None:
        stdout: IO[bytes] | None = self.proc.stdout
        assert stdout is not None
        line = await anyio.to_thread.run_sync(stdout.readline)
        if not line.decode().startswith(expected):
            raise RuntimeError(f"client process said {line!r}, not {expected!r}")

    async def stop(self) -> dict[str, Any]:
        """Close the subscribers; what they received."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"stop\n")
        self.proc.stdin.flush()
        await self.wait_line("done", 120)
        self.proc.wait(timeout=30)
        self._log.close()
        result: dict[str, Any] = orjson.loads(self.out.read_bytes())
        return result

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


async def _connect(clients: list[ClientProcess]) -> None:
    async with anyio.create_task_group() as tg:
        for client in clients:
            tg.start_soon(client.wait_line, "connected", 600)


async def _write(writer: Writer, owners: list[str], rate: int, seconds: float) -> None:
    """Append at ``rate`` events/s, round-robin over ``owners``: a warm-up second, then
    ``seconds`` of measured events."""
    warmup = int(rate * WARMUP_S)
    for i, due in _schedule(rate, warmup + int(rate * seconds)):
        delay = due - time.monotonic()
        if delay > 0:
            await anyio.sleep(delay)
        await writer.append_next(owners[i % len(owners)], measured=i >= warmup)


@dataclass
class Outcome:
    """What one run measured."""

    subscribers: int
    api_processes: int
    expected: int
    latencies_ms: list[float]
    to_feed_ms: list[float]
    from_feed_ms: list[float]
    written_ms: list[float]
    loop_lag_ms: list[float]
    gc_pauses_ms: list[float]
    gc_full_pauses_ms: list[float]
    closed: dict[int, int]
    cpu: dict[str, float]
    rss_mib: dict[str, float]  # "0", "1000", "all", "peak": summed over the API processes

    @property
    def missing(self) -> int:
        return self.expected - len(self.latencies_ms)

    def p99(self, values: list[float]) -> float:
        ordered = sorted(values)
        return ordered[max(0, int(len(ordered) * 0.99) - 1)] if ordered else math.nan

    def latest(self) -> dict[str, float]:
        """The keys this run gives ``bench/results/latest.json`` (the 10,000-subscriber run on
        one API process only)."""
        if self.subscribers != 10_000 or self.api_processes != 1:
            return {}
        return {
            "realtime_p99_ms_10k": round(self.p99(self.latencies_ms), 1),
            "api_rss_kib_per_subscriber_10k": round(self.rss_mib["peak"] * 1024 / 10_000, 1),
        }


async def run_realtime(
    url: str,
    *,
    subscribers: int,
    rate: int,
    seconds: float,
    logs: Path,
    api_processes: int = 1,
    profile: Path | None = None,
    ws: str | None = None,
) -> Outcome:
    """The scenario against the redis-server at ``url``."""
    _allow_open_files(2 * subscribers + 1_024)
    env = bench_role_env(url, CLIPSTREAM_PARTITIONS=str(PARTITIONS), CLIPSTREAM_SIM_LATENCY_MS="0")
    settings = replace(bench_settings(url), jwt_secret=env["CLIPSTREAM_JWT_SECRET"])
    runtime = await Runtime.open(settings)
    await runtime.redis.flushall()
    await runtime.close()
    runtime = await Runtime.open(settings)  # its store set up again in the empty server
    redis_pid = int((await runtime.redis.info("server"))["process_id"])
    api_args = ("--ws", ws) if ws is not None else ()
    apis = [ApiProcess(env, logs, i, api_args) for i in range(api_processes)]
    projector = Role(["projector"], env, logs / "realtime-proj.log")
    clients: list[ClientProcess] = []
    spy: subprocess.Popen[bytes] | None = None
    try:
        for api in apis:
            wait_http(f"http://127.0.0.1:{api.port}/healthz", role=api.role)
        owners = [new_id("acc") for _ in range(subscribers)]
        pipe = runtime.redis.pipeline(transaction=False)
        for owner in owners:
            pipe.set(runtime.store.keys.balance(owner), 10**15)
        await pipe.execute()
        urls = [
            f"ws://127.0.0.1:{apis[i % len(apis)].port}/v1/realtime?"
            f"token={mint_session_token(runtime, owner)}"
            for i, owner in enumerate(owners)
        ]
        await anyio.sleep(WARMUP_S)
        rss: dict[str, float] = {"0": sum(rss_now_mib(a.proc.pid) for a in apis)}
        first = min(FIRST_STAGE, subscribers)
        clients.append(ClientProcess(urls[:first], env, logs, 0))
        await _connect(clients)
        rss["1000"] = sum(rss_now_mib(a.proc.pid) for a in apis)
        rest = urls[first:]
        more = [
            ClientProcess(rest[i : i + PER_CLIENT_PROCESS], env, logs, 1 + i // PER_CLIENT_PROCESS)
            for i in range(0, len(rest), PER_CLIENT_PROCESS)
        ]
        clients += more
        await _connect(more)
        rss["all"] = sum(rss_now_mib(a.proc.pid) for a in apis)
        await anyio.sleep(WARMUP_S)  # the hub settles on the full set of feeds
        if profile is not None:
            spy = _profile(apis[0].proc.pid, seconds, profile / f"api-{subscribers}.txt")
        writer = Writer(runtime)
        cpu = CpuMeter({
            "api": [a.proc.pid for a in apis],
            "projector": [projector.proc.pid],
            "redis": [redis_pid],
            "clients": [c.proc.pid for c in clients],
            "writer": [os.getpid()],
        })  # fmt: skip
        for api in apis:
            api.clear()
        cpu.start()
        await _write(writer, owners, rate, seconds)
        shares = cpu.shares()
        expected = len(writer.stamps)
        # Wait until the servers have written every measured event (or the drain time passed).
        end = time.monotonic() + DRAIN_S
        while time.monotonic() < end:
            written = sum([(await api.stats())["deliveries"] for api in apis])
            if written >= expected:
                break
            await anyio.sleep(0.5)
        await anyio.sleep(1.0)  # and the clients have read them
        server = [await api.stats() for api in apis]
        rss["peak"] = sum(rss_mib(a.proc.pid) for a in apis)
        received = [await c.stop() for c in clients]
        if spy is not None:
            spy.wait(timeout=120)
    finally:
        for client in clients:
            client.kill()
        if spy is not None and spy.poll() is None:
            spy.kill()
        for api in apis:
            api.stop()
        projector.terminate()
        await runtime.close()
    outcome = Outcome(
        subscribers, api_processes, expected, [], [], [], [], [], [], [], {}, shares, rss
    )
    for stats in server:
        outcome.written_ms += stats["deliveries_ms"]
        outcome.loop_lag_ms += stats["loop_lag_ms"]
        outcome.gc_pauses_ms += stats["gc_pauses_ms"]
        outcome.gc_full_pauses_ms += stats.get("gc_full_pauses_ms", [])
    for result in received:
        for code, n in result["closed"].items():
            outcome.closed[int(code)] = outcome.closed.get(int(code), 0) + n
        for xid, seq, cursor_ms, arrived in result["events"]:
            stamp = writer.stamps.get((xid, seq))
            if stamp is None:
                continue  # a warm-up event
            outcome.latencies_ms.append((arrived - stamp) * 1000)
            outcome.to_feed_ms.append(cursor_ms - stamp * 1000)
            outcome.from_feed_ms.append(arrived * 1000 - cursor_ms)
    return outcome


async def bench_realtime(
    report: Report,
    url: str,
    *,
    subscribers: int,
    rate: int,
    seconds: float,
    logs: Path,
    api_processes: int = 1,
    profile: Path | None = None,
    ws: str | None = None,
) -> dict[str, float]:
    """Run the scenario and add its rows to ``report``; the keys it gives ``latest.json``."""
    outcome = await run_realtime(
        url,
        subscribers=subscribers,
        rate=rate,
        seconds=seconds,
        logs=logs,
        api_processes=api_processes,
        profile=profile,
        ws=ws,
    )
    _add_rows(report, outcome, rate, seconds)
    latest = outcome.latest()
    if latest:
        write_latest(latest)
    return latest


LATEST = Path(__file__).parent / "results" / "latest.json"


def write_latest(values: Mapping[str, float], path: Path = LATEST) -> None:
    """Merge ``values`` into ``bench/results/latest.json`` (other scenarios' keys kept)."""
    current: dict[str, Any] = orjson.loads(path.read_bytes()) if path.exists() else {}
    current.update(values)
    path.write_bytes(orjson.dumps(current, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))


def _percentiles(values: list[float]) -> str:
    """``p50 / p99`` of ``values``, in their unit."""
    if not values:
        return "n/a"
    ordered = sorted(values)
    p99 = ordered[max(0, int(len(ordered) * 0.99) - 1)]
    return f"{statistics.median(ordered):.1f} / {p99:.1f}"


def _add_rows(report: Report, o: Outcome, rate: int, seconds: float) -> None:
    where = f"{o.subscribers:,} subscribers" + (
        f" on {o.api_processes} API processes" if o.api_processes > 1 else ""
    )
    note = f"{o.expected:,} events over {seconds:.0f}s, {o.missing:,} missing"
    closed = sum(n for code, n in o.closed.items() if code != 1000)
    if closed:
        note += f", {closed} connections closed by the server {dict(o.closed)}"
    if not o.latencies_ms:
        report.add(f"realtime: nothing delivered to {where}", "n/a", note)
        return
    report.add(
        f"realtime: append → client p50 / p99 (ms), {where}, {rate}/s",
        _percentiles(o.latencies_ms),
        f"{note}, max {max(o.latencies_ms):.0f} ms",
    )
    report.add(
        "realtime: of which append → feed entry (projector) p50 / p99 (ms)",
        _percentiles(o.to_feed_ms),
        "the feed entry's id is Redis's clock (ms) when the projector added it",
    )
    report.add(
        "realtime: feed entry → written by the server p50 / p99 (ms)",
        _percentiles(o.written_ms),
        "stamped in the API process when its write returned (the hub and the socket write)",
    )
    report.add(
        "realtime: feed entry → client p50 / p99 (ms)",
        _percentiles(o.from_feed_ms),
        "stamped by the clients (other processes); minus the row above: the socket and clients",
    )
    gc_total = sum(o.gc_pauses_ms)
    report.add(
        "realtime: API event-loop lag p50 / p99 (ms), GC pauses",
        _percentiles(o.loop_lag_ms),
        f"lag max {max(o.loop_lag_ms, default=0):.0f} ms; {len(o.gc_pauses_ms)} GC pauses, "
        f"max {max(o.gc_pauses_ms, default=0):.1f} ms, {gc_total:.0f} ms in all; of them "
        f"{len(o.gc_full_pauses_ms)} full, max {max(o.gc_full_pauses_ms, default=0):.1f} ms",
    )
    report.add(
        "realtime: CPU of API / projector / Redis / clients",
        " / ".join(f"{o.cpu[k]:.0%}" for k in ("api", "projector", "redis", "clients")),
        "100% = one core busy; over the measured window",
    )
    per_sub = o.rss_mib["peak"] * 1024 / o.subscribers
    growth = (o.rss_mib["all"] - o.rss_mib["0"]) * 1024 / o.subscribers
    report.add(
        "realtime: API RSS at 0 / 1,000 / all subscribers, peak (MiB)",
        " / ".join(f"{o.rss_mib[k]:.0f}" for k in ("0", "1000", "all", "peak")),
        f"peak {per_sub:.1f} KiB per subscriber; {growth:.1f} KiB each over the idle process",
    )
    report.rss[f"api (realtime, {where})"] = o.rss_mib["peak"]


def main() -> None:
    parser = argparse.ArgumentParser(description="the realtime benchmark alone (bench.realtime)")
    parser.add_argument("--subscribers", type=int, default=1_000)
    parser.add_argument("--event-rate", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--api-processes", type=int, default=1)
    parser.add_argument("--profile", type=Path, help="py-spy the (first) API process into DIR")
    parser.add_argument("--ws", help="uvicorn's WebSocket implementation (default: the API's)")
    args = parser.parse_args()

    async def run() -> Report:
        report = Report()
        with tempfile.TemporaryDirectory(prefix="cs-bench-") as tmp, redis_server() as server:
            await bench_realtime(
                report,
                server.url,
                subscribers=args.subscribers,
                rate=args.event_rate,
                seconds=args.seconds,
                logs=Path(tmp),
                api_processes=args.api_processes,
                profile=args.profile,
                ws=args.ws,
            )
        return report

    anyio.run(run)


if __name__ == "__main__":
    main()
