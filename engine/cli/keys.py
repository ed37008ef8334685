"""`engine keys add|list|revoke|credit`: API keys and their credit balances, in the embedded store or,
with --broker, in a fleet's Redis."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from engine.cli import global_options
from engine.cli.settings_args import add_broker_argument, settings_from
from engine.jobs.redis_keys import RedisKeyAdmin
from engine.jobs.sqlite_store import SqliteStore
from engine.jobs.store import KeyAdmin


def _store(args: argparse.Namespace) -> KeyAdmin:
    settings = settings_from(args)
    if settings.broker is not None:
        return RedisKeyAdmin(settings.broker)
    return SqliteStore(settings.database_path)


def cmd_add(args: argparse.Namespace) -> int:
    key, secret = _store(args).add_key(args.name, args.credits, args.rate, admin=args.admin)
    role = ", admin (may publish and remove endpoints)" if key.admin else ""
    print(
        f"created {key.id} ({key.name}) with {key.balance:g} credits, "
        f"{key.rate_per_minute} requests/minute{role}"
    )
    print("secret (shown once, store it now):")
    print(secret)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    table = Table("id", "name", "balance", "reserved", "rate/min", "role", "state")
    for key in _store(args).list_keys():
        state = "revoked" if key.revoked_at else "active"
        role = "admin" if key.admin else "client"
        table.add_row(
            key.id, key.name, f"{key.balance:g}", f"{key.reserved:g}", str(key.rate_per_minute), role, state
        )
    Console().print(table)
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    if not _store(args).revoke_key(args.key_id):
        print(f"no active key {args.key_id}")
        return 1
    print(f"revoked {args.key_id}")
    return 0


def cmd_credit(args: argparse.Namespace) -> int:
    key = _store(args).add_credits(args.key_id, args.amount)
    if key is None:
        print(f"no key {args.key_id}")
        return 1
    print(f"{key.id} now has {key.balance:g} credits")
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    keys = commands.add_parser("keys", help="manage API keys (stored hashed) and their credits")
    actions = keys.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="create a key and print its secret once")
    add.add_argument("name")
    add.add_argument("--credits", type=float, default=100.0, help="starting balance (default 100)")
    add.add_argument("--rate", type=int, default=60, help="requests per minute (default 60)")
    add.add_argument(
        "--admin", action="store_true", help="may also publish, unpublish, export and import endpoints"
    )
    add.set_defaults(handler=cmd_add)
    listing = actions.add_parser("list", help="list keys and balances")
    listing.set_defaults(handler=cmd_list)
    revoke = actions.add_parser("revoke", help="revoke a key")
    revoke.add_argument("key_id")
    revoke.set_defaults(handler=cmd_revoke)
    credit = actions.add_parser("credit", help="add credits to a key")
    credit.add_argument("key_id")
    credit.add_argument("amount", type=float)
    credit.set_defaults(handler=cmd_credit)
    for action in (add, listing, revoke, credit):
        global_options.add_to_command(action, global_options.KEYS)
        add_broker_argument(action)
