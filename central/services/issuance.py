"""The one seam between central and the gateway's SPEC §4 rules: central never re-implements a rule.

Checking an upsert (fields, uid clashes — the same card in any printed form —, duplicates without
`approved_by`, issue numbers, validity, scopes), replacing a key and the credential-set digest are the
gateway's own pure modules (gateway.credential_input, gateway.issuance, gateway.credential_digest); this
module only adapts central's rows and answers to them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from central.services.times import utc_or_none
from gateway.credential_digest import credentials_digest, utc_text
from gateway.credential_input import CredentialFields, FieldError, parse_credential_fields
from gateway.issuance import IssuanceError, KnownCredentials, issue_batch, replacement_id, successor
from gateway.model import Credential, Kind, Role, Status


@dataclass(frozen=True, slots=True)
class Problem:
    """Item `index` of a batch is refused: `field` names what is wrong, `message` says it (uids masked)."""

    index: int
    field: str
    message: str


class Refused(Exception):
    """A batch that breaks a rule; nothing of it is applied."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("; ".join(f"[{p.index}].{p.field}: {p.message}" for p in problems))
        self.problems = list(problems)


__all__ = ["IssuanceError", "replacement_id", "successor"]


def digest(credentials: Iterable[Credential]) -> str:
    """The gateway's credential-set digest of these credentials (gateway.credential_digest)."""
    return credentials_digest(credentials)


def upsert_item(credential: Credential) -> dict[str, Any]:
    """The §7 upsert fields of a credential, as central pushes them (the raw uid included)."""
    item: dict[str, Any] = {
        "id": credential.id,
        "uid": credential.uid or None,
        "holder": credential.holder,
        "role": credential.role.value,
        "scope": list(credential.scope),
        "kind": credential.kind.value,
        "status": credential.status.value,
        "valid_from": utc_text(credential.valid_from),
        "valid_until": utc_text(credential.valid_until),
        "schedule": credential.schedule,
        "key_code": credential.key_code,
        "deposit": credential.deposit,
        "approved_by": credential.approved_by,
    }
    if credential.uid_form:
        item["uid_form"] = credential.uid_form
    return item


def check_upsert(
    site_set: Iterable[Credential], items: Sequence[Any], zone: tzinfo, *, by: str, now: datetime
) -> tuple[list[Credential], list[Credential]]:
    """Apply `items` (upsert fields) to a site's set by the gateway's rules, all or nothing.

    Returns (every credential of the batch as it will be stored, the ones that actually change); raises
    Refused naming every bad item. Ids already in the set keep their issue number and issue details; new
    ones get the next issue number of their lineage.
    """
    existing = {c.id: c for c in site_set}
    problems: list[Problem] = []
    parsed: dict[int, CredentialFields] = {}
    first: dict[str, int] = {}
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            problems.append(Problem(index, "credential", "must be an object of credential fields"))
            continue
        try:
            fields = parse_credential_fields(item, zone)
        except FieldError as exc:
            problems.append(Problem(index, exc.field, exc.problem))
            continue
        if first.setdefault(fields["id"], index) != index:
            problems.append(Problem(index, "id", f"{fields['id']} is given twice in one batch"))
            continue
        parsed[index] = fields
    outcome = issue_batch(parsed, KnownCredentials(existing.values()), existing, by=by, now=now)
    problems += [Problem(index, r.field, r.message) for index, r in outcome.refusals.items()]
    if problems:
        raise Refused(sorted(problems, key=lambda p: p.index))
    return list(outcome.issued), list(outcome.changed)


def same_card_owner(site_set: Iterable[Credential], candidate: Credential) -> str | None:
    """The id of another credential of the set for `candidate`'s card (any printed form), or None."""
    return KnownCredentials(site_set).same_card(candidate)


def from_row(row: Any) -> Credential:
    """A row of central's `credentials` table as the gateway's Credential."""
    return Credential(
        id=row.id,
        uid=row.uid,
        holder=row.holder,
        role=Role(row.role),
        scope=tuple(json.loads(row.scope)),
        status=Status(row.status),
        kind=Kind(row.kind),
        valid_from=utc_or_none(row.valid_from),
        valid_until=utc_or_none(row.valid_until),
        schedule=row.schedule,
        key_code=row.key_code,
        deposit=row.deposit,
        approved_by=row.approved_by,
        issue_no=row.issue_no,
        issued_at=utc_or_none(row.issued_at),
        issued_by=row.issued_by,
        uid_form=row.uid_form,
    )
