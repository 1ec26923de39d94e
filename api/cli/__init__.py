"""The ``clipstream`` command: the roles (serve, api, worker, projector, scheduler, archiver) and
operator tools.

Every command reads its configuration once from ``CLIPSTREAM_*`` (see engine.settings). With no
``CLIPSTREAM_REDIS_URL`` the roles run on an embedded in-memory store, which only ``serve`` can
share between them: the single roles need a real Redis.

This module parses the arguments, reads the settings and maps errors to exit codes; each command
lives with its own concern, which adds its parser and names its handler:

    roles.py      serve, api, worker, projector, scheduler
    archive.py    archiver (the role), archive status | verify | export
    operators.py  history, tail, dead-letters, replay
    status.py     status (the figures of projections.inspection, --json)
    accounts.py   accounts create | credit | token | key | revoke | audit
    runner.py     running a command's coroutine (uvloop) and stopping it on a signal
    redact.py     tokens out of the server's request lines, the password out of a Redis URL
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from api.cli import accounts, archive, operators, roles, status
from api.cli.runner import Handler
from engine.errors import ConfigError, EngineError
from engine.settings import Settings


def build_parser() -> argparse.ArgumentParser:
    """The ``clipstream`` parser: each command's namespace carries its ``handler``."""
    parser = argparse.ArgumentParser(
        prog="clipstream",
        description="Event-sourced execution engine on Redis Streams. Configuration comes from "
        "CLIPSTREAM_* environment variables; with no CLIPSTREAM_REDIS_URL, `serve` runs on an "
        "embedded in-memory store.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    roles.add_parsers(sub)
    archive.add_parsers(sub)
    operators.add_parsers(sub)
    status.add_parser(sub)
    accounts.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``clipstream`` command and return its exit code: the command's own (0 when it did
    its work), 1 on an engine error (e.g. Redis unreachable), 2 on a configuration error (argparse
    exits with 2 itself on bad usage), 130 when interrupted."""
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
        handler: Handler = args.handler
        return handler(settings, args)
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
