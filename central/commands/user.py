"""`lockergw central user add|remove|passwd|list`: the people who sign in to the console (SPEC §12).

A password is never an argument (it would be in the shell's history and in `ps`): it is asked for twice
at a terminal, or read as the first line of standard input when that is not a terminal.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from central.cli import add_central_config_option, open_central
from gateway.commands.common import fail

if TYPE_CHECKING:
    from sqlalchemy import Connection

ROLES = ("viewer", "operator", "admin")
#: How the audit log names a change made at the command line.
CLI_ACTOR = "cli"


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = groups.add_parser("user", help="console users: add, remove, passwd, list")
    verbs = parser.add_subparsers(dest="user_command", metavar="VERB", required=True)

    add = verbs.add_parser("add", help="add a user (password asked for, or read from standard input)")
    add.add_argument("--name", required=True)
    add.add_argument("--role", required=True, choices=ROLES)
    add_central_config_option(add)
    add.set_defaults(handler=_add)

    remove = verbs.add_parser("remove", help="remove a user; their sessions end at once")
    remove.add_argument("--name", required=True)
    add_central_config_option(remove)
    remove.set_defaults(handler=_remove)

    passwd = verbs.add_parser("passwd", help="set a user's password; their sessions end, a lock-out is lifted")
    passwd.add_argument("--name", required=True)
    add_central_config_option(passwd)
    passwd.set_defaults(handler=_passwd)

    listing = verbs.add_parser("list", help="every user: name, role, created, locked until")
    add_central_config_option(listing)
    listing.set_defaults(handler=_list)


def read_password() -> str | None:
    """The new password: prompted twice at a terminal, else the first line of standard input."""
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            return None
        return first
    return sys.stdin.readline().rstrip("\r\n")


def _changed(config: str, change: Callable[[Connection, datetime], str]) -> int:
    """Run `change` in one transaction of the configured database; print its line, or one plain line of
    what was wrong (exit 2)."""
    from central.services.errors import ServiceError

    opened = open_central(config)
    if isinstance(opened, int):
        return opened
    _settings, engine = opened
    try:
        with engine.begin() as connection:
            done = change(connection, datetime.now(UTC))
    except ServiceError as exc:
        return fail(str(exc))
    finally:
        engine.dispose()
    print(done)
    return 0


def _add(args: argparse.Namespace) -> int:
    from central.services import users
    from central.tokens import Role

    password = read_password()
    if password is None:
        return fail("the two passwords differ")

    def add(connection: Connection, now: datetime) -> str:
        user = users.add(connection, args.name, Role[args.role], password, actor=CLI_ACTOR, now=now)
        return f"user {user.name} ({user.role.name}) added"

    return _changed(args.config, add)


def _remove(args: argparse.Namespace) -> int:
    from central.services import users

    def remove(connection: Connection, now: datetime) -> str:
        users.remove(connection, args.name, actor=CLI_ACTOR, now=now)
        return f"user {args.name} removed"

    return _changed(args.config, remove)


def _passwd(args: argparse.Namespace) -> int:
    from central.services import users

    password = read_password()
    if password is None:
        return fail("the two passwords differ")

    def passwd(connection: Connection, now: datetime) -> str:
        users.set_password(connection, args.name, password, actor=CLI_ACTOR, now=now)
        return f"password of {args.name} changed; their sessions have ended"

    return _changed(args.config, passwd)


def _list(args: argparse.Namespace) -> int:
    from central.services import users

    opened = open_central(args.config)
    if isinstance(opened, int):
        return opened
    _settings, engine = opened
    try:
        with engine.connect() as connection:
            listed = users.users(connection)
    finally:
        engine.dispose()
    now = datetime.now(UTC)
    print(f"{'name':<24} {'role':<9} {'created':<17} locked until")
    for user in listed:
        locked = user.locked_until.strftime("%Y-%m-%d %H:%M") if user.locked_until and user.locked_until > now else "-"
        print(f"{user.name:<24} {user.role.name:<9} {user.created_at.strftime('%Y-%m-%d %H:%M'):<17} {locked}")
    if not listed:
        print("(no users yet: lockergw central user add --name N --role viewer|operator|admin)")
    return 0
