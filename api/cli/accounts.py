"""``clipstream accounts``: create an account, credit coins, mint a session token, issue and
revoke API keys, revoke every session of an account, and audit an account's ledger (exit 1 when
it does not add up)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from api.cli.runner import Subcommands, run
from engine.money.audit import Audit, audit_account
from engine.runtime import Runtime
from engine.settings import Settings


def add_parser(sub: Subcommands) -> None:
    """Add ``accounts`` and its actions to the ``clipstream`` parser."""
    accounts = sub.add_parser(
        "accounts",
        help="create accounts, credit coins, mint tokens, issue and revoke keys, revoke "
        "sessions, audit ledgers",
    )
    accounts.set_defaults(handler=_accounts_command)
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
    token.add_argument(
        "--ttl",
        type=int,
        default=None,
        help="lifetime in seconds (a day, or CLIPSTREAM_SESSION_MAX_TTL when shorter; more is "
        "refused)",
    )
    key = acc.add_parser("key", help="issue a new API key")
    key.add_argument("account_id")
    revoke = acc.add_parser("revoke", help="revoke an API key at once")
    revoke.add_argument("key", help="the key itself (ck_live_…) or its sha256 (key_hash)")
    sessions = acc.add_parser(
        "revoke-sessions",
        help="end every session of an account at once: its session tokens stop working and its "
        "live WebSocket and SSE streams close (4401); API keys are not affected",
    )
    sessions.add_argument("account_id")
    audit_cmd = acc.add_parser(
        "audit",
        help="recompute an account from its ledger: balance = credits - charges + releases "
        "(exit 1 when anything does not add up)",
    )
    audit_cmd.add_argument("account_id")


def _accounts_command(settings: Settings, args: argparse.Namespace) -> int:
    return run(_accounts, settings, args)


async def _accounts(settings: Settings, args: argparse.Namespace) -> int:
    from api.auth import mint_session_token
    from api.sessions import revoke_sessions
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
        elif args.accounts_command == "revoke-sessions":
            after = await revoke_sessions(runtime, args.account_id)
            until = datetime.fromtimestamp(after / 1000, UTC).isoformat(timespec="milliseconds")
            print(f"revoked every session of {args.account_id}: tokens issued until {until} "
                  "no longer work, and its live streams are closed")  # fmt: skip
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
