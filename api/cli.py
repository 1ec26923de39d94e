"""The ``clipstream`` command: the roles (serve, api, worker, projector, scheduler) and operator
tools.

Every command reads its configuration once from ``CLIPSTREAM_*`` (see engine.settings). With no
``CLIPSTREAM_REDIS_URL`` the roles run on an embedded in-memory store, which only ``serve`` can
share between them: the single roles need a real Redis.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import anyio

from engine.connection import as_str
from engine.errors import ConfigError, EngineError
from engine.money.audit import Audit, audit_account
from engine.runtime import Runtime
from engine.settings import Settings

log = logging.getLogger("clipstream")

T = TypeVar("T")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


class TokenRedactingFilter(logging.Filter):
    """Removes ``token=…`` from log records (uvicorn's request lines print the query string).

    A logger's filters see only the records logged on that very logger (and uvicorn.access does
    not propagate), so :func:`redact_tokens_in_server_logs` attaches it to each logger uvicorn
    writes request lines to.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and isinstance(record.args, tuple):
            record.args = tuple(_redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = _redact(record.msg)
        return True


_TOKEN_FILTER = TokenRedactingFilter()


def redact_tokens_in_server_logs() -> None:
    """Put the token filter on the loggers uvicorn writes request lines to (idempotent):
    ``uvicorn.access`` for HTTP, and ``uvicorn.error``, where the WebSocket handshake's line
    (``"WebSocket /v1/realtime?token=…" [accepted]``) goes."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).addFilter(_TOKEN_FILTER)


def _redact(text: str) -> str:
    import re

    return re.sub(r"(token=)[^&\s\"]+", r"\1[redacted]", text)


# -- roles ---------------------------------------------------------------------------------------


async def _until_signal(stop: anyio.Event) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("received %s: stopping gracefully", signal.Signals(signum).name)
            stop.set()
            return


async def _run_role(
    settings: Settings, role: Callable[[Runtime, anyio.Event], Awaitable[None]]
) -> None:
    runtime = await Runtime.open(settings)
    stop = anyio.Event()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_until_signal, stop)
            await role(runtime, stop)
            tg.cancel_scope.cancel()
    finally:
        await runtime.close()


async def _worker_role(runtime: Runtime, stop: anyio.Event, worker_id: str | None = None) -> None:
    from engine.providers import registry
    from engine.run.worker import Worker

    worker = Worker(runtime, worker_id=worker_id)
    log.info("worker %s started on %d partitions", worker.worker_id, runtime.store.keys.partitions)
    try:
        await worker.run(stop)
    finally:
        await registry.current().aclose()  # the HTTP providers' connection pools


async def _projector_role(runtime: Runtime, stop: anyio.Event) -> None:
    from projections.projector import Projector

    log.info("projector started")
    await Projector(runtime).run(stop)


async def _scheduler_role(runtime: Runtime, stop: anyio.Event) -> None:
    from engine.schedules.scheduler import Scheduler

    scheduler = Scheduler(runtime)
    log.info(
        "scheduler %s started (a pass every %d ms)",
        scheduler.scheduler_id,
        runtime.settings.scheduler_interval_ms,
    )
    await scheduler.run(stop)


def _uvicorn_server(runtime: Runtime, host: str, port: int) -> Any:
    import uvicorn

    from api.app import create_app

    config = uvicorn.Config(
        create_app(runtime),
        host=host,
        port=port,
        log_level="info",
        proxy_headers=False,
        server_header=False,
    )
    server = uvicorn.Server(config)
    return server


async def _serve_api(runtime: Runtime, host: str, port: int) -> None:
    server = _uvicorn_server(runtime, host, port)
    redact_tokens_in_server_logs()
    await server.serve()


async def _serve_all(settings: Settings, host: str, port: int) -> None:
    """API, worker, projector and scheduler in one process, sharing one store."""
    runtime = await Runtime.open(settings)
    stop = anyio.Event()
    try:
        await _print_banner(runtime, host, port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_worker_role, runtime, stop)
            tg.start_soon(_projector_role, runtime, stop)
            tg.start_soon(_scheduler_role, runtime, stop)
            # uvicorn handles SIGINT/SIGTERM itself; when it returns, the other roles stop.
            await _serve_api(runtime, host, port)
            stop.set()
    finally:
        await runtime.close()


async def _print_banner(runtime: Runtime, host: str, port: int) -> None:
    from api.auth import mint_session_token
    from engine.money.accounts import create_account

    settings = runtime.settings
    base = f"http://{host}:{port}"
    lines = ["", "clipstream is starting"]
    if settings.embedded:
        lines.append(
            "  store:        EMBEDDED in-memory store - all data lives in this process and is "
            "lost when it stops (set CLIPSTREAM_REDIS_URL to use Redis)"
        )
    else:
        lines.append(f"  store:        {_safe_url(settings.redis_url or '')}")
    lines.append(f"  api:          {base}")
    lines.append(f"  dashboard:    {base}/ (sign in with a session JWT)")
    if runtime.admin_token_generated:
        lines.append(f"  admin token:  {runtime.admin_token}")
    if settings.embedded:
        account, api_key = await create_account(runtime, name="demo", coins_micro=100_000_000)
        token = mint_session_token(runtime, account.account_id)
        lines += [
            f"  demo account: {account.account_id} (100 coins)",
            f"  api key:      {api_key}",
            f"  session JWT:  {token}",
            "",
            "  try:",
            f"    export CS={base} KEY={api_key}",
            '    curl -s -X POST $CS/v1/items -H "Authorization: Bearer $KEY" \\',
            '         -d \'{"source": "https://www.youtube.com/watch?v=dQw4w9WgXcQ"}\'',
        ]
    print("\n".join(lines) + "\n", flush=True)


def _safe_url(url: str) -> str:
    """The Redis URL without its password."""
    import re

    return re.sub(r"//([^:/@]*):[^@]*@", r"//\1:***@", url)


# -- operator commands ---------------------------------------------------------------------------


async def _history(settings: Settings, execution_id: str) -> int:
    from engine.log import codec
    from engine.log.ids import is_id

    if not is_id(execution_id, "exc"):
        print(f"not an execution id: {execution_id}", file=sys.stderr)
        return 2
    runtime = await Runtime.open(settings)
    try:
        events = await runtime.store.history(execution_id)
    finally:
        await runtime.close()
    if not events:
        print(f"{execution_id}: no events (unknown, or expired after retention)", file=sys.stderr)
        return 1
    for event in events:
        print(codec.encode(event).decode())
    return 0


async def _tail(settings: Settings, partitions: Sequence[int] | None, from_start: bool) -> int:
    runtime = await Runtime.open(settings)
    store = runtime.store
    chosen = list(partitions) if partitions else list(store.partitions)
    cursors: dict[int, str] = {}
    for p in chosen:
        if from_start:
            cursors[p] = "0-0"
        else:
            last = await store.redis.xrevrange(store.keys.log(p), "+", "-", count=1)
            cursors[p] = last[0][0].decode() if last else "0-0"
    stop = anyio.Event()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_until_signal, stop)
            while not stop.is_set():
                quiet = True
                for p in chosen:
                    for entry in await store.read_log(p, cursors[p], 500):
                        quiet = False
                        cursors[p] = entry.entry_id
                        print(f"p{p} {entry.entry_id} {entry.raw.decode(errors='replace')}")
                if quiet:
                    with anyio.move_on_after(0.2):
                        await stop.wait()
            tg.cancel_scope.cancel()
    finally:
        await runtime.close()
    return 0


async def _status(settings: Settings) -> int:
    from engine.log.keys import WORKER_GROUP

    runtime = await Runtime.open(settings)
    store = runtime.store
    try:
        version = int(await store.redis.hget(store.keys.meta, "projection_version") or 1)
        print(f"partitions: {store.keys.partitions}   projection version: {version}")
        print(
            f"{'part':>4} {'log':>9} {'lag':>7} {'queued':>8} {'leased':>8} {'consumers':>9} "
            f"{'dead':>6}  checkpoint"
        )
        for p in store.partitions:
            length = await store.redis.xlen(store.keys.log(p))
            groups = await store.redis.xinfo_groups(store.keys.log(p))
            group = next((g for g in groups if as_str(g["name"]) == WORKER_GROUP), None)
            lag = group.get("lag") if group else None
            consumers = group["consumers"] if group else 0
            queued = await store.queued(p)
            leased = sum((await store.leased(p)).values())
            dead = await store.redis.xlen(store.keys.dead(p))
            ckpt = await store.redis.get(f"{store.keys.view_ns(p, version)}:ckpt")
            print(
                f"{p:>4} {length:>9} {lag if lag is not None else '-':>7} {queued:>8} "
                f"{leased:>8} {consumers:>9} {dead:>6}  {as_str(ckpt) if ckpt else '-'}"
            )
    finally:
        await runtime.close()
    return 0


async def _dead_letters(settings: Settings) -> int:
    runtime = await Runtime.open(settings)
    try:
        found = 0
        for p in runtime.store.partitions:
            for row in await runtime.store.dead_letters(p):
                found += 1
                print(
                    f"p{p} {row['dead_id']} entry={row.get('entry_id')} "
                    f"deliveries={row.get('deliveries')} reason={row.get('reason')}"
                )
        if not found:
            print("no dead letters")
    finally:
        await runtime.close()
    return 0


async def _replay(settings: Settings, switch: bool, drop_previous: bool) -> int:
    from projections import replay

    runtime = await Runtime.open(settings)
    try:
        bar = _ProgressBar()
        report = await replay.rebuild(runtime, progress=bar.update)
        bar.finish()
        print(report.describe())
        current = report.previous_version
        parity = await replay.compare(runtime, current, report.version)
        print(parity.describe())
        if switch:
            await replay.switch(runtime, report.version)
            print(f"switched to projection version {report.version}")
            if drop_previous:
                removed = await replay.drop(runtime, current)
                print(f"dropped projection version {current} ({removed:,} keys)")
        else:
            print(f"not switched: run again with --switch to make version {report.version} live")
    finally:
        await runtime.close()
    return 0


class _ProgressBar:
    def __init__(self, width: int = 40) -> None:
        self.width = width
        self._last = -1

    def update(self, done: int, total: int) -> None:
        pct = 100 if total <= 0 else min(100, done * 100 // total)
        if pct == self._last:
            return
        self._last = pct
        filled = self.width * pct // 100
        bar = "#" * filled + "-" * (self.width - filled)
        print(
            f"\r[{bar}] {pct:3d}%  {done:,}/{total:,} events", end="", file=sys.stderr, flush=True
        )

    def finish(self) -> None:
        print(file=sys.stderr)


async def _accounts(settings: Settings, args: argparse.Namespace) -> int:
    from api.auth import mint_session_token
    from engine.money import accounts
    from engine.settings import coins_to_micro, micro_to_coins

    runtime = await Runtime.open(settings)
    try:
        if args.accounts_command == "create":
            account, api_key = await accounts.create_account(
                runtime, name=args.name, coins_micro=coins_to_micro(args.coins)
            )
            print(f"account_id:    {account.account_id}")
            print(f"balance_coins: {micro_to_coins(account.balance)}")
            print(f"api_key:       {api_key}")
            print(f"session_token: {mint_session_token(runtime, account.account_id)}")
        elif args.accounts_command == "credit":
            balance = await accounts.credit(
                runtime, args.account_id, coins_to_micro(args.coins), credit_id=args.credit_id
            )
            print(f"balance_coins: {micro_to_coins(balance)}")
        elif args.accounts_command == "token":
            print(mint_session_token(runtime, args.account_id, ttl_s=args.ttl))
        elif args.accounts_command == "key":
            print(await accounts.issue_api_key(runtime, args.account_id))
        elif args.accounts_command == "revoke":
            account_id = await accounts.revoke_api_key(runtime, args.key)
            print(f"revoked an API key of {account_id}")
        elif args.accounts_command == "audit":
            report = await audit_account(runtime, args.account_id)
            _print_audit(report)
            return 0 if report.ok else 1
    finally:
        await runtime.close()
    return 0


def _print_audit(report: Audit) -> None:
    """An account's audit as ``name: value`` lines, then its problems (none: ``status: ok``)."""
    from engine.settings import micro_to_coins

    print(f"account_id:      {report.account_id}")
    print(f"balance_coins:   {micro_to_coins(report.balance)}")
    print(f"ledger_entries:  {report.entries}")
    for name, micro in (
        ("credits", report.credits),
        ("charges", report.charges),
        ("releases", report.releases),
        ("expected", report.expected_balance),
    ):
        print(f"{name + '_coins:':<17}{micro_to_coins(micro)}")
    print(f"held_coins:      {micro_to_coins(sum(report.held.values()))} "
          f"({len(report.held)} open reservations)")  # fmt: skip
    print(f"uncovered_coins: {micro_to_coins(report.uncovered)}")
    for kind, micro in sorted(report.totals.items()):
        print(f"  {kind}: {micro_to_coins(micro)}")
    if report.ok:
        print("status: ok (balance = credits - charges + releases)")
        return
    print(f"status: {len(report.problems)} problem(s)")
    for problem in report.problems:
        print(f"  - {problem}")


# -- argument parsing ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipstream",
        description="Event-sourced execution engine on Redis Streams. Configuration comes from "
        "CLIPSTREAM_* environment variables; with no CLIPSTREAM_REDIS_URL, `serve` runs on an "
        "embedded in-memory store.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_address(p: argparse.ArgumentParser) -> None:
        p.add_argument("--host", default=DEFAULT_HOST, help=f"bind address ({DEFAULT_HOST})")
        p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port ({DEFAULT_PORT})")

    with_address(
        sub.add_parser("serve", help="API, worker, projector and scheduler in one process")
    )
    with_address(sub.add_parser("api", help="the HTTP API only (needs CLIPSTREAM_REDIS_URL)"))
    worker = sub.add_parser("worker", help="run executions (needs CLIPSTREAM_REDIS_URL)")
    worker.add_argument("--id", dest="worker_id", help="consumer name (default: host-pid-random)")
    sub.add_parser("projector", help="fold the logs into views (needs CLIPSTREAM_REDIS_URL)")
    sub.add_parser(
        "scheduler",
        help="fire due schedules, each tick once however many run (needs CLIPSTREAM_REDIS_URL)",
    )

    history = sub.add_parser("history", help="print one execution's events as JSON lines")
    history.add_argument("execution_id")
    tail = sub.add_parser("tail", help="follow the partition logs live")
    tail.add_argument(
        "-p",
        "--partition",
        type=int,
        action="append",
        dest="partitions",
        help="only this partition (repeatable)",
    )
    tail.add_argument("--from-start", action="store_true", help="print the whole log first")
    sub.add_parser(
        "status", help="partitions, group lag, queued, leased, dead letters, checkpoints"
    )
    sub.add_parser("dead-letters", help="list dead-lettered entries")
    replay = sub.add_parser(
        "replay", help="rebuild every projection into a new version and compare with the live one"
    )
    replay.add_argument("--switch", action="store_true", help="make the rebuilt version live")
    replay.add_argument(
        "--drop-previous",
        action="store_true",
        help="with --switch: delete the version that was live before",
    )

    accounts = sub.add_parser(
        "accounts",
        help="create accounts, credit coins, mint tokens, issue and revoke keys, audit ledgers",
    )
    acc = accounts.add_subparsers(dest="accounts_command", required=True, metavar="ACTION")
    create = acc.add_parser("create", help="create an account with coins")
    create.add_argument("--name", required=True)
    create.add_argument("--coins", default="0", help="initial balance in coins (e.g. 10.5)")
    credit = acc.add_parser("credit", help="add coins (idempotent by --credit-id)")
    credit.add_argument("account_id")
    credit.add_argument("--coins", required=True)
    credit.add_argument(
        "--credit-id", required=True, help="a unique id: a retry never credits twice"
    )
    token = acc.add_parser("token", help="mint a session JWT")
    token.add_argument("account_id")
    token.add_argument("--ttl", type=int, default=86_400, help="lifetime in seconds (86400)")
    key = acc.add_parser("key", help="issue a new API key")
    key.add_argument("account_id")
    revoke = acc.add_parser("revoke", help="revoke an API key at once")
    revoke.add_argument("key", help="the key itself (ck_live_…) or its sha256 (key_hash)")
    audit_cmd = acc.add_parser(
        "audit",
        help="recompute an account from its ledger: balance = credits - charges + releases "
        "(exit 1 when anything does not add up)",
    )
    audit_cmd.add_argument("account_id")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = Settings.from_env()
        # Provider settings (CLIPSTREAM_PROVIDERS, CLIPSTREAM_LLM_URL, …) are checked now, so a
        # bad one stops the process at start rather than failing the first step.
        from engine.providers import registry

        registry.configure()
        if settings.embedded and args.command not in ("serve",):
            raise ConfigError(
                f"`clipstream {args.command}` needs CLIPSTREAM_REDIS_URL: the embedded store lives "
                "inside one process, so only `clipstream serve` can use it"
            )
        return _dispatch(settings, args)
    except ConfigError as exc:
        print(f"clipstream: configuration error: {exc}", file=sys.stderr)
        return 2
    except EngineError as exc:
        print(f"clipstream: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `clipstream tail | head`: the reader left; not an error
        sys.stderr.close()
        return 0


def _run(func: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run a role's main coroutine, on uvloop when it is installed (it comes with
    uvicorn[standard])."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return anyio.run(func, *args)
    return anyio.run(func, *args, backend_options={"use_uvloop": True})


def _dispatch(settings: Settings, args: argparse.Namespace) -> int:
    command = args.command
    if command == "serve":
        _run(_serve_all, settings, args.host, args.port)
        return 0
    if command == "api":
        _run(_run_api, settings, args.host, args.port)
        return 0
    if command == "worker":

        async def worker_role(runtime: Runtime, stop: anyio.Event) -> None:
            await _worker_role(runtime, stop, args.worker_id)

        _run(_run_role, settings, worker_role)
        return 0
    if command == "projector":
        _run(_run_role, settings, _projector_role)
        return 0
    if command == "scheduler":
        _run(_run_role, settings, _scheduler_role)
        return 0
    if command == "history":
        return _run(_history, settings, args.execution_id)
    if command == "tail":
        return _run(_tail, settings, args.partitions, args.from_start)
    if command == "status":
        return _run(_status, settings)
    if command == "dead-letters":
        return _run(_dead_letters, settings)
    if command == "replay":
        if args.drop_previous and not args.switch:
            raise ConfigError("--drop-previous needs --switch: the live version is never dropped")
        return _run(_replay, settings, args.switch, args.drop_previous)
    if command == "accounts":
        return _run(_accounts, settings, args)
    raise AssertionError(f"unhandled command {command}")


async def _run_api(settings: Settings, host: str, port: int) -> None:
    runtime = await Runtime.open(settings)
    try:
        await _serve_api(runtime, host, port)
    finally:
        await runtime.close()


if __name__ == "__main__":
    raise SystemExit(main())
