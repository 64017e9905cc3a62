"""What the services return: the shapes of SPEC §11's API, as pydantic models the API serves directly
(so its OpenAPI document describes them)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

AlertState = Literal["open", "acknowledged", "resolved"]
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
    keys_out: int | None = Field(description="null until central issues credentials (central cannot know it yet)")


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
    id: str = Field(min_length=1, max_length=128)
    holder: str | None = Field(default=None, min_length=1, max_length=128)


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


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: Literal["ok", "error"]
    mqtt: Literal["connected", "disconnected"]
    workers: int
