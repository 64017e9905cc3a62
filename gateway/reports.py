"""Reports for facilities staff (SPEC §10): who holds what, what is unreturned or lost, who overrode.

Each report is a header and rows of strings, printed as a table or CSV by `lockergw report`. Times
are written by the `when` the command passes: the terminal's form or the CSV form (README, "Dates").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime

from gateway.config import Settings
from gateway.journal import Journal
from gateway.model import OUTSTANDING_STATUSES, Status
from gateway.store import Store

Report = tuple[list[str], list[list[str]]]
When = Callable[[datetime | None], str]
REPORTS = ("holders", "unreturned", "lost", "overrides", "lockers")


def _utc_text(value: datetime | None) -> str:
    return value.isoformat(timespec="minutes") if value else ""


def holders(store: Store, when: When = _utc_text) -> Report:
    header = ["holder", "credential", "kind", "role", "scope", "status", "issue_no", "valid_until", "deposit"]
    rows = [
        [
            c.holder,
            c.id,
            str(c.kind),
            str(c.role),
            ";".join(c.scope),
            str(c.status),
            str(c.issue_no),
            when(c.valid_until),
            c.deposit or "",
        ]
        for c in sorted(store.all(), key=lambda c: (c.holder, c.id))
    ]
    return header, rows


def unreturned(store: Store, now: datetime, when: When = _utc_text) -> Report:
    """Keys still out in the world whose validity has ended, or that were reported lost."""
    header = ["holder", "credential", "kind", "key_code", "status", "valid_until", "deposit"]
    rows = [
        [c.holder, c.id, str(c.kind), c.key_code or "", str(c.status), when(c.valid_until), c.deposit or ""]
        for c in sorted(store.all(), key=lambda c: (c.holder, c.id))
        if c.status in OUTSTANDING_STATUSES
        and (c.status == Status.LOST or (c.valid_until is not None and c.valid_until <= now))
    ]
    return header, rows


def journal_events(journal: Journal, batch: int = 1000) -> Iterator[dict[str, object]]:
    seq = 1
    while True:
        page = journal.read(seq, batch)
        if not page:
            return
        yield from page
        seq = int(str(page[-1]["seq"])) + 1


def lost(store: Store, journal: Journal) -> Report:
    presented: Counter[str] = Counter()
    for event in journal_events(journal):
        credential = event.get("credential")
        if event["kind"] == "credential.lost_presented" and isinstance(credential, dict):
            presented[str(credential.get("id"))] += 1
    header = ["holder", "credential", "kind", "key_code", "issue_no", "presented_since_lost"]
    rows = [
        [c.holder, c.id, str(c.kind), c.key_code or "", str(c.issue_no), str(presented[c.id])]
        for c in sorted(store.all(), key=lambda c: (c.holder, c.id))
        if c.status == Status.LOST
    ]
    return header, rows


def overrides(journal: Journal, when: When = _utc_text) -> Report:
    header = ["seq", "ts", "locker", "reader", "reason", "credential", "holder", "authorizers"]
    rows: list[list[str]] = []
    for event in journal_events(journal):
        if event["kind"] != "access.granted" or not event.get("override"):
            continue
        credential = event.get("credential") if isinstance(event.get("credential"), dict) else {}
        assert isinstance(credential, dict)
        authorizers = event.get("authorizers")
        authorizers = authorizers if isinstance(authorizers, list) else []
        names = "+".join(str(a.get("holder") or a.get("id")) for a in authorizers if isinstance(a, dict))
        rows.append(
            [
                str(event["seq"]),
                when(_instant(str(event["ts"]))),
                str(event.get("locker") or ""),
                str(event.get("reader") or ""),
                str(event.get("reason")),
                str(credential.get("id") or ""),
                str(credential.get("holder") or ""),
                names or str(event.get("operator") or ""),
            ]
        )
    return header, rows


def lockers(settings: Settings, store: Store, journal: Journal) -> Report:
    state = journal.get_state("locker:")
    header = ["locker", "section", "department", "mode", "kind", "service", "occupant", "keys_out", "holders"]
    rows: list[list[str]] = []
    for locker in settings.lockers:
        saved = state.get(f"locker:{locker.id}") or {}
        keys = store.keys_for_locker(locker.id)
        rows.append(
            [
                locker.id,
                locker.section,
                locker.department,
                locker.mode,
                "keyed" if locker.board is None else "electronic",
                str(saved.get("service", "in_service")),
                str(saved.get("occupant") or ""),
                str(len(keys)),
                ";".join(f"{k.holder} (#{k.issue_no})" for k in keys),
            ]
        )
    return header, rows


def _instant(ts: str) -> datetime | None:
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None
