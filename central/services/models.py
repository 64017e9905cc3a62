"""What the services return: the shapes of SPEC §11's API, as pydantic models the API serves directly
(so its OpenAPI document describes them)."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field

AlertState = Literal["open", "acknowledged", "resolved"]


def no_control_characters(value: str) -> str:
    """Stored text (names, reasons) never carries control characters: they would garble a terminal or a
    CSV cell, and PostgreSQL's text cannot hold a NUL at all."""
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise ValueError("must not contain control characters")
    return value


def _instant(value: datetime) -> datetime:
    """An aware UTC datetime (a time without an offset is taken as UTC); one that UTC cannot hold is refused."""
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range once converted to UTC") from None


#: Text a person typed: a name, an id, a reason.
PlainText = Annotated[str, AfterValidator(no_control_characters)]
#: A point in time given to the API (ISO 8601).
Instant = Annotated[datetime, AfterValidator(_instant)]
ChainState = Literal["ok", "gap", "broken"]


class Gateway(BaseModel):
    site: str
    gateway: str
    state: str = Field(description="online | offline | unknown, from the retained state topic")
    boot_id: str | None
    version: str | None
    last_seen: str | None
    anchor_seq: int | None = Field(description="the lowest seq central holds")
    verified_seq: int | None = Field(description="every seq from the anchor up to this one is stored and verified")
    received_seq: int | None = Field(description="the highest seq stored")
    chain: str = Field(description="ok | gap | broken")
    missing: list[tuple[int, int]] = Field(description="seq ranges [from, to] missing above verified_seq")
    credentials: str = Field(description="in_sync | pending (N changes) | unknown")


class GatewayList(BaseModel):
    gateways: list[Gateway]


class EventPage(BaseModel):
    events: list[dict[str, Any]] = Field(description="event envelopes as published (SPEC §7)")
    cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


class Locker(BaseModel):
    site: str
    gateway: str
    locker: str
    door: str
    service: str
    occupied: bool | None
    holder: str | None = Field(description="who holds it: the latest allocation, or the latest assigned opening")
    keys_out: int | None = Field(
        description="keys central issued for this locker that are still out (active, suspended, lost); "
        "null for a site central does not issue credentials for"
    )


class LockerList(BaseModel):
    lockers: list[Locker]


class Alert(BaseModel):
    id: int
    site: str
    gateway: str
    kind: str
    state: str
    opened_at: str
    seq: int | None
    acknowledged_by: str | None
    resolved_at: str | None
    detail: dict[str, Any]


class AlertList(BaseModel):
    alerts: list[Alert]


class Authorizer(BaseModel):
    id: PlainText = Field(min_length=1, max_length=128)
    holder: PlainText | None = Field(default=None, min_length=1, max_length=128)


class OpenResult(BaseModel):
    site: str
    gateway: str
    locker: str
    status: Literal["ok"]
    data: dict[str, Any] = Field(description="the gateway's answer: locker, unlock, seq of its access.granted")


class Report(BaseModel):
    report: str
    columns: list[str]
    rows: list[dict[str, str]]
    note: str | None = None


RoleName = Literal["viewer", "operator", "admin"]


class ApiToken(BaseModel):
    id: int
    name: str
    role: RoleName
    created_at: str
    last_used_at: str | None
    revoked_at: str | None


class NewApiToken(ApiToken):
    token: str = Field(description="the bearer token: shown only in this answer, stored only as a hash")


class ApiTokenList(BaseModel):
    tokens: list[ApiToken]


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: Literal["ok", "error"]
    mqtt: Literal["connected", "disconnected"]
    workers: int


class Deposit(BaseModel):
    amount: str
    state: Literal["held", "refunded", "forfeited"]
    changed_by: str | None
    changed_at: str | None


class CredentialView(BaseModel):
    """A credential as central shows it: `uid` masked (SPEC §4), never the raw card number."""

    site: str
    id: str
    uid: str | None = Field(description="masked: … and the last 4 (or 2) hex characters; null for a physical key")
    holder: str
    role: str
    scope: list[str]
    kind: str
    status: str
    status_reason: str | None
    valid_from: str | None
    valid_until: str | None
    schedule: str | None
    key_code: str | None
    deposit: Deposit | None
    approved_by: str | None
    issue_no: int
    issued_at: str
    issued_by: str
    returned_at: str | None
    returned_by: str | None
    revision: int = Field(description="the site's credential revision that last changed it")


class CredentialList(BaseModel):
    credentials: list[CredentialView]
    cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


class UpsertOutcome(BaseModel):
    site: str
    revision: int = Field(description="the site's credential-set version after the change")
    added: int
    updated: int
    unchanged: int
    credentials: list[CredentialView] = Field(description="the credentials this change wrote")


class HistoryEntry(BaseModel):
    at: str
    actor: str
    action: str
    detail: dict[str, Any]


class KeyHistory(BaseModel):
    credential: CredentialView
    history: list[HistoryEntry]


class KeyCounts(BaseModel):
    site: str
    lockers: dict[str, int] = Field(description="keys out (active, suspended, lost) per locker")
    key_codes: dict[str, int] = Field(description="keys out per key code")
