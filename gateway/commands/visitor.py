"""`lockergw credentials visitor`: issue a visitor or contractor code and show it as a QR code.

The code is shown on the operator's terminal (and written to `--png FILE` for printing or sending to
the visitor's phone) and nowhere else: the store holds it like any uid, events carry only its hash.
"""

from __future__ import annotations

import argparse
import secrets
from datetime import UTC, datetime
from pathlib import Path

from gateway.commands.common import terminal_time
from gateway.config import Settings
from gateway.store import Store, StoreError
from gateway.visitors import VisitorError, grouped, new_code, parse_validity, terminal_qr, write_png

#: How many times a fresh code or id is drawn when it happens to be taken already.
DRAWS = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--holder", required=True, metavar="NAME", help="the visitor or contractor")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--locker", metavar="ID", help="the one locker the code opens")
    where.add_argument("--bank", metavar="READER", help="a bank reader: the code takes one of its shared lockers")
    parser.add_argument("--valid-for", default="4h", metavar="DURATION", help="e.g. 4h, 90m, 1d (default 4h)")
    parser.add_argument("--single-use", action="store_true", help="revoked by the tap that uses it")
    parser.add_argument("--id", metavar="ID", help="credential id (default V-<random>)")
    parser.add_argument("--png", metavar="FILE", help="also write the QR code to a PNG file")
    parser.add_argument("--by", help="who issues it (default cli)")


def scope_for(args: argparse.Namespace, settings: Settings) -> list[str]:
    """The lockers a code is bound to: `--locker`, or the shared lockers of the `--bank` reader."""
    if args.locker:
        if all(locker.id != args.locker for locker in settings.lockers):
            raise VisitorError(f"no locker {args.locker!r} in the configuration")
        return [args.locker]
    reader = next((r for r in settings.readers if r.id == args.bank), None)
    if reader is None:
        known = ", ".join(r.id for r in settings.readers) or "none configured"
        raise VisitorError(f"no reader {args.bank!r} in the configuration (readers: {known})")
    shared = {locker.id for locker in settings.lockers if locker.mode == "shared"}
    scope = [locker_id for locker_id in reader.lockers if locker_id in shared]
    if not scope:
        raise VisitorError(f"reader {args.bank!r} serves no shared lockers: bind the code to one with --locker")
    return scope


def issue(args: argparse.Namespace, store: Store, settings: Settings) -> int:
    validity = parse_validity(args.valid_for)
    scope = scope_for(args, settings)
    now = datetime.now(UTC)
    until = now + validity
    credential = None
    for _ in range(DRAWS):
        code = new_code()
        ident = args.id or f"V-{secrets.token_hex(4).upper()}"
        if store.by_uid(code) is not None or (not args.id and store.get(ident) is not None):
            continue
        if args.id and store.get(ident) is not None:
            raise StoreError(f"{ident} already exists")
        item = {
            "id": ident,
            "uid": code,
            "holder": args.holder,
            "role": "user",
            "kind": "mobile",
            "scope": scope,
            "valid_from": now.isoformat(),
            "valid_until": until.isoformat(),
            "single_use": args.single_use,
        }
        (credential,) = store.upsert([item], by=args.by or "cli", now=now)
        break
    if credential is None:
        raise StoreError("could not draw a free code; try again")
    if args.png:
        try:
            write_png(code, Path(args.png))
        except OSError as exc:
            raise VisitorError(f"--png {args.png}: {exc.strerror}") from None
    zone = settings.gateway.zone()
    where = f"locker {scope[0]}" if args.locker else f"a shared locker at {args.bank}"
    print(f"visitor code {credential.id} for {credential.holder}: {grouped(code)}")
    print(f"opens {where}, valid until {terminal_time(until, zone)}", end="")
    print(", single use" if credential.single_use else "")
    print(terminal_qr(code), end="")
    if args.png:
        print(f"QR code written to {args.png}")
    return 0
