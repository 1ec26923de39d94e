"""Profiles of the projector and the API under load (cProfile), the top of each written to
bench/results/ so a result can say where the time goes.

    python -m bench.profiles                 # both, into bench/results/profile-*.txt
    python -m bench.profiles --only api      # the API under the latency scenario's load
    python -m bench.profiles --only replay --replay-events 1000000 --tag before
    python -m bench.profiles --only archive-replay --replay-events 1000000 --tag before

  projector  one ``clipstream projector`` process folding a synthetic log of --events finished
             one-step executions from nothing, profiled until every checkpoint is at its log's end
  replay     ``projections.replay.rebuild`` in this process (one process, no split) over a
             synthetic log of --replay-events, profiled from the first read to the checkpoint;
             written to profile-replay-TAG.txt (--tag) so a before and an after sit side by side
  archive-replay  the same over the log of bench.archive_replay (all but its last 5% archived
             to a directory and trimmed from Redis): profile-archive-replay-TAG.txt
  worker     one ``clipstream worker`` and one ``clipstream projector`` draining --executions
             queued executions of --steps steps (bench.drain's preload, 0 ms providers), both
             profiled until the drain is over: profile-worker-TAG.txt and
             profile-drain-projector-TAG.txt
  api        one ``clipstream api`` process answering ``POST /v1/items/{id}/transcript`` at
             --rate req/s for --seconds (open loop, as the latency scenario), alone on the box

Each role runs under cProfile against a private redis-server, is stopped with
SIGUSR1 (the profile written, then the process ends) and its top functions, by own time and by
cumulative time, are written out with the machine and the load of the box when it ran.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import signal
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
    bench_settings,
    fresh_runtime,
    write_synthetic_log,
)
from bench.drain import _checkpoints, _log_tails, _preload, _wait_drained
from bench.http_load import open_loop, transcript_post
from bench.worker_cost import WORKER_ENV
from tests.processes import ADMIN_TOKEN, ROOT, role_env, wait_http
from tests.servers import free_port, redis_server

RESULTS = Path(__file__).resolve().parent / "results"
TOP = 30


# The role runs under a profiler that writes its data on SIGUSR1 and exits: uvicorn re-raises the
# SIGTERM it caught once it has shut down, which would end the process before cProfile could write.
_WRAPPER = """
import cProfile, os, signal, sys
from api.cli import main
profile = cProfile.Profile()
def dump(*_):
    profile.disable()
    profile.dump_stats(sys.argv[1])
    os._exit(0)
signal.signal(signal.SIGUSR1, dump)
profile.enable()
main(sys.argv[2:])
"""


def _profiled(
    args: list[str], env: dict[str, str], out: Path, log: Path
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", _WRAPPER, str(out), *args],
        cwd=ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGUSR1)
    proc.wait(timeout=120)


def _top(profile: Path, title: str, note: str) -> str:
    text = io.StringIO()
    stats = pstats.Stats(str(profile), stream=text)
    stats.strip_dirs()
    text.write(f"# {title}\n\n{note}\n\n## by own time\n")
    stats.sort_stats("tottime").print_stats(TOP)
    text.write("\n## by cumulative time\n")
    stats.sort_stats("cumulative").print_stats(TOP)
    return text.getvalue().replace(str(profile), profile.name)  # no path of the machine


def _load_note() -> str:
    one, five, _ = os.getloadavg()
    return (
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, load "
        f"average {one:.1f} (1 min) / {five:.1f} (5 min) when it ran: on a loaded box the shares "
        "matter, not the absolute times"
    )


async def profile_projector(url: str, events: int, work: Path) -> str:
    runtime = await fresh_runtime(bench_settings(url))
    try:
        executions = await write_synthetic_log(runtime, events)
        tails = await _log_tails(runtime)
        env = role_env(url, CLIPSTREAM_PARTITIONS=str(PARTITIONS))
        out = work / "projector.prof"
        proc = _profiled(["projector"], env, out, work / "projector.log")
        started = time.perf_counter()
        try:
            while await _checkpoints(runtime) != tails:
                if proc.poll() is not None:
                    raise RuntimeError((work / "projector.log").read_text()[-2000:])
                await asyncio.sleep(0.1)
            secs = time.perf_counter() - started
        finally:
            _stop(proc)
    finally:
        await runtime.close()
    note = (
        f"One projector process folding {executions * 5:,} log entries ({executions:,} finished "
        f"one-step executions) from nothing: {secs:.1f}s including start-up. {_load_note()}."
    )
    return _top(out, "Profile: the projector folding a log", note)


async def profile_worker(
    url: str, executions: int, tools: tuple[str, ...], work: Path
) -> tuple[str, str]:
    """The worker's and the projector's profiles over a drain of ``executions`` of ``tools``."""
    runtime = await fresh_runtime(bench_settings(url))
    try:
        await _preload(runtime, executions, tools)
        env = role_env(url, **WORKER_ENV)
        outs = [work / "worker.prof", work / "drain-projector.prof"]
        procs = [
            _profiled([role], env, out, work / f"{role}.log")
            for role, out in zip(("worker", "projector"), outs, strict=True)
        ]
        started = time.perf_counter()
        try:
            await _wait_drained(runtime)
            secs = time.perf_counter() - started
        finally:
            for proc in procs:
                _stop(proc)
    finally:
        await runtime.close()
    note = (
        f"{{role}} draining {executions:,} queued executions of {len(tools)} step(s) "
        f"({'+'.join(tools)}, 0 ms providers) with one worker and one projector: {secs:.1f}s "
        f"including start-up, under the profiler, which slows every call. {_load_note()}."
    )
    return (
        _top(outs[0], "Profile: the worker draining", note.format(role="One worker process")),
        _top(outs[1], "Profile: the projector of a drain", note.format(role="The projector")),
    )


async def profile_api(url: str, rate: int, seconds: float, work: Path) -> str:
    runtime = await fresh_runtime(bench_settings(url))
    await runtime.close()
    port = free_port()
    env = role_env(url, CLIPSTREAM_PARTITIONS=str(PARTITIONS))
    out = work / "api.prof"
    proc = _profiled(["api", "--port", str(port)], env, out, work / "api.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/healthz")
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            made = await http.post(
                "/admin/accounts", json={"name": "p", "coins": 1e6}, headers=admin
            )
            auth = {"Authorization": f"Bearer {made.json()['api_key']}"}
            source = {"source": "https://youtu.be/dQw4w9WgXcQ"}
            item = (await http.post("/v1/items", json=source, headers=auth)).json()["item"]
        request = transcript_post(port, item["item_id"], auth)
        load = await open_loop("127.0.0.1", port, request, rate=rate, total=int(rate * seconds))
        latencies = sorted(load.latencies_ms)
        p99 = latencies[int(len(latencies) * 0.99) - 1]
    finally:
        _stop(proc)
    note = (
        f"One API process, alone, answering POST /v1/items/{{id}}/transcript at {rate} req/s "
        f"for {seconds:.0f}s (202s: {load.statuses.get(202, 0):,}; p99 {p99:.1f} ms under the "
        f"profiler, which slows every call). {_load_note()}."
    )
    return _top(out, "Profile: the API under the latency load", note)


async def profile_replay(url: str, events: int, work: Path) -> str:
    from projections import replay

    runtime = await fresh_runtime(bench_settings(url))
    try:
        executions = await write_synthetic_log(runtime, events)
        profile = cProfile.Profile()
        profile.enable()
        result = await replay.rebuild(runtime, processes=1)
        profile.disable()
    finally:
        await runtime.close()
    out = work / "replay.prof"
    profile.dump_stats(out)
    note = (
        f"One process rebuilding every view from a synthetic log of {executions * 5:,} entries "
        f"({executions:,} finished one-step executions, Redis only): {result.describe()}, under "
        f"the profiler, which slows every call. {_load_note()}."
    )
    return _top(out, "Profile: replay in one process", note)


async def profile_archive_replay(url: str, events: int, work: Path) -> str:
    from bench.archive_replay import build_archived_log
    from projections import replay

    built = await build_archived_log(url, events, work)
    try:
        profile = cProfile.Profile()
        profile.enable()
        result = await replay.rebuild(built.runtime, processes=1)
        profile.disable()
    finally:
        await built.runtime.close()
    out = work / "archive-replay.prof"
    profile.dump_stats(out)
    note = (
        f"One process rebuilding every view from {built.archived:,} archived entries "
        f"({built.segments} segments in a directory, trimmed from Redis) and a hot tail of "
        f"{built.hot:,}: {result.describe()}, under the profiler, which slows every call. "
        f"{_load_note()}."
    )
    return _top(out, "Profile: replay from the archive and the hot tail, in one process", note)


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="cs-prof-") as tmp, redis_server() as server:
        work = Path(tmp)
        if "projector" in args.only:
            text = await profile_projector(server.url, args.events, work)
            (RESULTS / "profile-projector.txt").write_text(text)
            print(text[:3000])
        if "worker" in args.only:
            tools = TRANSCRIPT if args.steps == 1 else THREE_STEPS
            worker, projector = await profile_worker(server.url, args.executions, tools, work)
            (RESULTS / f"profile-worker-{args.tag}.txt").write_text(worker)
            (RESULTS / f"profile-drain-projector-{args.tag}.txt").write_text(projector)
            print(worker[:3000])
        if "api" in args.only:
            text = await profile_api(server.url, args.rate, args.seconds, work)
            (RESULTS / "profile-api.txt").write_text(text)
            print(text[:3000])
        if "replay" in args.only:
            text = await profile_replay(server.url, args.replay_events, work)
            (RESULTS / f"profile-replay-{args.tag}.txt").write_text(text)
            print(text[:3000])
        if "archive-replay" in args.only:
            text = await profile_archive_replay(server.url, args.replay_events, work)
            (RESULTS / f"profile-archive-replay-{args.tag}.txt").write_text(text)
            print(text[:3000])


def main() -> None:
    parser = argparse.ArgumentParser(description="cProfile the projector and the API under load")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=("projector", "worker", "api", "replay", "archive-replay"),
        default=["projector", "api"],
    )
    parser.add_argument(
        "--replay-events", type=int, default=1_000_000, help="log entries the replay folds"
    )
    parser.add_argument(
        "--tag",
        default="latest",
        help="replay, archive-replay, worker: profile-[archive-]replay-TAG.txt, "
        "profile-worker-TAG.txt",
    )
    parser.add_argument(
        "--executions", type=int, default=5_000, help="worker: executions the worker drains"
    )
    parser.add_argument("--steps", type=int, choices=(1, 3), default=3, help="worker: their steps")
    parser.add_argument(
        "--events", type=int, default=200_000, help="log entries the projector folds"
    )
    parser.add_argument("--rate", type=int, default=500, help="requests/s sent to the API")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the API is loaded")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
