"""`lockergw central token create|list|revoke`: the API's bearer tokens (SPEC §11).

`create` prints the token once, alone on the last line of standard output; only its hash is stored.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from central.cli import add_central_config_option, open_central
from gateway.commands.common import fail

if TYPE_CHECKING:
    from sqlalchemy import Engine

ROLES = ("viewer", "operator", "admin")


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = groups.add_parser("token", help="API bearer tokens: create, list, revoke")
    verbs = parser.add_subparsers(dest="token_command", metavar="VERB", required=True)

    create = verbs.add_parser("create", help="make a token (printed once, alone on the last line)")
    create.add_argument("--name", required=True, help="who or what uses it (shown in `token list`)")
    create.add_argument("--role", required=True, choices=ROLES)
    add_central_config_option(create)
    create.set_defaults(handler=_create)

    listing = verbs.add_parser("list", help="every token: id, name, role, created, last used, revoked")
    add_central_config_option(listing)
    listing.set_defaults(handler=_list)

    revoke = verbs.add_parser("revoke", help="revoke a token by id, or every live token of a name")
    revoke.add_argument("token", metavar="ID|NAME")
    add_central_config_option(revoke)
    revoke.set_defaults(handler=_revoke)


def _open(config: str) -> Engine | int:
    """The configured database, or the exit status after one plain line per fault."""
    opened = open_central(config)
    return opened if isinstance(opened, int) else opened[1]


def _create(args: argparse.Namespace) -> int:
    from central.tokens import TokenError, create_token, parse_role

    engine = _open(args.config)
    if isinstance(engine, int):
        return engine
    try:
        with engine.begin() as connection:
            info, token = create_token(connection, args.name, parse_role(args.role), datetime.now(UTC))
    except TokenError as exc:
        return fail(str(exc))
    finally:
        engine.dispose()
    print(f"token {info.id} ({info.name}, {info.role.name}) created; it is shown only now:")
    print(token)
    return 0


def _list(args: argparse.Namespace) -> int:
    from central.tokens import list_tokens

    engine = _open(args.config)
    if isinstance(engine, int):
        return engine
    try:
        with engine.connect() as connection:
            tokens = list_tokens(connection)
    finally:
        engine.dispose()
    print(f"{'id':>4}  {'name':<24} {'role':<9} {'created':<17} {'last used':<17} revoked")
    for info in tokens:
        print(
            f"{info.id:>4}  {_printable(info.name):<24} {info.role.name:<9} {_when(info.created_at):<17} "
            f"{_when(info.last_used_at):<17} {_when(info.revoked_at)}"
        )
    if not tokens:
        print("(no tokens yet: lockergw central token create --name N --role viewer|operator|admin)")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from central.tokens import TokenError, revoke_token

    engine = _open(args.config)
    if isinstance(engine, int):
        return engine
    try:
        with engine.begin() as connection:
            revoked = revoke_token(connection, args.token, datetime.now(UTC))
    except TokenError as exc:
        return fail(str(exc))
    finally:
        engine.dispose()
    for info in revoked:
        print(f"token {info.id} ({_printable(info.name)}, {info.role.name}) revoked")
    return 0


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)
