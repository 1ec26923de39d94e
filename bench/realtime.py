"""Realtime latency: append → WebSocket delivery with many subscribers on one API process.

    python -m bench.run --only realtime                 # 1,000 subscribers, 200 events/s, 20 s
    python -m bench.run --only realtime --quick         # 100 subscribers for 3 s: a smoke run
    python -m bench.run --only realtime --subscribers 2000 --event-rate 500

The roles run as deployed: one ``clipstream api`` process (its feed hub tails every subscribed
owner's feed with one XREAD and fans out to the WebSockets) and one ``clipstream projector``
(which writes the feed entries in the same commit as the views), against a private redis-server.
This process plays the rest:

- ``subscribers`` WebSocket clients (``websockets``, permessage-deflate negotiated as browsers
  do), one per owner: each gets its ``reset``, then only its owner's events;
- a writer that appends events as a worker would (expected-seq appends of five-event synthetic
  executions to the execution stream and the partition log), one event at a time at ``rate``
  per second, round-robin over the owners, and notes the wall clock just before each append.

A delivery's latency is the wall clock when its message arrives minus that stamp, so it covers
the append round trip, the projector's poll interval and fold, the feed XADD, the hub's XREAD and
fan-out, the WebSocket write and the client's read. The message's cursor is the feed entry's id,
whose milliseconds are Redis's clock (the same machine's) when the projector added it: that
splits each latency into "append → feed entry" (the projector) and "feed entry → client" (the
API's hub and the socket). Writer and clients share this process's event loop: a message that
arrives while the loop is busy is stamped a little late, which the numbers include. The first
second of events warms up and is not counted.

How to read the rows: p50 is the typical wait of a live dashboard; p99 is what one update in a
hundred waits. ``missing`` must be 0 and no connection may be closed early (either is a bug, not
a slow run). When the total is high, the split says which side to look at: the projector's
polling and batching, or the API process (its hub issues one XREAD naming every subscribed
owner's feed, so each wake-up costs in proportion to the number of subscribed owners). The CPU
shares over the measured window say how much room each process has left.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import anyio
import orjson
from anyio.abc import TaskGroup
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from api.auth import mint_session_token
from bench.common import PARTITIONS, Report, bench_settings, rss_mib, synthetic_events
from engine.log.events import AnyEvent, ExecutionRequested
from engine.log.ids import new_execution_id, new_id
from engine.runtime import Runtime
from tests.processes import Role, role_env, wait_http
from tests.servers import free_port

WARMUP_S = 1.0
DRAIN_S = 30.0  # how long deliveries may trail the last append before they count as missing
CONNECT_BATCH = 50  # handshakes in flight at once while the subscribers connect


@dataclass
class Deliveries:
    """What the subscribers received of the measured events, keyed by (execution id, seq)."""

    stamps: dict[tuple[str, int], float] = field(default_factory=dict)  # measured appends
    latencies_ms: list[float] = field(default_factory=list)
    # The same split at the feed entry's id, which is Redis's clock when the projector added it.
    to_feed_ms: list[float] = field(default_factory=list)
    from_feed_ms: list[float] = field(default_factory=list)
    closed: dict[int, int] = field(default_factory=dict)  # close code -> connections
    done: anyio.Event = field(default_factory=anyio.Event)
    expected: int | None = None  # set once the writer is finished

    def arrived(self, raw: str | bytes, now: float) -> None:
        message = orjson.loads(raw)
        if message["type"] != "event":
            return
        stamp = self.stamps.get((message["execution_id"], message["seq"]))
        if stamp is None:
            return  # a warm-up event
        fed_ms = int(message["cursor"].partition("-")[0])
        self.latencies_ms.append((now - stamp) * 1000)
        self.to_feed_ms.append(fed_ms - stamp * 1000)
        self.from_feed_ms.append(now * 1000 - fed_ms)
        self.check()

    def check(self) -> None:
        if self.expected is not None and len(self.latencies_ms) >= self.expected:
            self.done.set()


@dataclass
class Writer:
    """Appends the owners' executions one event at a time, as a worker would."""

    runtime: Runtime
    _current: dict[str, tuple[str, list[AnyEvent], int]] = field(default_factory=dict)

    async def append_next(self, owner: str, deliveries: Deliveries | None) -> None:
        """The owner's next event; its stamp is kept when ``deliveries`` is given."""
        xid, events, k = self._current.get(owner) or self._new_execution(owner)
        store = self.runtime.store
        stamp = time.time()
        if k == 0:
            request = events[0]
            assert isinstance(request, ExecutionRequested)
            await store.admission.request(request)
        else:
            await store.log.append(xid, k, [events[k]])
        if deliveries is not None:
            deliveries.stamps[(xid, k + 1)] = stamp
        self._current[owner] = (xid, events, k + 1)
        if k + 1 == len(events):
            del self._current[owner]

    def _new_execution(self, owner: str) -> tuple[str, list[AnyEvent], int]:
        xid = new_execution_id(self.runtime.store.keys.partition(owner))
        # The store stamps each event's seq and time again as it appends it.
        return xid, synthetic_events(xid, owner, 0), 0


def _allow_open_files(count: int) -> None:
    """Raise this process's open-file limit to ``count`` if the hard limit allows: every
    subscriber is a socket here and one in the API process, which inherits the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < count:
        ceiling = count if hard == resource.RLIM_INFINITY else min(count, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _schedule(rate: float, count: int) -> Iterator[tuple[int, float]]:
    """(i, the monotonic time event i is due) for an open-loop schedule starting now."""
    t0 = time.monotonic()
    for i in range(count):
        yield i, t0 + i / rate


async def _subscribe(url: str, deliveries: Deliveries, tg: TaskGroup) -> ClientConnection:
    """Connect one subscriber, wait for its ``reset``, then record its deliveries in ``tg``."""
    conn = await connect(url, ping_interval=None, open_timeout=60)
    first = orjson.loads(await conn.recv())
    assert first["type"] == "reset", first

    async def listen() -> None:
        try:
            async for raw in conn:
                deliveries.arrived(raw, time.time())
        except ConnectionClosed:
            pass
        code = conn.close_code or 1006
        deliveries.closed[code] = deliveries.closed.get(code, 0) + 1

    tg.start_soon(listen)
    return conn


async def _connect_all(
    port: int, runtime: Runtime, owners: list[str], deliveries: Deliveries, tg: TaskGroup
) -> list[ClientConnection]:
    """One subscriber per owner, ``CONNECT_BATCH`` handshakes at a time."""
    conns: list[ClientConnection] = []

    async def join(owner: str) -> None:
        token = mint_session_token(runtime, owner)
        url = f"ws://127.0.0.1:{port}/v1/realtime?token={token}"
        conns.append(await _subscribe(url, deliveries, tg))

    for start in range(0, len(owners), CONNECT_BATCH):
        async with anyio.create_task_group() as handshakes:
            for owner in owners[start : start + CONNECT_BATCH]:
                handshakes.start_soon(join, owner)
    return conns


async def _write(
    writer: Writer, owners: list[str], deliveries: Deliveries, rate: int, seconds: float
) -> None:
    """Append at ``rate`` events/s, round-robin over ``owners``: a warm-up second, then
    ``seconds`` of measured events."""
    warmup = int(rate * WARMUP_S)
    for i, due in _schedule(rate, warmup + int(rate * seconds)):
        delay = due - time.monotonic()
        if delay > 0:
            await anyio.sleep(delay)
        await writer.append_next(owners[i % len(owners)], deliveries if i >= warmup else None)


@dataclass
class CpuMeter:
    """CPU share of some processes over a window (of one core: 100% is one core busy)."""

    pids: dict[str, int]
    _start: dict[str, float] = field(default_factory=dict)
    _t0: float = 0.0

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._start = {name: _cpu_s(pid) for name, pid in self.pids.items()}

    def shares(self) -> dict[str, float]:
        wall = time.monotonic() - self._t0
        return {name: (_cpu_s(pid) - self._start[name]) / wall for name, pid in self.pids.items()}


async def bench_realtime(
    report: Report, url: str, *, subscribers: int, rate: int, seconds: float, logs: Path
) -> None:
    """Run the scenario against the redis-server at ``url`` and add its rows to ``report``."""
    _allow_open_files(subscribers + 1_024)
    env = role_env(url, CLIPSTREAM_PARTITIONS=str(PARTITIONS), CLIPSTREAM_SIM_LATENCY_MS="0")
    settings = replace(bench_settings(url), jwt_secret=env["CLIPSTREAM_JWT_SECRET"])
    runtime = await Runtime.open(settings)
    await runtime.redis.flushall()
    await runtime.close()
    runtime = await Runtime.open(settings)  # its store set up again in the empty server
    port = free_port()
    api = Role(["api", "--port", str(port)], env, logs / "realtime-api.log")
    projector = Role(["projector"], env, logs / "realtime-proj.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", role=api)
        owners = [new_id("acc") for _ in range(subscribers)]
        for owner in owners:
            await runtime.redis.set(runtime.store.keys.balance(owner), 10**15)
        deliveries = Deliveries()
        cpu = CpuMeter({"api": api.proc.pid, "projector": projector.proc.pid})
        async with anyio.create_task_group() as tg:
            conns = await _connect_all(port, runtime, owners, deliveries, tg)
            await anyio.sleep(WARMUP_S)  # the hub's reader settles on the full set of feeds
            cpu.start()
            await _write(Writer(runtime), owners, deliveries, rate, seconds)
            shares = cpu.shares()
            deliveries.expected = len(deliveries.stamps)
            deliveries.check()
            with anyio.move_on_after(DRAIN_S):
                await deliveries.done.wait()
            async with anyio.create_task_group() as closing:
                for conn in conns:
                    closing.start_soon(conn.close)
        _add_rows(report, deliveries, subscribers, rate, seconds, shares)
        report.rss[f"api (realtime, {subscribers:,} subscribers)"] = rss_mib(api.proc.pid)
        report.rss["projector (realtime)"] = rss_mib(projector.proc.pid)
    finally:
        api.terminate()
        projector.terminate()
        await runtime.close()


def _percentiles(values: list[float]) -> str:
    """``p50 / p99`` of ``values``, in their unit."""
    ordered = sorted(values)
    p99 = ordered[max(0, int(len(ordered) * 0.99) - 1)]
    return f"{statistics.median(ordered):.1f} / {p99:.1f}"


def _add_rows(
    report: Report,
    deliveries: Deliveries,
    subscribers: int,
    rate: int,
    seconds: float,
    cpu: dict[str, float],
) -> None:
    latencies = deliveries.latencies_ms
    expected = deliveries.expected or 0
    note = f"{expected:,} events over {seconds:.0f}s, {expected - len(latencies):,} missing"
    closed = sum(n for code, n in deliveries.closed.items() if code != 1000)
    if closed:
        note += f", {closed} connections closed by the server {dict(deliveries.closed)}"
    if not latencies:
        report.add(f"realtime: nothing delivered to {subscribers:,} subscribers", "n/a", note)
        return
    report.add(
        f"realtime: append → WebSocket p50 / p99 (ms), {subscribers:,} subscribers, {rate}/s",
        _percentiles(latencies),
        f"{note}, max {max(latencies):.0f} ms",
    )
    report.add(
        "realtime: of which append → feed entry (projector) p50 / p99 (ms)",
        _percentiles(deliveries.to_feed_ms),
        "the feed entry's id is Redis's clock (ms) when the projector added it",
    )
    report.add(
        "realtime: of which feed entry → client (hub, WebSocket) p50 / p99 (ms)",
        _percentiles(deliveries.from_feed_ms),
        "",
    )
    report.add(
        "realtime: CPU of the API / projector process meanwhile",
        f"{cpu['api']:.0%} / {cpu['projector']:.0%}",
        "100% = one core busy",
    )
