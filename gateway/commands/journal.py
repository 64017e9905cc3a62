"""`lockergw journal verify --config FILE`: recompute the local journal's hash chain (SPEC §7).

Every kept event's hash is recomputed and each `prev_hash` checked against its predecessor, from the
chain anchor (the first event retention kept) to the last seq. Reads only: safe beside a running
gateway. Exit 0 when intact; 1 naming the first bad seq; 2 for a usage problem.
"""

from __future__ import annotations

import argparse

from gateway.commands.common import add_config_option, fail, load_or_report


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("journal", help="check the local journal")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    verify = verbs.add_parser("verify", help="recompute the hash chain and report the first bad seq")
    add_config_option(verify)
    verify.set_defaults(handler=handle_verify)


def handle_verify(args: argparse.Namespace) -> int:
    settings = load_or_report(args.config)
    if settings is None:
        return 2
    from gateway.journal import DATABASE_FILE, Journal, JournalError

    state_dir = settings.gateway.state_dir
    if not (state_dir / DATABASE_FILE).exists():
        return fail(f"{state_dir / DATABASE_FILE}: no journal yet (the gateway has not run)")
    try:
        with Journal.open(state_dir, site=settings.gateway.site, gateway=settings.gateway.id, boot_id="verify") as j:
            first, last = j.first_seq, j.last_seq
            fault = j.verify()
    except JournalError as exc:
        return fail(str(exc))
    if fault is not None:
        print(f"journal BROKEN: {fault}")
        return 1
    span = f"seq {first}..{last}" if last else "empty"
    print(f"journal ok: {span}, every hash and link recomputed")
    return 0
