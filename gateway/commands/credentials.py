"""`lockergw credentials …`: issue, track, replace and retire cards, fobs and keys (SPEC §4).

Works on `credentials.db` in the configured `state_dir` whether or not the daemon runs (SQLite WAL
lets both at it; the daemon picks a change up within a second). Card numbers are shown masked
everywhere, errors included; only `enroll` shows a whole uid, on the operator's own terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any, TextIO

from drivers.base import CardRead, DeviceEvent, DeviceOffline, Reader
from gateway.commands.common import (
    EXIT_USER_ERROR,
    add_config_option,
    csv_time,
    fail,
    load_or_report,
    print_columns,
    printable,
    scan_csv_file,
    terminal_time,
    write_csv,
)
from gateway.commands.visitor import add_arguments as add_visitor_arguments
from gateway.commands.visitor import issue as issue_visitor_code
from gateway.config import Settings
from gateway.credential_input import SCOPE_SEPARATOR, UPSERT_FIELDS
from gateway.credentials_csv import CredentialRows
from gateway.credentials_csv import read_credentials_csv as read_credentials_csv  # central's import reads whole files
from gateway.model import OUTSTANDING_STATUSES, Credential, Kind, Role, Status
from gateway.store import Store, StoreError, UpsertRefused
from gateway.uid import mask_uid
from gateway.visitors import VisitorError

DEFAULT_BY = "cli"

Handler = Callable[[argparse.Namespace, Store, Settings], int]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "credentials",
        help="issue, list, replace and retire credentials",
        description="Issue, track, replace and retire cards, fobs, mobile credentials and physical keys.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    add = _verb(verbs, "add", "issue one credential", _add)
    add.add_argument("--id", required=True, help="credential id, e.g. C-1001")
    add.add_argument("--uid", help="card number (hex, a 10-digit fob number or FFF,CCCCC); not for a physical key")
    add.add_argument("--holder", required=True, help="person or role id")
    add.add_argument("--role", required=True, help=f"one of: {', '.join(role.value for role in Role)}")
    add.add_argument(
        "--scope",
        action="append",
        default=[],
        metavar="NAME",
        help="locker ids (users) or section/department names (masters); repeat or separate with ';'",
    )
    add.add_argument("--kind", help=f"one of: {', '.join(kind.value for kind in Kind)} (default card)")
    add.add_argument("--status", help="initial status (default active)")
    add.add_argument("--valid-from", metavar="T", help="ISO date or date-time, read in gateway.timezone")
    add.add_argument("--valid-until", metavar="T", help="exclusive; a date alone covers that whole day")
    add.add_argument("--schedule", help="weekly windows, e.g. 'Mon-Fri 07:30-18:00'")
    add.add_argument("--key-code", metavar="K", help="the code a physical key is cut to")
    add.add_argument("--deposit", help="deposit held for this key")
    add.add_argument("--approved-by", metavar="P", help="who authorised a second key for the same locker or code")
    add.add_argument("--by", help=f"who issues it (default {DEFAULT_BY})")

    imp = _verb(verbs, "import", "add or update credentials from a CSV file", _import)
    imp.add_argument("file", metavar="FILE.csv", help=f"header row of field names: {', '.join(UPSERT_FIELDS)}")
    imp.add_argument("--by", help=f"who imports (default {DEFAULT_BY})")
    imp.add_argument("--dry-run", action="store_true", help="check the whole file and change nothing")

    listing = _verb(verbs, "list", "list credentials (uids masked)", _list)
    listing.add_argument("--csv", action="store_true", help="CSV report on stdout (not a backup: uids are masked)")

    show = _verb(verbs, "show", "show one credential", _show)
    show.add_argument("id", metavar="ID")

    status = _verb(verbs, "set-status", "change a credential's status", _set_status)
    status.add_argument("id", metavar="ID")
    status.add_argument("status", metavar="STATUS", help=f"one of: {', '.join(s.value for s in Status)}")
    status.add_argument("--reason", help="why (kept in the change log and the journal)")
    status.add_argument("--by", help=f"who (default {DEFAULT_BY})")

    rep = _verb(verbs, "replace", "retire a key as replaced and issue its successor", _replace)
    rep.add_argument("id", metavar="ID")
    rep.add_argument("new_uid", metavar="NEW_UID", nargs="?", default="", help="the new card's number (none for a key)")
    rep.add_argument("--new-id", metavar="N", help="id of the new credential (default {ID}-{issue_no})")
    rep.add_argument("--by", help=f"who (default {DEFAULT_BY})")

    remove = _verb(verbs, "remove", "delete a credential that is no longer out (history stays in the journal)", _remove)
    remove.add_argument("id", metavar="ID")
    remove.add_argument("--force", action="store_true", help="remove even an active, suspended or lost credential")
    remove.add_argument("--by", help=f"who (default {DEFAULT_BY})")

    visitor = _verb(verbs, "visitor", "issue a visitor or contractor code and show it as a QR code", _visitor)
    add_visitor_arguments(visitor)

    enroll = verbs.add_parser(
        "enroll",
        help="show the uid of the next card tapped at a reader",
        description="Show the uid of the next card tapped at a reader, on this terminal only. With the gateway "
        "running, the card is handed over through its control socket (state_dir/control.sock) instead of being "
        "decided; with the gateway stopped, enroll opens the reader itself.",
    )
    add_config_option(enroll)
    enroll.add_argument("--reader", required=True, metavar="READER", help="reader id from the configuration")
    enroll.add_argument("--timeout", type=float, default=60.0, metavar="S", help="give up after S seconds (60)")
    enroll.set_defaults(handler=_enroll)


def _visitor(args: argparse.Namespace, store: Store, settings: Settings) -> int:
    try:
        return issue_visitor_code(args, store, settings)
    except VisitorError as exc:
        return fail(str(exc))


def _verb(
    verbs: argparse._SubParsersAction[argparse.ArgumentParser], name: str, text: str, handler: Handler
) -> argparse.ArgumentParser:
    parser = verbs.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
    add_config_option(parser)
    parser.set_defaults(handler=lambda args: _with_store(args, handler))
    return parser


def _with_store(args: argparse.Namespace, handler: Handler) -> int:
    """Load the configuration, open the store, run the verb; every user error is one line, exit 2."""
    settings = load_or_report(args.config)
    if settings is None:
        return EXIT_USER_ERROR
    state_dir = settings.gateway.state_dir
    try:
        with Store.open(state_dir, zone=settings.gateway.zone()) as store:
            return handler(args, store, settings)
    except StoreError as exc:
        return fail(str(exc))
    except sqlite3.Error as exc:
        return fail(f"{state_dir / 'credentials.db'}: {exc}")
    except PermissionError as exc:
        return fail(f"{exc.filename or state_dir}: permission denied")
    except BrokenPipeError:
        # `lockergw credentials list | head`: the reader left; say nothing more.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _now() -> datetime:
    return datetime.now(UTC)


# ---- verbs -------------------------------------------------------------------------------------


def _add(args: argparse.Namespace, store: Store, settings: Settings) -> int:
    if store.get(args.id.strip()) is not None:
        return fail(f"{args.id.strip()} already exists (change it with set-status, replace or import)")
    item: dict[str, Any] = {
        "id": args.id,
        "uid": args.uid,
        "holder": args.holder,
        "role": args.role,
        "scope": SCOPE_SEPARATOR.join(args.scope),
        "kind": args.kind,
        "status": args.status,
        "valid_from": args.valid_from,
        "valid_until": args.valid_until,
        "schedule": args.schedule,
        "key_code": args.key_code,
        "deposit": args.deposit,
        "approved_by": args.approved_by,
    }
    (credential,) = store.upsert([item], by=args.by or DEFAULT_BY, now=_now())
    print(f"added {credential.id}: {_summary(credential)}")
    return 0


def _import(args: argparse.Namespace, store: Store, settings: Settings) -> int:
    path = Path(args.file)
    scanned = scan_csv_file(path)
    if isinstance(scanned, int):
        return scanned
    try:
        with path.open(encoding="utf-8-sig") as handle:
            rows = CredentialRows(handle)
            if rows.header_problems:
                return _report_bad_rows(path, rows.header_problems, rows=None)
            return _import_rows(args, store, path, rows, estimate=scanned.lines - 1)
    except UnicodeDecodeError:  # the file changed since it was checked
        return fail(f"{path}: not UTF-8 text; save the file as CSV UTF-8")


def _import_rows(args: argparse.Namespace, store: Store, path: Path, rows: CredentialRows, estimate: int) -> int:
    """Stream the rows into the store (batch by batch, one transaction) behind a progress bar."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    columns = (TextColumn("{task.description:<9}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=not console.is_terminal, transient=False) as bar:
        phases = ("checking", "matching", "writing")
        tasks = {phase: bar.add_task(phase, total=max(estimate, 1)) for phase in phases}

        def progress(phase: str, done: int, total: int) -> None:
            # The file's line count is the estimate: a quoted cell may span lines, blank lines are skipped.
            bar.update(tasks[phase], completed=done, total=max(total, estimate, done, 1))

        try:
            with _collector_paused():
                result = store.merge(
                    rows,
                    by=args.by or DEFAULT_BY,
                    now=_now(),
                    action="import",
                    progress=progress,
                    dry_run=args.dry_run,
                    keep=False,
                )
        except UpsertRefused as refused:
            bar.stop()
            problems = [(rows.lines[problem.index], problem.field, problem.message) for problem in refused.problems]
            return _report_bad_rows(path, problems, rows=rows.count, bad=refused.count)
        for task in tasks.values():
            bar.update(task, completed=rows.count, total=max(rows.count, 1))
    verb = "checked (dry run, nothing changed)" if args.dry_run else "imported"
    print(
        f"{verb} {path.name}: {rows.count} rows — {result.added} added, {result.updated} updated, "
        f"{result.unchanged} unchanged"
    )
    return 0


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector paused while a file is imported: the import makes no reference cycles,
    and each batch's hundred thousand new objects would only set it walking them again and again
    (a few per cent of a million-row import)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _report_bad_rows(
    path: Path, problems: Sequence[tuple[int, str, str]], rows: int | None, bad: int | None = None
) -> int:
    """One line per problem (`line N: column: message`), then one saying nothing was imported. `bad`
    is how many rows were bad when `problems` are only the first of them."""
    for line, column, message in sorted(problems, key=lambda problem: problem[0]):
        print(f"line {line}: {column}: {message}", file=sys.stderr)
    shown = len({line for line, _, _ in problems})
    bad = max(bad or 0, shown)
    if bad > shown:
        print(f"… and {bad - shown} more bad rows (the first {shown} are shown)", file=sys.stderr)
    what = "the header" if rows is None else f"{bad} bad row{'s' if bad != 1 else ''}"
    return fail(f"{path.name}: nothing imported ({what}; fix and import again)")


def _list(args: argparse.Namespace, store: Store, settings: Settings) -> int:
    zone = settings.gateway.zone()
    if args.csv:
        write_csv(sys.stdout, CSV_REPORT_COLUMNS, (_report_row(credential, zone) for credential in store.all()))
        return 0
    _print_table(sys.stdout, (_table_row(credential, zone) for credential in store.all()))
    return 0


def _show(args: argparse.Namespace, store: Store, settings: Settings) -> int:
    credential = store.get(args.id)
    if credential is None:
        return fail(f"no credential with id {args.id!r}")
    zone = settings.gateway.zone()
    lines = [
        ("id", credential.id),
        ("uid", mask_uid(credential.uid) + _FORM_NOTES.get(credential.uid_form, "") if credential.uid else "-"),
        ("holder", credential.holder),
        ("role", credential.role.value),
        ("kind", credential.kind.value),
        ("status", credential.status.value),
        ("scope", ", ".join(credential.scope) or "-"),
        ("valid from", _local(credential.valid_from, zone) or "-"),
        ("valid until", _until(credential.valid_until, zone)),
        ("schedule", credential.schedule or "-"),
        ("key code", credential.key_code or "-"),
        ("deposit", credential.deposit or "-"),
        ("approved by", credential.approved_by or "-"),
        ("single use", "yes" if credential.single_use else "no"),
        ("issue no", str(credential.issue_no)),
        ("issued", f"{_local(credential.issued_at, zone) or '-'} by {credential.issued_by or '-'}"),
    ]
    if credential.kind is Kind.PHYSICAL_KEY and credential.key_code:
        keys = store.keys_for_code(credential.key_code)
        lines.append(("keys cut", f"{len(keys)} outstanding for code {credential.key_code}"))
    width = max(len(name) for name, _ in lines)
    for name, value in lines:
        print(f"{name + ':':<{width + 1}} {printable(str(value))}")
    return 0


def _set_status(args: argparse.Namespace, store: Store, settings: Settings) -> int:
    before = store.get(args.id)
    after = store.set_status(args.id, args.status, by=args.by or DEFAULT_BY, now=_now(), reason=args.reason)
    was = f" (was {before.status.value})" if before is not None else ""
    print(f"{after.id} is now {after.status.value}{was}")
    return 0


def _replace(args: argparse.Namespace, store: Store, settings: Settings) -> int:
    successor = store.replace(args.id, args.new_uid, by=args.by or DEFAULT_BY, now=_now(), new_id=args.new_id)
    print(f"{args.id} replaced by {successor.id}: {_summary(successor)}")
    return 0


def _remove(args: argparse.Namespace, store: Store, settings: Settings) -> int:
    credential = store.get(args.id)
    if credential is not None and credential.status in OUTSTANDING_STATUSES and not args.force:
        return fail(
            f"{credential.id} is still {credential.status.value}: first "
            f"`set-status {credential.id} returned` (or revoked), or remove it with --force"
        )
    store.remove(args.id, by=args.by or DEFAULT_BY, now=_now(), force=args.force)
    print(f"removed {args.id} (its history stays in the journal)")
    return 0


def _enroll(args: argparse.Namespace) -> int:
    """The one place a whole card number is shown: on the operator's own terminal, never logged."""
    settings = load_or_report(args.config)
    if settings is None:
        return EXIT_USER_ERROR
    section = next((reader for reader in settings.readers if reader.id == args.reader), None)
    if section is None:
        known = ", ".join(reader.id for reader in settings.readers) or "none configured"
        return fail(f"no reader {args.reader!r} in {Path(args.config).name} (readers: {known})")
    from gateway.control import enroll_via_daemon

    print(f"reader {section.id}: waiting up to {args.timeout:g} s for a card (Ctrl-C to stop)", file=sys.stderr)
    answer = asyncio.run(enroll_via_daemon(settings.gateway.state_dir, section.id, args.timeout))
    if answer is not None:  # the running gateway owns the reader and handed us its next card
        kind, _, value = answer.partition(" ")
        if kind != "uid":
            return fail(f"reader {section.id!r}: {value or answer}")
        print(value)
        _say_if_issued(settings, value)
        return 0
    from drivers.registry import DriverUnavailable
    from gateway.devices import build_reader

    try:
        reader = build_reader(section)
    except DriverUnavailable as exc:
        return fail(f"reader {section.id!r}: {exc}")
    outcome = asyncio.run(next_card(reader, args.timeout))
    if outcome is None:
        return fail(f"reader {section.id!r}: no card within {args.timeout:g} s")
    if isinstance(outcome, str):
        return fail(f"reader {section.id!r}: {outcome}")
    print(outcome.uid)
    _say_if_issued(settings, outcome.uid)
    return 0


async def next_card(reader: Reader, timeout_s: float) -> CardRead | str | None:
    """Run a reader until its first card: the read, a reason the port cannot be used, or None on timeout."""
    loop = asyncio.get_running_loop()
    first: asyncio.Future[CardRead | str] = loop.create_future()

    def emit(event: DeviceEvent) -> None:
        if first.done():
            return
        if isinstance(event, CardRead):
            first.set_result(event)
        elif isinstance(event, DeviceOffline):
            first.set_result(event.reason)

    running = asyncio.create_task(reader.run(emit))
    either: set[asyncio.Future[Any]] = {first, running}
    try:
        await asyncio.wait(either, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    return first.result() if first.done() else None


def _say_if_issued(settings: Settings, uid: str) -> None:
    try:
        with Store.open(settings.gateway.state_dir, zone=settings.gateway.zone()) as store:
            issued = store.by_uid(uid)
    except (StoreError, sqlite3.Error, OSError):
        return
    if issued is not None:
        credential = issued
        print(f"already issued as {credential.id} ({credential.holder}, {credential.status.value})", file=sys.stderr)


# ---- output ------------------------------------------------------------------------------------

CSV_REPORT_COLUMNS = (*UPSERT_FIELDS, "issue_no", "issued_at", "issued_by")
_TABLE_COLUMNS = ("ID", "UID", "HOLDER", "ROLE", "KIND", "STATUS", "SCOPE", "VALID FROM", "VALID UNTIL", "ISSUE")


#: How `show` says that a uid was enrolled from what is printed on a fob (SPEC §4 match rule).
_FORM_NOTES = {
    "dec": " (the number printed on a fob: also matches EM4100 readers by its low 32 bits)",
    "fc": " (facility,card printed on a fob: also matches EM4100 readers by its low 24 bits)",
}


def _summary(credential: Credential) -> str:
    card = f"uid {mask_uid(credential.uid)}" if credential.uid else f"key code {credential.key_code}"
    scope = ", ".join(credential.scope) or "no scope"
    return (
        f"{credential.kind.value} {card}, holder {credential.holder}, {credential.role.value} for {scope}, "
        f"{credential.status.value}, issue {credential.issue_no}"
    )


def _local(moment: datetime | None, zone: tzinfo) -> str | None:
    return terminal_time(moment, zone) or None


def _until(moment: datetime | None, zone: tzinfo) -> str:
    text = _local(moment, zone)
    return "-" if text is None else f"{text} (exclusive: valid up to, not including, this moment)"


def _report_row(credential: Credential, zone: tzinfo) -> list[str]:
    def iso(moment: datetime | None) -> str:
        return csv_time(moment, zone)

    return [
        credential.id,
        mask_uid(credential.uid) if credential.uid else "",
        credential.holder,
        credential.role.value,
        SCOPE_SEPARATOR.join(credential.scope),
        credential.kind.value,
        credential.status.value,
        iso(credential.valid_from),
        iso(credential.valid_until),
        credential.schedule or "",
        credential.key_code or "",
        credential.deposit or "",
        credential.approved_by or "",
        "true" if credential.single_use else "",
        str(credential.issue_no),
        iso(credential.issued_at),
        credential.issued_by or "",
    ]


def _table_row(credential: Credential, zone: tzinfo) -> tuple[str, ...]:
    return (
        credential.id,
        mask_uid(credential.uid) if credential.uid else f"key {credential.key_code}",
        credential.holder,
        credential.role.value,
        credential.kind.value,
        credential.status.value,
        ";".join(credential.scope),
        _local(credential.valid_from, zone) or "",
        _local(credential.valid_until, zone) or "",
        str(credential.issue_no),
    )


def _print_table(out: TextIO, rows: Iterable[tuple[str, ...]]) -> None:
    table = list(rows)
    if not table:
        print("no credentials", file=out)
        return
    print_columns(out, _TABLE_COLUMNS, table)
