"""Emergency openings (SPEC §12): opening a held or occupied locker needs a second person. The first asks
(with a reason), a different signed-in person approves, and only then is the locker opened, with both named
as its authorizers in the gateway's `access.granted`. Requests and decisions are in the audit log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, insert, select, update

from central.schema import open_approvals
from central.services import audit
from central.services.errors import BadInput, Conflict, NotFound
from central.services.models import Authorizer
from central.services.times import utc


@dataclass(frozen=True, slots=True)
class Approval:
    id: int
    site: str
    locker: str
    reason: str
    requested_by: str
    requested_at: datetime
    state: str

    def authorizers(self, approver: str) -> list[Authorizer]:
        """The two people the gateway's two-person rule asks for."""
        return [Authorizer(id=self.requested_by, holder=self.requested_by), Authorizer(id=approver, holder=approver)]


def _approval(row: object) -> Approval:
    return Approval(
        id=row.id,  # type: ignore[attr-defined]
        site=row.site,  # type: ignore[attr-defined]
        locker=row.locker,  # type: ignore[attr-defined]
        reason=row.reason,  # type: ignore[attr-defined]
        requested_by=row.requested_by,  # type: ignore[attr-defined]
        requested_at=utc(row.requested_at),  # type: ignore[attr-defined]
        state=row.state,  # type: ignore[attr-defined]
    )


def request(
    connection: Connection, site: str, locker: str, reason: str, *, by: str, actor: str, now: datetime
) -> Approval:
    reason = reason.strip()
    if not reason:
        raise BadInput("reason", "required: say why the locker is opened")
    row = connection.execute(
        insert(open_approvals)
        .values(site=site, locker=locker, reason=reason, requested_by=by, requested_at=now)
        .returning(*open_approvals.c)
    ).one()
    audit.record(connection, at=now, actor=actor, action="locker.open_requested", site=site, target=locker,
                 detail={"approval": row.id, "reason": reason})  # fmt: skip
    return _approval(row)


def pending(connection: Connection, site: str | None = None) -> list[Approval]:
    query = select(open_approvals).where(open_approvals.c.state == "pending").order_by(open_approvals.c.id)
    if site is not None:
        query = query.where(open_approvals.c.site == site)
    return [_approval(row) for row in connection.execute(query)]


def decide(connection: Connection, approval_id: int, *, approve: bool, by: str, actor: str, now: datetime) -> Approval:
    """Approve (only someone other than the requester) or cancel (anyone) a pending request."""
    row = connection.execute(select(open_approvals).where(open_approvals.c.id == approval_id)).first()
    if row is None:
        raise NotFound(f"no opening request {approval_id}")
    if row.state != "pending":
        raise Conflict(f"opening request {approval_id} is already {row.state}")
    if approve and row.requested_by.casefold() == by.casefold():
        raise Conflict("an emergency opening must be approved by a second person, not the one who asked for it")
    state = "approved" if approve else "cancelled"
    changed = connection.execute(
        update(open_approvals)
        .where(open_approvals.c.id == approval_id, open_approvals.c.state == "pending")
        .values(state=state, decided_by=by, decided_at=now)
        .returning(open_approvals.c.id)
    ).first()
    if changed is None:
        raise Conflict(f"opening request {approval_id} was decided by someone else meanwhile")
    audit.record(connection, at=now, actor=actor, action=f"locker.open_{state}", site=row.site, target=row.locker,
                 detail={"approval": approval_id, "requested_by": row.requested_by})  # fmt: skip
    return _approval(row)
