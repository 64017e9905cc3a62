"""`lockergw report holders|unreturned|lost|overrides|lockers [--csv]`."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from gateway.commands.common import (
    add_config_option,
    csv_time,
    fail,
    load_or_report,
    print_columns,
    printable,
    terminal_time,
    write_csv,
)
from gateway.reports import REPORTS


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("report", help="reports from the credential store and the journal")
    parser.add_argument("name", choices=REPORTS)
    add_config_option(parser)
    parser.add_argument("--csv", action="store_true", help="CSV instead of a table")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    settings = load_or_report(args.config)
    if settings is None:
        return 2
    from gateway import reports
    from gateway.journal import Journal
    from gateway.store import Store

    state_dir = settings.gateway.state_dir
    if not (state_dir / "credentials.db").exists():
        return fail(f"{state_dir}: no credential store yet (add credentials or start the gateway first)")
    with (
        Store.open(state_dir) as store,
        Journal.open(state_dir, site=settings.gateway.site, gateway=settings.gateway.id, boot_id="report") as journal,
    ):
        now = datetime.now(UTC)
        zone = settings.gateway.zone()

        def when(moment: datetime | None) -> str:
            return csv_time(moment, zone) if args.csv else terminal_time(moment, zone)

        match args.name:
            case "holders":
                header, rows = reports.holders(store, when)
            case "unreturned":
                header, rows = reports.unreturned(store, now, when)
            case "lost":
                header, rows = reports.lost(store, journal)
            case "overrides":
                header, rows = reports.overrides(journal, when)
            case _:
                header, rows = reports.lockers(settings, store, journal)
    if args.csv:
        write_csv(sys.stdout, header, rows)
        return 0
    if not rows:
        print("(nothing to report)")
        return 0
    if not sys.stdout.isatty():  # piped: full values, one row per line, nothing cut
        print_columns(sys.stdout, header, rows)
        return 0
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{args.name} — {settings.gateway.site}/{settings.gateway.id}")
    for column in header:
        table.add_column(column, overflow="fold")  # a narrow terminal wraps values, never cuts them
    for row in rows:
        table.add_row(*(Text(printable(cell)) for cell in row))  # stored text is never markup or escapes
    Console().print(table)
    return 0
