"""Credentials issued by central (SPEC §4, §11): the estate's issuing office.

Every change of a site's credentials is one transaction that (1) locks the site's row in
`credential_sites` (changes of one site serialise, whichever worker or console makes them), (2) checks the
change by the gateway's own rules (central.services.issuance), (3) writes the credentials, (4) bumps the
site's revision and digest, (5) writes the SPEC §7 request that carries the change to the gateways into the
outbox (`credential_changes`), and (6) records it in the audit log. Nothing is half-applied: a refused item
refuses the whole change. The pusher (central.credential_push) then sends the outbox to every gateway of
the site.

Each function takes a connection inside a transaction (`engine.begin()`), plain arguments and the `actor`
(how the audit log names the caller), so the API, the CLI and the console call them alike. Raw uids are
stored but never returned: every view carries the masked form of SPEC §4.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, tzinfo
from typing import Any, Literal

from sqlalchemy import Connection, delete, insert, select, update

from central.alerts import open_alert
from central.schema import alerts, audit_log, credential_changes, credential_sites, credentials
from central.services import audit, issuance
from central.services.errors import BadInput, Conflict, NotFound
from central.services.models import CredentialList, CredentialView, Deposit, HistoryEntry, UpsertOutcome
from central.services.times import iso, utc, utc_or_none
from central.sql import upsert as upsert_statement
from gateway.model import OUTSTANDING_STATUSES, Credential, Kind, Role, Status
from gateway.uid import mask_uid

DEPOSIT_STATES = ("held", "refunded", "forfeited")
DepositState = Literal["held", "refunded", "forfeited"]
#: Statuses of a key that is out with its holder and should come back at the end of its validity.
KEYS_OUT = (Status.ACTIVE.value, Status.SUSPENDED.value)
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
EMPTY_DIGEST = issuance.digest(())


# ---- reading ---------------------------------------------------------------------------------------


def _governance(row: Any) -> dict[str, Any]:
    return {
        "deposit_state": row.deposit_state,
        "deposit_changed_by": row.deposit_changed_by,
        "deposit_changed_at": utc_or_none(row.deposit_changed_at),
        "returned_at": utc_or_none(row.returned_at),
        "returned_by": row.returned_by,
        "status_reason": row.status_reason,
    }


def view(row: Any) -> CredentialView:
    """A stored credential as callers see it: the uid masked, the deposit with its state."""
    deposit = (
        Deposit(
            amount=row.deposit,
            state=row.deposit_state or "held",
            changed_by=row.deposit_changed_by,
            changed_at=iso(row.deposit_changed_at),
        )
        if row.deposit
        else None
    )
    return CredentialView(
        site=row.site,
        id=row.id,
        uid=mask_uid(row.uid) if row.uid else None,
        holder=row.holder,
        role=row.role,
        scope=json.loads(row.scope),
        kind=row.kind,
        status=row.status,
        status_reason=row.status_reason,
        valid_from=iso(row.valid_from),
        valid_until=iso(row.valid_until),
        schedule=row.schedule,
        key_code=row.key_code,
        deposit=deposit,
        approved_by=row.approved_by,
        issue_no=row.issue_no,
        issued_at=iso(row.issued_at) or "",
        issued_by=row.issued_by,
        returned_at=iso(row.returned_at),
        returned_by=row.returned_by,
        revision=row.revision,
    )


def _encode_cursor(site: str, ident: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([site, ident]).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        site, ident = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(site, str) or not isinstance(ident, str) or "\x00" in site + ident:
            raise ValueError
    except (ValueError, TypeError):
        raise BadInput("cursor", "not a cursor this API returned (pass back the value of 'cursor' as is)") from None
    return site, ident


def list_credentials(
    connection: Connection,
    *,
    site: str | None = None,
    holder: str | None = None,
    status: str | None = None,
    kind: str | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> CredentialList:
    """Credentials by (site, id), filtered; uids masked."""
    if not 1 <= limit <= MAX_LIMIT:
        raise BadInput("limit", f"must be between 1 and {MAX_LIMIT}")
    if status is not None and status not in {s.value for s in Status}:
        raise BadInput("status", f"unknown status {status!r} (one of: {', '.join(s.value for s in Status)})")
    if kind is not None and kind not in {k.value for k in Kind}:
        raise BadInput("kind", f"unknown kind {kind!r} (one of: {', '.join(k.value for k in Kind)})")
    query = select(credentials).order_by(credentials.c.site, credentials.c.id).limit(limit + 1)
    for column, value in (
        (credentials.c.site, site),
        (credentials.c.holder, holder),
        (credentials.c.status, status),
        (credentials.c.kind, kind),
    ):
        if value is not None:
            query = query.where(column == value)
    if cursor:
        after_site, after_id = _decode_cursor(cursor)
        query = query.where(
            (credentials.c.site > after_site) | ((credentials.c.site == after_site) & (credentials.c.id > after_id))
        )
    rows = connection.execute(query).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return CredentialList(
        credentials=[view(row) for row in rows],
        cursor=_encode_cursor(rows[-1].site, rows[-1].id) if more and rows else None,
    )


def get_credential(connection: Connection, site: str, credential_id: str) -> CredentialView:
    return view(_row(connection, site, credential_id))


def _row(connection: Connection, site: str, credential_id: str) -> Any:
    row = connection.execute(
        select(credentials).where(credentials.c.site == site, credentials.c.id == credential_id)
    ).first()
    if row is None:
        raise NotFound(f"no credential {credential_id!r} at site {site!r}")
    return row


def site_set(connection: Connection, site: str) -> dict[str, Credential]:
    """Every credential of a site as the gateway's Credential, by id."""
    rows = connection.execute(select(credentials).where(credentials.c.site == site))
    return {row.id: issuance.from_row(row) for row in rows}


def history(connection: Connection, site: str, credential_id: str) -> list[HistoryEntry]:
    """Everything done to one key, oldest first (from the audit log)."""
    _row(connection, site, credential_id)
    rows = connection.execute(
        select(audit_log)
        .where(audit_log.c.site == site, audit_log.c.target == credential_id)
        .order_by(audit_log.c.at, audit_log.c.id)
    )
    return [
        HistoryEntry(at=iso(row.at) or "", actor=row.actor, action=row.action, detail=json.loads(row.detail))
        for row in rows
    ]


def key_counts(connection: Connection, site: str) -> dict[str, dict[str, int]]:
    """How many keys are out (active, suspended or lost) per locker and per key code (SPEC §4)."""
    by_locker: dict[str, int] = {}
    by_code: dict[str, int] = {}
    outstanding = [s.value for s in OUTSTANDING_STATUSES]
    rows = connection.execute(
        select(credentials.c.role, credentials.c.scope, credentials.c.key_code).where(
            credentials.c.site == site, credentials.c.status.in_(outstanding)
        )
    )
    for row in rows:
        if row.role == Role.USER.value:
            for locker in json.loads(row.scope):
                by_locker[locker] = by_locker.get(locker, 0) + 1
        if row.key_code is not None:
            by_code[row.key_code] = by_code.get(row.key_code, 0) + 1
    return {"lockers": dict(sorted(by_locker.items())), "key_codes": dict(sorted(by_code.items()))}


def site_state(connection: Connection, site: str) -> tuple[int, str] | None:
    """The site's credential revision and digest, or None when central has never issued for it."""
    row = connection.execute(
        select(credential_sites.c.revision, credential_sites.c.digest).where(credential_sites.c.site == site)
    ).first()
    return None if row is None else (row.revision, row.digest)


# ---- writing -------------------------------------------------------------------------------------


def _insert_ignoring_duplicates(connection: Connection, table: Any, values: dict[str, Any]) -> None:
    connection.execute(upsert_statement(connection, table).values(**values).on_conflict_do_nothing())


def _lock_site(connection: Connection, site: str, now: datetime) -> int:
    """Hold the site's row until the transaction ends; its current revision."""
    _insert_ignoring_duplicates(
        connection, credential_sites, {"site": site, "revision": 0, "digest": EMPTY_DIGEST, "changed_at": now}
    )
    revision: int = connection.execute(
        select(credential_sites.c.revision).where(credential_sites.c.site == site).with_for_update()
    ).scalar_one()
    return revision


def _values(site: str, credential: Credential, revision: int, now: datetime) -> dict[str, Any]:
    return {
        "site": site,
        "id": credential.id,
        "uid": credential.uid,
        "uid_form": credential.uid_form,
        "holder": credential.holder,
        "role": credential.role.value,
        "scope": json.dumps(list(credential.scope), ensure_ascii=False),
        "kind": credential.kind.value,
        "status": credential.status.value,
        "valid_from": credential.valid_from,
        "valid_until": credential.valid_until,
        "schedule": credential.schedule,
        "key_code": credential.key_code,
        "deposit": credential.deposit,
        "approved_by": credential.approved_by,
        "issue_no": credential.issue_no,
        "issued_at": credential.issued_at or now,
        "issued_by": credential.issued_by or "central",
        "changed_at": now,
        "revision": revision,
    }


def _commit(
    connection: Connection,
    site: str,
    revision: int,
    current: dict[str, Credential],
    *,
    command: str,
    body: dict[str, Any],
    written: Sequence[Credential],
    removed: Sequence[str] = (),
    governance: Mapping[str, dict[str, Any]] | None = None,
    now: datetime,
) -> int:
    """Write one change of a site (rows, revision, digest, outbox); the new revision."""
    revision += 1
    for credential in written:
        values = {**_values(site, credential, revision, now), **(governance or {}).get(credential.id, {})}
        if credential.id in current:
            connection.execute(
                update(credentials)
                .where(credentials.c.site == site, credentials.c.id == credential.id)
                .values(**values)
            )
        else:
            connection.execute(insert(credentials).values(**values))
        current[credential.id] = credential
    for ident in removed:
        connection.execute(delete(credentials).where(credentials.c.site == site, credentials.c.id == ident))
        current.pop(ident, None)
    digest = issuance.digest(current.values())
    connection.execute(
        update(credential_sites)
        .where(credential_sites.c.site == site)
        .values(revision=revision, digest=digest, changed_at=now)
    )
    connection.execute(
        insert(credential_changes).values(
            site=site,
            revision=revision,
            command=command,
            body=json.dumps(body, ensure_ascii=False),
            digest=digest,
            at=now,
        )
    )
    return revision


def _commit_upsert(
    connection: Connection,
    site: str,
    revision: int,
    current: dict[str, Credential],
    changed: Sequence[Credential],
    *,
    by: str,
    governance: Mapping[str, dict[str, Any]],
    now: datetime,
) -> int:
    """`_commit` of credentials written whole: pushed to the gateways as one `credentials/upsert`."""
    return _commit(
        connection,
        site,
        revision,
        current,
        command="credentials/upsert",
        body={"credentials": [issuance.upsert_item(c) for c in changed], "by": by},
        written=changed,
        governance=governance,
        now=now,
    )


def _audit(
    connection: Connection, now: datetime, actor: str, action: str, site: str, target: str, **detail: Any
) -> None:
    audit.record(connection, at=now, actor=actor, action=action, site=site, target=target, detail=detail)


def _by(by: str | None, actor: str) -> str:
    return by or actor


def _refusal(exc: issuance.Refused, items: Sequence[Any]) -> Exception:
    """The first problem as the API answers it: a clash or an unapproved duplicate is a 409, else a 400."""
    problem = exc.problems[0]
    ident = items[problem.index].get("id") if isinstance(items[problem.index], Mapping) else None
    where = f"credentials[{problem.index}]" + (f" ({ident})" if isinstance(ident, str) else "")
    more = f" (and {len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
    if problem.field == "approved_by" or (problem.field == "uid" and "already on credential" in problem.message):
        return Conflict(f"{where}.{problem.field}: {problem.message}{more}")
    if problem.field == "uid" and "same card" in problem.message:
        return Conflict(f"{where}.{problem.field}: {problem.message}{more}")
    return BadInput(f"{where}.{problem.field}", problem.message + more)


def upsert(
    connection: Connection,
    site: str,
    items: Sequence[Any],
    *,
    by: str | None,
    actor: str,
    now: datetime,
    zone: tzinfo,
) -> UpsertOutcome:
    """Add or update credentials of a site by id, whole or not at all (SPEC §7 upsert fields).

    BadInput names the item and field; Conflict for a uid clash (the same card in any form) or a second
    key without `approved_by` (naming the existing key)."""
    try:
        return import_credentials(connection, site, items, by=by, actor=actor, now=now, zone=zone)
    except issuance.Refused as exc:
        raise _refusal(exc, items) from None


def import_credentials(
    connection: Connection,
    site: str,
    items: Sequence[Any],
    *,
    by: str | None,
    actor: str,
    now: datetime,
    zone: tzinfo,
) -> UpsertOutcome:
    """`upsert`, refusing with `issuance.Refused` naming every bad item (a CSV import reports each line)."""
    if not items:
        raise BadInput("credentials", "must list at least one credential")
    by = _by(by, actor)
    revision = _lock_site(connection, site, now)
    current = site_set(connection, site)
    stored, changed = issuance.check_upsert(current.values(), items, zone, by=by, now=now)
    added = [c for c in changed if c.id not in current]
    if not changed:
        return UpsertOutcome(site=site, revision=revision, added=0, updated=0, unchanged=len(stored), credentials=[])
    governance = {
        c.id: {"deposit_state": "held", "deposit_changed_by": by, "deposit_changed_at": now}
        for c in changed
        if c.deposit and (c.id not in current or not current[c.id].deposit)
    }
    new_ids = {c.id for c in added}
    revision = _commit_upsert(connection, site, revision, current, changed, by=by, governance=governance, now=now)
    for credential in changed:
        action = "credential.issue" if credential.id in new_ids else "credential.update"
        _audit(
            connection,
            now,
            actor,
            action,
            site,
            credential.id,
            by=by,
            holder=credential.holder,
            status=credential.status.value,
            issue_no=credential.issue_no,
            approved_by=credential.approved_by,
            revision=revision,
        )
    return UpsertOutcome(
        site=site,
        revision=revision,
        added=len(added),
        updated=len(changed) - len(added),
        unchanged=len(stored) - len(changed),
        credentials=[get_credential(connection, site, c.id) for c in changed],
    )


def _status(value: str) -> Status:
    try:
        return Status(value)
    except ValueError:
        names = ", ".join(s.value for s in Status)
        raise BadInput("status", f"unknown status {value!r} (one of: {names})") from None


def set_status(
    connection: Connection,
    site: str,
    credential_id: str,
    status: str,
    *,
    reason: str | None,
    by: str | None,
    actor: str,
    now: datetime,
    returned_at: datetime | None = None,
) -> CredentialView:
    """Suspend, reactivate, report lost, revoke or return a key; `returned` records the time and person."""
    new_status = _status(status)
    if new_status is Status.REPLACED:
        raise BadInput("status", "a key becomes replaced by replacing it (…/replace), which issues its successor")
    by = _by(by, actor)
    revision = _lock_site(connection, site, now)
    row = _row(connection, site, credential_id)
    current = site_set(connection, site)
    old = current[credential_id]
    if old.status is new_status:
        return view(row)
    if old.status is Status.REPLACED:
        raise Conflict(f"{credential_id} is replaced: change its successor instead")
    governance: dict[str, Any] = {"status_reason": reason, "returned_at": None, "returned_by": None}
    if new_status is Status.RETURNED:  # another status (a returned key issued again) clears the return
        governance |= {"returned_at": utc(returned_at or now), "returned_by": by}
    revision = _commit(
        connection,
        site,
        revision,
        current,
        command="credentials/set_status",
        body={"id": credential_id, "status": new_status.value, "reason": reason, "by": by},
        written=[replace(old, status=new_status)],
        governance={credential_id: governance},
        now=now,
    )
    action = "credential.return" if new_status is Status.RETURNED else "credential.set_status"
    _audit(
        connection,
        now,
        actor,
        action,
        site,
        credential_id,
        by=by,
        status=new_status.value,
        reason=reason,
        revision=revision,
    )
    if new_status.value not in KEYS_OUT:
        resolve_overdue(connection, site, [credential_id], now, resolution=new_status.value)
    return get_credential(connection, site, credential_id)


def return_key(
    connection: Connection, site: str, credential_id: str, *, by: str, at: datetime | None, actor: str, now: datetime
) -> CredentialView:
    """The key came back: `returned` with the time and the person who took it back."""
    return set_status(
        connection, site, credential_id, Status.RETURNED.value, reason=None, by=by, actor=actor, now=now, returned_at=at
    )


def replace_key(
    connection: Connection,
    site: str,
    credential_id: str,
    *,
    new_uid: str,
    new_id: str | None,
    by: str | None,
    actor: str,
    now: datetime,
) -> CredentialView:
    """Retire a key as `replaced` and issue its successor (`issue_no + 1`, named `new_id` or `{id}-{issue_no}`),
    exactly as the gateway's `credentials/replace` does, which carries it to the gateways."""
    by = _by(by, actor)
    revision = _lock_site(connection, site, now)
    _row(connection, site, credential_id)
    current = site_set(connection, site)
    old = current[credential_id]
    try:
        successor_id = issuance.replacement_id(old, new_id)
        if successor_id in current:
            raise Conflict(f"{successor_id} already exists" + ("" if new_id else " (choose another with new_id)"))
        successor = issuance.successor(old, new_uid, successor_id=successor_id, by=by, now=now)
    except issuance.IssuanceError as exc:
        if old.status not in OUTSTANDING_STATUSES:
            raise Conflict(str(exc)) from None
        field = "new_id" if "new id" in str(exc) else "new_uid"
        raise BadInput(field, str(exc).removeprefix("new uid: ")) from None
    uid, issue_no = successor.uid, successor.issue_no
    others = [c for c in current.values() if c.id != old.id]
    owner = issuance.same_card_owner(others, successor) if uid else None
    if owner is not None:
        raise Conflict(f"new_uid: {mask_uid(uid)} is already on credential {owner}")
    revision = _commit(
        connection,
        site,
        revision,
        current,
        command="credentials/replace",
        body={"id": old.id, "new_uid": new_uid.strip(), "new_id": successor_id, "by": by},
        written=[replace(old, status=Status.REPLACED), successor],
        now=now,
    )
    _audit(connection, now, actor, "credential.replace", site, old.id, by=by, successor=successor_id, revision=revision)
    _audit(connection, now, actor, "credential.issue", site, successor_id, by=by, replaces=old.id, issue_no=issue_no)
    resolve_overdue(connection, site, [old.id], now, resolution="replaced")
    return get_credential(connection, site, successor_id)


def retire(
    connection: Connection, site: str, credential_id: str, *, force: bool, by: str | None, actor: str, now: datetime
) -> None:
    """Remove a key from the site's set (its history stays in the audit log and the gateways' journals);
    a key still out (active, suspended, lost) needs `force`."""
    by = _by(by, actor)
    revision = _lock_site(connection, site, now)
    row = _row(connection, site, credential_id)
    if row.status in {s.value for s in OUTSTANDING_STATUSES} and not force:
        raise Conflict(f"{credential_id} is still {row.status}: return or revoke it first, or retire it with force")
    current = site_set(connection, site)
    revision = _commit(
        connection,
        site,
        revision,
        current,
        command="credentials/remove",
        body={"id": credential_id, "force": force, "by": by},
        written=[],
        removed=[credential_id],
        now=now,
    )
    _audit(connection, now, actor, "credential.retire", site, credential_id, by=by, force=force, revision=revision)
    resolve_overdue(connection, site, [credential_id], now, resolution="retired")


def set_deposit(
    connection: Connection, site: str, credential_id: str, state: str, *, by: str, actor: str, now: datetime
) -> CredentialView:
    """Record what happened to a key's deposit: held, refunded or forfeited, by whom and when."""
    if state not in DEPOSIT_STATES:
        raise BadInput("state", f"unknown deposit state {state!r} (one of: {', '.join(DEPOSIT_STATES)})")
    row = _row(connection, site, credential_id)
    if not row.deposit:
        raise Conflict(f"{credential_id} has no deposit")
    connection.execute(
        update(credentials)
        .where(credentials.c.site == site, credentials.c.id == credential_id)
        .values(deposit_state=state, deposit_changed_by=by, deposit_changed_at=now)
    )
    _audit(connection, now, actor, "credential.deposit", site, credential_id, by=by, amount=row.deposit, state=state)
    return get_credential(connection, site, credential_id)


# ---- term end --------------------------------------------------------------------------------------


def overdue(
    connection: Connection, *, site: str | None, now: datetime, holder: str | None = None
) -> list[CredentialView]:
    """Keys past their `valid_until` and still out (active or suspended): the term-end collection list."""
    query = (
        select(credentials)
        .where(credentials.c.valid_until <= now, credentials.c.status.in_(KEYS_OUT))
        .order_by(credentials.c.site, credentials.c.holder, credentials.c.id)
    )
    if site is not None:
        query = query.where(credentials.c.site == site)
    if holder is not None:
        query = query.where(credentials.c.holder == holder)
    return [view(row) for row in connection.execute(query)]


def collect(
    connection: Connection,
    site: str,
    ids: Sequence[str],
    outcome: str,
    *,
    by: str,
    actor: str,
    now: datetime,
    at: datetime | None = None,
) -> UpsertOutcome:
    """Term-end in one action: mark these keys `returned` (with time and person) or `lost`, as one change."""
    if outcome not in (Status.RETURNED.value, Status.LOST.value):
        raise BadInput("outcome", "must be returned or lost")
    if not ids:
        raise BadInput("ids", "must list at least one credential")
    new_status = Status(outcome)
    revision = _lock_site(connection, site, now)
    current = site_set(connection, site)
    missing = [ident for ident in ids if ident not in current]
    if missing:
        raise NotFound(f"no credential {missing[0]!r} at site {site!r}")
    changed = [replace(current[ident], status=new_status) for ident in dict.fromkeys(ids)]
    changed = [c for c in changed if c != current[c.id]]
    if not changed:
        return UpsertOutcome(site=site, revision=revision, added=0, updated=0, unchanged=len(ids), credentials=[])
    governance = {
        c.id: {"returned_at": utc(at or now), "returned_by": by} if new_status is Status.RETURNED else {}
        for c in changed
    }
    revision = _commit_upsert(connection, site, revision, current, changed, by=by, governance=governance, now=now)
    action = "credential.return" if new_status is Status.RETURNED else "credential.set_status"
    for credential in changed:
        _audit(connection, now, actor, action, site, credential.id, by=by, status=outcome, revision=revision)
    resolve_overdue(connection, site, [c.id for c in changed], now, resolution=outcome)
    return UpsertOutcome(
        site=site,
        revision=revision,
        added=0,
        updated=len(changed),
        unchanged=len(ids) - len(changed),
        credentials=[get_credential(connection, site, c.id) for c in changed],
    )


def reassign_locker(
    connection: Connection,
    site: str,
    locker: str,
    item: Mapping[str, Any],
    *,
    by: str | None,
    actor: str,
    now: datetime,
    zone: tzinfo,
) -> UpsertOutcome:
    """Release a locker from the user keys that open it and issue `item` for it, as one change: a key that
    opened only this locker is marked `returned` now; one that opened others too loses this locker."""
    by = _by(by, actor)
    revision = _lock_site(connection, site, now)
    current = site_set(connection, site)
    released: list[dict[str, Any]] = []
    returned: list[str] = []
    for credential in current.values():
        if credential.role is not Role.USER or locker not in credential.scope:
            continue
        if credential.status.value not in KEYS_OUT:
            continue
        fields = issuance.upsert_item(credential)
        rest = [name for name in credential.scope if name != locker]
        if rest:
            fields["scope"] = rest
        else:
            fields["status"] = Status.RETURNED.value
            returned.append(credential.id)
        released.append(fields)
    items = [*released, dict(item)]
    try:
        stored, changed = issuance.check_upsert(current.values(), items, zone, by=by, now=now)
    except issuance.Refused as exc:
        raise _refusal(exc, items) from None
    issued = stored[-1]
    new = issued.id not in current
    governance: dict[str, dict[str, Any]] = {ident: {"returned_at": now, "returned_by": by} for ident in returned}
    if issued.deposit and (new or not current[issued.id].deposit):
        governance[issued.id] = {"deposit_state": "held", "deposit_changed_by": by, "deposit_changed_at": now}
    revision = _commit_upsert(connection, site, revision, current, changed, by=by, governance=governance, now=now)
    for credential in changed:
        action = "credential.issue" if credential.id == issued.id and new else "credential.release"
        _audit(connection, now, actor, action, site, credential.id, by=by, locker=locker, revision=revision)
    resolve_overdue(connection, site, returned, now, resolution="returned")
    return UpsertOutcome(
        site=site,
        revision=revision,
        added=1 if new else 0,
        updated=len(changed) - (1 if new else 0),
        unchanged=len(stored) - len(changed),
        credentials=[get_credential(connection, site, c.id) for c in changed],
    )


# ---- key.overdue alerts ----------------------------------------------------------------------------

OVERDUE = "key.overdue"


def raise_overdue_alerts(connection: Connection, now: datetime) -> int:
    """Open `key.overdue` for every key past `valid_until` and not returned (one per key; idempotent, safe with
    several workers) and resolve those whose key is no longer overdue. Returns how many were opened."""
    opened = 0
    late = overdue(connection, site=None, now=now)
    for credential in late:
        detail = {
            "credential": credential.id,
            "holder": credential.holder,
            "kind": credential.kind,
            "valid_until": credential.valid_until,
            "key_code": credential.key_code,
            "deposit": credential.deposit.model_dump() if credential.deposit else None,
        }
        opened += open_alert(
            connection, site=credential.site, gateway="", kind=OVERDUE, at=now, subject=credential.id, detail=detail
        )
    still = {(c.site, c.id) for c in late}
    stale = connection.execute(
        select(alerts.c.site, alerts.c.subject).where(alerts.c.kind == OVERDUE, alerts.c.state != "resolved")
    ).all()
    for site, ident in stale:
        if (site, ident) not in still:
            resolve_overdue(connection, site, [ident], now, resolution="no longer overdue")
    return opened


def resolve_overdue(connection: Connection, site: str, ids: Iterable[str], now: datetime, *, resolution: str) -> None:
    ids = list(ids)
    if not ids:
        return
    connection.execute(
        update(alerts)
        .where(alerts.c.site == site, alerts.c.kind == OVERDUE, alerts.c.subject.in_(ids), alerts.c.state != "resolved")
        .values(state="resolved", resolved_at=now, resolution=resolution)
    )
