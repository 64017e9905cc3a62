"""`lockergw central credentials import FILE.csv --site S`: issue a site's credentials from a CSV file.

The file follows the gateway's §4 CSV rules (gateway.commands.credentials.read_credentials_csv: header row
= upsert field names, `;` between scope names) and central's issuing rules (the gateway's own, see
central.services.issuance): the whole file is checked first and nothing is imported when any row is bad,
one line per bad row (`line N: column: problem`, the header being line 1), exit 2. Imported rows reach
every gateway of the site through central's pusher like any other change. Card numbers are shown masked.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from central.cli import add_central_config_option, open_central
from gateway.commands.common import fail, read_csv_file

DEFAULT_BY = "cli"


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = groups.add_parser("credentials", help="issue credentials for a site (CSV import)")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    importing = verbs.add_parser("import", help="import FILE.csv for a site, whole or not at all")
    importing.add_argument("file", metavar="FILE.csv")
    importing.add_argument("--site", required=True, help="the site the credentials are issued for")
    importing.add_argument("--by", default=None, help=f"who issues them (default {DEFAULT_BY})")
    add_central_config_option(importing)
    importing.set_defaults(handler=_import)


def _import(args: argparse.Namespace) -> int:
    path = Path(args.file)
    text = read_csv_file(path)
    if isinstance(text, int):
        return text
    opened = open_central(args.config)
    if isinstance(opened, int):
        return opened
    settings, engine = opened
    from central.services import credentials, issuance
    from central.services.errors import ServiceError
    from gateway.commands.credentials import _report_bad_rows, read_credentials_csv

    parsed = read_credentials_csv(text)
    if parsed.header_problems:
        return _report_bad_rows(path, parsed.header_problems, rows=None)
    by = args.by or DEFAULT_BY
    try:
        with engine.begin() as connection:
            outcome = credentials.import_credentials(
                connection,
                args.site,
                parsed.items,
                by=by,
                actor=f"cli:{by}",
                now=datetime.now(UTC),
                zone=ZoneInfo(settings.central.timezone),
            )
            if parsed.row_problems:  # the readable rows were checked too, so every bad line is named at once
                raise issuance.Refused([])
    except issuance.Refused as refused:
        problems = parsed.row_problems + [(parsed.lines[p.index], p.field, p.message) for p in refused.problems]
        return _report_bad_rows(path, problems, rows=len(parsed.items))
    except ServiceError as exc:
        return fail(f"{path.name}: {exc}")
    finally:
        engine.dispose()
    print(
        f"imported {path.name} for site {args.site}: {outcome.added} added, {outcome.updated} updated, "
        f"{outcome.unchanged} unchanged (credential revision {outcome.revision})"
    )
    return 0
