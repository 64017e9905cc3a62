"""From decisions to journal records: what each tap puts in the journal (SPEC §7 envelope fields).

Pure functions; the daemon journals what they return, then energises locks.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from gateway.model import Credential, Locker
from gateway.policy import Decision, ReaderState

Record = dict[str, Any]
UidHasher = Callable[[str], str]


def credential_summary(credential: Credential | None, uid: str, hasher: UidHasher) -> dict[str, Any]:
    """The `credential` object of an envelope: never the raw uid, only its keyed hash."""
    if credential is None:
        return {"id": None, "holder": None, "role": None, "uid_hash": hasher(uid) if uid else None}
    return {
        "id": credential.id,
        "holder": credential.holder,
        "role": str(credential.role),
        "uid_hash": hasher(credential.uid) if credential.uid else None,
    }


def remote_open_record(locker: str, operator: str, note: str, authorizers: list[dict[str, Any]], unlock: str) -> Record:
    """The journal record of a `lockers/open` request (SPEC §7): an override grant with no reader or card."""
    return {
        "kind": "access.granted",
        "reader": None,
        "locker": locker,
        "credential": None,
        "reason": "remote_open",
        "override": True,
        "unlock": unlock,
        "operator": operator,
        "note": note,
        "authorizers": authorizers,
    }


def decision_records(
    decision: Decision,
    uid: str,
    hasher: UidHasher,
    board_of: Callable[[str], str | None],
    board_online: Callable[[str], bool],
) -> list[Record]:
    """The records of one decision: the main event(s) first, then the policy's side events."""
    summary = credential_summary(decision.credential, uid, hasher)
    records: list[Record] = []
    if decision.granted:
        authorizers = [{"id": c.id, "holder": c.holder} for c in decision.authorizers]
        for locker in decision.lockers:
            board = board_of(locker)
            record: Record = {
                "kind": "access.granted",
                "reader": decision.reader,
                "locker": locker,
                "credential": summary,
                "reason": decision.reason,
                "override": decision.override,
                "unlock": "sent" if board is not None and board_online(board) else "failed",
            }
            if authorizers:
                record["authorizers"] = authorizers
            records.append(record)
    else:
        records.append(
            {
                "kind": decision.kind,
                "reader": decision.reader,
                "locker": decision.lockers[0] if len(decision.lockers) == 1 else None,
                "credential": summary,
                "reason": decision.reason,
                "override": decision.override,
                "unlock": None,
            }
        )
    for event in decision.events:
        side: Record = {
            "kind": event.kind,
            "reader": decision.reader,
            "locker": event.locker,
            "credential": summary,
            "reason": event.reason,
        }
        side.update(dict(event.data))
        records.append(side)
    return records


# ---- persisted reader state (lockouts survive a restart; pending overrides and keypad entries do not)


def locker_state_to_json(locker: Locker) -> dict[str, Any]:
    """What the journal's state keeps of a locker across restarts (`locker:{id}`)."""
    return {"service": str(locker.service), "occupant": locker.occupant}


def reader_state_to_json(state: ReaderState) -> dict[str, Any]:
    return {
        "denials": [at.isoformat() for at in state.denials],
        "locked_until": state.locked_until.isoformat() if state.locked_until else None,
    }


def reader_state_from_json(value: Any) -> ReaderState:
    if not isinstance(value, dict):
        return ReaderState()
    locked = value.get("locked_until")
    return ReaderState(
        denials=tuple(datetime.fromisoformat(t) for t in value.get("denials", [])),
        locked_until=datetime.fromisoformat(locked) if locked else None,
    )
