"""The soak scenario (``soak`` in bench.run): bounded Redis under a steady load (issue 13).

    python -m bench.run --only soak            # 10 min at 220/s, hot window 60 s (~17 min)
    python -m bench.run --only soak --quick    # 60 s at 100/s, hot window 10 s (~3 min)

Roles as separate processes on a private redis-server (api, worker, projector, archiver), the
archive on a directory, one-step transcripts sent over HTTP at a steady open-loop rate by 32
owners (so every partition works). Two phases:

  kept      K executions with views kept, then the hot window left to pass: the Redis bytes each
            finished execution keeps (used_memory after, minus before, over K), and what they are
            (bytes per key kind, from MEMORY USAGE)
  soak      the steady load with views evicted one hot window after their end
            (CLIPSTREAM_VIEW_RETENTION_SECONDS), used_memory and every role's RSS sampled every
            10 s: after the first two minutes used_memory must stay within ±10% of its mean

Then nothing lost: a replay from the archive plus the hot tail (timed: events/s) holds every
accepted execution, done; the views still live equal their rebuilt copies; every owner's audit
holds. The figures go to bench/results/soak-<date>.json and the plot to soak-<date>.png.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from bench.common import PARTITIONS, Report, bench_role_env, bench_settings
from bench.http_load import open_loop, transcript_post
from engine.connection import as_str
from engine.runtime import Runtime
from tests.processes import Role, role_env, wait_http
from tests.servers import free_port

OWNERS = 32
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class SoakPlan:
    seconds: int = 600
    rate: int = 220
    hot_seconds: int = 60
    sample_s: float = 10.0
    settle_s: int = 120  # used_memory is judged after this
    kept: int = 5_000  # executions of the bytes-kept phase

    @classmethod
    def quick(cls) -> SoakPlan:
        return cls(seconds=60, rate=100, hot_seconds=10, sample_s=2.0, settle_s=20, kept=1_000)


@dataclass
class Sample:
    t: float
    used_memory: int
    keys: int
    rss_mib: dict[str, float]
    hot_log: int
    archived: int


@dataclass
class Soak:
    plan: SoakPlan
    url: str
    logs: Path
    archive: Path
    samples: list[Sample] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)


def _env(soak: Soak, **extra: str) -> dict[str, str]:
    return bench_role_env(
        soak.url,
        CLIPSTREAM_PARTITIONS=str(PARTITIONS),
        CLIPSTREAM_SIM_LATENCY_MS="0",
        CLIPSTREAM_ARCHIVE_URL=f"file://{soak.archive}",
        CLIPSTREAM_HOT_SECONDS=str(soak.plan.hot_seconds),
        CLIPSTREAM_ARCHIVE_SEGMENT_MS="5000",
        **extra,
    )


def _start(soak: Soak, env: dict[str, str], tag: str) -> tuple[list[Role], int]:
    port = free_port()
    roles = [
        Role(["api", "--port", str(port)], env, soak.logs / f"soak-{tag}-api.log"),
        Role(["worker"], env, soak.logs / f"soak-{tag}-worker.log"),
        Role(["projector"], env, soak.logs / f"soak-{tag}-projector.log"),
        Role(["archiver"], env, soak.logs / f"soak-{tag}-archiver.log"),
    ]
    wait_http(f"http://127.0.0.1:{port}/healthz", role=roles[0])
    return roles, port


def _rss(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


async def _owners(port: int, admin_token: str) -> list[bytes]:
    """OWNERS accounts with an item each: one prebuilt transcript request per owner."""
    admin = {"Authorization": f"Bearer {admin_token}"}
    out = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        for i in range(OWNERS):
            made = await http.post(
                "/admin/accounts", json={"name": f"soak{i}", "coins": 1e6}, headers=admin
            )
            auth = {"Authorization": f"Bearer {made.json()['api_key']}"}
            item = await http.post(
                "/v1/items", json={"source": f"https://youtu.be/soak{i:07d}"}, headers=auth
            )
            out.append(transcript_post(port, item.json()["item"]["item_id"], auth))
    return out


async def _load(port: int, requests: list[bytes], rate: int, total: int) -> int:
    result = await open_loop("127.0.0.1", port, requests, rate=rate, total=total)
    return result.statuses.get(202, 0)


async def _drained(runtime: Runtime) -> None:
    """Until no execution waits or runs and every view is current."""
    from projections.namespace import checkpoints

    store = runtime.store
    while True:
        busy = 0
        for p in store.partitions:
            busy += await store.leases.queued(p) + sum((await store.leases.leased(p)).values())
        ckpts = await checkpoints(runtime.redis, store.keys, store.partitions)
        behind = 0
        for p in store.partitions:
            behind += len(await store.log.read_log(p, ckpts[p], 1))
        if not busy and not behind:
            return
        await asyncio.sleep(0.5)


async def _trimmed(runtime: Runtime, hot_s: int) -> None:
    """Until the hot window has passed over everything and the archiver caught up with it."""
    from engine.archive.report import archive_status

    await asyncio.sleep(hot_s + 5)
    while True:
        statuses = await archive_status(runtime.store)
        if not any(s.lag_entries or s.log_length for s in statuses):
            break
        await asyncio.sleep(1)
    await asyncio.sleep(11)  # the feeds' next trim (every 10 s)


async def _memory(runtime: Runtime) -> int:
    return int((await runtime.redis.info("memory"))["used_memory"])


async def _kinds(runtime: Runtime) -> dict[str, int]:
    """Bytes per key kind (the part after the partition tag: log, x, ledger, v1, feed, …)."""
    sizes: Counter[str] = Counter()
    batch: list[str] = []

    async def flush() -> None:
        pipe = runtime.redis.pipeline(transaction=False)
        for key in batch:
            pipe.memory_usage(key, samples=0)
        for key, size in zip(batch, await pipe.execute(), strict=True):
            parts = key.split(":")
            kind = parts[2] if len(parts) > 2 and parts[1].startswith("{p") else parts[1]
            sizes[kind] += int(size or 0)
        batch.clear()

    async for raw in runtime.redis.scan_iter(count=1000):
        batch.append(as_str(raw))
        if len(batch) >= 1000:
            await flush()
    if batch:
        await flush()
    return dict(sizes)


async def phase_kept(soak: Soak, runtime: Runtime) -> None:
    """The Redis bytes a finished execution keeps once its hot window has passed."""
    roles, port = _start(soak, _env(soak), "kept")
    try:
        requests = await _owners(port, role_env(soak.url)["CLIPSTREAM_ADMIN_TOKEN"])
        await _load(port, requests, soak.plan.rate, 200)  # warm-up
        await _drained(runtime)
        await _trimmed(runtime, soak.plan.hot_seconds)
        before, kinds_before = await _memory(runtime), await _kinds(runtime)
        accepted = await _load(port, requests, soak.plan.rate, soak.plan.kept)
        await _drained(runtime)
        await _trimmed(runtime, soak.plan.hot_seconds)
        after, kinds_after = await _memory(runtime), await _kinds(runtime)
    finally:
        for role in roles:
            role.terminate()
    per_kind = {
        k: (kinds_after.get(k, 0) - kinds_before.get(k, 0)) / accepted
        for k in sorted(set(kinds_after) | set(kinds_before))
    }
    soak.figures["kept_bytes_per_execution"] = (after - before) / accepted
    soak.figures["kept_by_kind"] = {k: round(v) for k, v in per_kind.items() if abs(v) >= 1}
    soak.figures["kept_executions"] = accepted


async def _sampler(soak: Soak, runtime: Runtime, roles: list[Role], t0: float) -> None:
    from engine.archive.report import archive_status

    names = ["api", "worker", "projector", "archiver"]
    while True:
        statuses = await archive_status(runtime.store)
        soak.samples.append(
            Sample(
                t=time.monotonic() - t0,
                used_memory=await _memory(runtime),
                keys=int(await runtime.redis.dbsize()),
                rss_mib={n: _rss(r.proc.pid) for n, r in zip(names, roles, strict=True)},
                hot_log=sum(s.log_length for s in statuses),
                archived=sum(s.archived_entries for s in statuses),
            )
        )
        print(
            f"  soak t={soak.samples[-1].t:5.0f}s used_memory="
            f"{soak.samples[-1].used_memory / 2**20:7.1f} MiB hot log={soak.samples[-1].hot_log}",
            flush=True,
        )
        await asyncio.sleep(soak.plan.sample_s)


async def phase_soak(soak: Soak, runtime: Runtime) -> int:
    """The steady load with memory and RSS sampled; the executions accepted."""
    plan = soak.plan
    env = _env(soak, CLIPSTREAM_VIEW_RETENTION_SECONDS=str(plan.hot_seconds))
    roles, port = _start(soak, env, "soak")
    try:
        requests = await _owners(port, env["CLIPSTREAM_ADMIN_TOKEN"])
        t0 = time.monotonic()
        sampler = asyncio.create_task(_sampler(soak, runtime, roles, t0))
        accepted = await _load(port, requests, plan.rate, plan.rate * plan.seconds)
        soak.figures["load_seconds"] = round(time.monotonic() - t0, 1)
        await _drained(runtime)
        sampler.cancel()
        soak.figures["rss_peak_mib"] = {
            n: round(max(s.rss_mib[n] for s in soak.samples), 1) for n in soak.samples[0].rss_mib
        }
    finally:
        for role in roles:
            role.terminate()
    return accepted


def judge(soak: Soak) -> None:
    """used_memory within ±10% of its mean after the settle time; RSS growth per role."""
    late = [s for s in soak.samples if s.t >= soak.plan.settle_s]
    if not late:
        return
    mean = sum(s.used_memory for s in late) / len(late)
    spread = max(abs(s.used_memory - mean) / mean for s in late)
    soak.figures["used_memory_mean_mib"] = round(mean / 2**20, 1)
    soak.figures["used_memory_max_deviation_pct"] = round(spread * 100, 1)
    soak.figures["used_memory_flat"] = spread <= 0.10
    first, last = late[0], late[-1]
    soak.figures["rss_growth_after_settle_mib"] = {
        n: round(last.rss_mib[n] - first.rss_mib[n], 1) for n in first.rss_mib
    }


async def check_nothing_lost(soak: Soak, runtime: Runtime, accepted: int) -> None:
    """Replay from the archive and the hot tail: every accepted execution there and done, the
    live views equal to the rebuilt ones, every audit holding."""
    from engine.money.audit import audit_account
    from projections import replay
    from projections.namespace import Namespace
    from projections.views import decode_view

    started = time.perf_counter()
    report = await replay.rebuild(runtime)
    seconds = time.perf_counter() - started
    parity = await replay.compare(runtime, report.previous_version, report.version)
    statuses: Counter[str] = Counter()
    store = runtime.store
    for p in store.partitions:
        ns = Namespace(store.keys, p, report.version)
        ids = [as_str(x) for x in await runtime.redis.zrange(ns.all, 0, -1)]
        for start in range(0, len(ids), 1000):
            pipe = runtime.redis.pipeline(transaction=False)
            for xid in ids[start : start + 1000]:
                pipe.get(ns.view(xid))
            statuses.update(decode_view(raw).status for raw in await pipe.execute())
    audits = accounts = 0
    for p in store.partitions:
        for account in await runtime.redis.smembers(store.keys.accounts(p)):
            accounts += 1
            audits += (await audit_account(runtime, as_str(account))).ok
    stored = sum(f.stat().st_size for f in soak.archive.rglob("*.jsonl.zst"))
    soak.figures.update(
        archive_bytes_per_execution=round(stored / max(1, report.executions)),
        replay_events=report.events,
        replay_events_per_s=round(report.events / seconds),
        replay_executions=report.executions,
        executions_done=statuses.get("done", 0),
        executions_not_done=sum(n for s, n in statuses.items() if s != "done"),
        live_views_differing=len(parity.differing),
        rebuilt_missing=len(parity.missing_in_b),
        audits_ok=audits,
        accounts=accounts,
    )
    soak.figures["nothing_lost"] = (
        statuses.get("done", 0) >= accepted
        and not parity.differing
        and not parity.missing_in_b
        and audits == accounts
    )


def plot(soak: Soak, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.t / 60 for s in soak.samples]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    top.plot(t, [s.used_memory / 2**20 for s in soak.samples], label="Redis used_memory")
    top.axvline(soak.plan.settle_s / 60, color="grey", linestyle=":", label="settled")
    top.set_ylabel("MiB")
    top.set_ylim(bottom=0)
    top.legend()
    top.set_title(
        f"clipstream soak: {soak.plan.rate}/s one-step transcripts, "
        f"hot window {soak.plan.hot_seconds}s"
    )
    for name in soak.samples[0].rss_mib:
        bottom.plot(t, [s.rss_mib[name] for s in soak.samples], label=f"{name} RSS")
    bottom.set_ylabel("MiB")
    bottom.set_xlabel("minutes")
    bottom.set_ylim(bottom=0)
    bottom.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


async def bench_soak(report: Report, url: str, logs: Path, *, quick: bool) -> None:
    plan = SoakPlan.quick() if quick else SoakPlan()
    soak = Soak(plan, url, logs, logs / "archive")
    # The harness reads the archive too (replay, audits): the roles' archive, hot window.
    settings = replace(
        bench_settings(url), archive_url=f"file://{soak.archive}", hot_seconds=plan.hot_seconds
    )
    runtime = await Runtime.open(settings)
    await runtime.redis.flushall()
    await runtime.close()
    runtime = await Runtime.open(settings)
    try:
        await phase_kept(soak, runtime)
        accepted = await phase_soak(soak, runtime)
        judge(soak)
        await check_nothing_lost(soak, runtime, accepted)
    finally:
        await runtime.close()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d-%H%M")
    suffix = "-quick" if quick else ""
    RESULTS.mkdir(parents=True, exist_ok=True)
    png = RESULTS / f"soak-{stamp}{suffix}.png"
    plot(soak, png)
    (RESULTS / f"soak-{stamp}{suffix}.json").write_text(
        json.dumps(
            {
                "plan": plan.__dict__,
                "figures": soak.figures,
                "samples": [s.__dict__ for s in soak.samples],
            },
            indent=1,
        )
    )
    f = soak.figures
    report.add(
        "soak: Redis bytes kept per finished execution",
        f"{f['kept_bytes_per_execution']:,.0f}",
        f"after its {plan.hot_seconds}s hot window; by kind {f['kept_by_kind']}",
    )
    report.add(
        "soak: used_memory max deviation after settling (%)",
        f"{f.get('used_memory_max_deviation_pct', float('nan'))}",
        f"mean {f.get('used_memory_mean_mib')} MiB, {accepted:,} executions at {plan.rate}/s "
        f"over {plan.seconds}s; flat: {f.get('used_memory_flat')}; plot {png.name}",
    )
    report.add(
        "soak: RSS growth after settling (MiB)",
        "see note",
        str(f.get("rss_growth_after_settle_mib")),
    )
    report.add(
        "soak: archive bytes per execution",
        f"{f['archive_bytes_per_execution']:,}",
        "log and ledger segments (zstd), over every execution the replay found",
    )
    report.add(
        "soak: replay from archive + tail (events/s)",
        f"{f['replay_events_per_s']:,}",
        f"{f['replay_events']:,} events; {f['executions_done']:,} done, "
        f"{f['executions_not_done']} not; live views differing {f['live_views_differing']}; "
        f"audits ok {f['audits_ok']}/{f['accounts']}; nothing lost: {f['nothing_lost']}",
    )
    for name, mib in f["rss_peak_mib"].items():
        report.rss[f"{name} (soak)"] = mib
