"""The pusher against gateways that apply what it sends to a real gateway credential store (gateway.store):
after every kind of change central's digest equals the gateway's, changes go out once each in order even
with two workers pushing, and a restarted gateway gets a snapshot."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, update

from central import credential_push
from central.credential_push import CredentialPusher
from central.schema import gateways
from central.services import credentials as service
from central.services.gateways import sync_state
from central_tests.api_kit import store_gateway
from gateway.store import Store

SITE = "north-school"
NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


@dataclass
class StoreGateway:
    """A gateway's request handling reduced to its credential store: applies each request, answers like §7."""

    store: Store
    requests: list[tuple[str, str]] = field(default_factory=list)
    pages: list[dict[str, Any]] = field(default_factory=list)

    def apply(self, command: str, body: dict[str, Any]) -> dict[str, Any]:
        by = body.get("by", "mqtt")
        if command == "credentials/upsert":
            self.store.upsert(body["credentials"], by=by, now=NOW)
        elif command == "credentials/set_status":
            self.store.set_status(body["id"], body["status"], by=by, now=NOW, reason=body.get("reason"))
        elif command == "credentials/replace":
            self.store.replace(body["id"], body["new_uid"], by=by, now=NOW, new_id=body.get("new_id"))
        elif command == "credentials/remove":
            self.store.remove(body["id"], by=by, now=NOW, force=body.get("force", False))
        elif command == "credentials/snapshot":
            self.pages.extend(body["credentials"])
            if body["page"] < body["pages"]:
                return {}
            self.store.replace_all(self.pages, by=by, now=NOW)
            self.pages = []
        version, digest = self.store.version_and_digest()
        return {"version": version, "digest": digest}


@dataclass
class Estate:
    """GatewayRequests over StoreGateways, by gateway id."""

    gateways: dict[str, StoreGateway]

    async def request(
        self, site: str, gateway: str, command: str, body: dict[str, Any], *, timeout_s: float = 10.0
    ) -> dict[str, Any]:
        target = self.gateways[gateway]
        target.requests.append((command, str(body.get("id") or body.get("page") or "")))
        await asyncio.sleep(0)  # let another pusher interleave
        return {"transaction": "t", "status": "ok", "data": target.apply(command, body)}


def state(engine: Engine, gateway: str, boot_id: str = "boot-1") -> str:
    with engine.connect() as connection:
        return sync_state(connection, SITE, gateway, boot_id)


async def test_every_kind_of_change_leaves_central_and_the_gateways_with_the_same_digest(
    engine: Engine, tmp_path: Path
) -> None:
    estate = Estate({name: StoreGateway(Store.open(tmp_path / name, zone=UTC)) for name in ("gw-1", "gw-2")})
    for name in estate.gateways:
        store_gateway(engine, SITE, name)
    pushers = [CredentialPusher(engine, estate, worker) for worker in ("central-1", "central-2")]

    async def push() -> None:
        await asyncio.gather(*(pusher.push_once() for pusher in pushers))
        await asyncio.gather(*(pusher.push_once() for pusher in pushers))

    def change(work: Any) -> None:
        with engine.begin() as connection:
            work(connection)

    ends = (NOW - timedelta(days=1)).date().isoformat()
    items = [
        {"id": "C-1", "uid": "3C00CE754C", "holder": "amira", "role": "user", "scope": ["A-01"], "deposit": "20"},
        {"id": "C-2", "uid": "dec:0013530445", "holder": "ben", "role": "user", "scope": ["A-02"], "valid_until": ends},
        {"id": "K-1", "holder": "carl", "role": "user", "scope": ["K-01"], "kind": "physical_key", "key_code": "MK-7"},
        {"id": "M-1", "uid": "04A1B2C3", "holder": "dana", "role": "section_master", "scope": ["A"],
         "schedule": "Mon-Fri 07:30-18:00"},
    ]  # fmt: skip
    steps = [
        lambda c: service.upsert(c, SITE, items, by="office", actor="t", now=NOW, zone=UTC),
        lambda c: service.set_status(c, SITE, "C-1", "suspended", reason="r", by=None, actor="t", now=NOW),
        lambda c: service.replace_key(c, SITE, "C-1", new_uid="04A1B2C4", new_id=None, by="desk", actor="t", now=NOW),
        lambda c: service.replace_key(c, SITE, "K-1", new_uid="", new_id="K-2", by="desk", actor="t", now=NOW),
        lambda c: service.collect(c, SITE, ["C-2"], "returned", by="office", actor="t", now=NOW),
        lambda c: service.reassign_locker(
            c, SITE, "A-01", {"id": "C-5", "uid": "04A1B2C5", "holder": "eve", "role": "user", "scope": ["A-01"]},
            by="office", actor="t", now=NOW, zone=UTC,
        ),
        lambda c: service.retire(c, SITE, "C-2", force=False, by=None, actor="t", now=NOW),
    ]  # fmt: skip
    for step in steps:
        change(step)
        assert state(engine, "gw-1") in ("unknown", "pending (1 change)")
        await push()
        with engine.connect() as connection:
            _, digest = service.site_state(connection, SITE) or (0, "")
        for name, target in estate.gateways.items():
            assert target.store.version_and_digest()[1] == digest, name
            assert state(engine, name) == "in_sync"
    # each change went to each gateway exactly once, in order, whatever the two workers did
    for target in estate.gateways.values():
        commands = [command for command, _ in target.requests]
        assert commands[0] == "credentials/snapshot"  # first contact: the whole set
        assert commands[1:] == [
            "credentials/set_status",
            "credentials/replace",
            "credentials/replace",
            "credentials/upsert",
            "credentials/upsert",
            "credentials/remove",
        ]

    # a restart (new boot_id) gets a snapshot, even with nothing new to send
    with engine.begin() as connection:
        connection.execute(update(gateways).where(gateways.c.gateway == "gw-2").values(boot_id="boot-2"))
    assert state(engine, "gw-2", "boot-2") == "pending (1 change)"
    await push()
    assert estate.gateways["gw-2"].requests[-1][0] == "credentials/snapshot"
    assert state(engine, "gw-2", "boot-2") == "in_sync"
    for target in estate.gateways.values():
        target.store.close()


async def test_an_offline_gateway_is_left_alone_and_shown_pending(engine: Engine, tmp_path: Path) -> None:
    estate = Estate({"gw-1": StoreGateway(Store.open(tmp_path / "gw-1", zone=UTC))})
    store_gateway(engine, SITE, "gw-1", state="offline")
    pusher = CredentialPusher(engine, estate, "central-1")
    item = {"id": "C-1", "uid": "3C00CE754C", "holder": "amira", "role": "user", "scope": ["A-01"]}
    with engine.begin() as connection:
        service.upsert(connection, SITE, [item], by=None, actor="t", now=NOW, zone=UTC)
    assert await pusher.push_once() == 0 and estate.gateways["gw-1"].requests == []
    assert state(engine, "gw-1") == "unknown"
    with engine.begin() as connection:
        connection.execute(update(gateways).values(state="online"))
    assert await pusher.push_once() == 1
    assert state(engine, "gw-1") == "in_sync"
    estate.gateways["gw-1"].store.close()


async def test_a_snapshot_larger_than_a_page_goes_in_pages_and_replaces_the_gateways_set(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(credential_push, "PAGE_BYTES", 1000)
    target = StoreGateway(Store.open(tmp_path / "gw-1", zone=UTC))
    target.store.upsert(
        [{"id": "LOCAL-1", "uid": "0A0B0C0D", "holder": "someone", "role": "user", "scope": ["Z-9"]}], by="cli", now=NOW
    )
    store_gateway(engine, SITE, "gw-1")
    items = [
        {"id": f"C-{n:03d}", "uid": f"04A1B2{n:02X}", "holder": f"h{n}", "role": "user", "scope": [f"A-{n:03d}"]}
        for n in range(60)
    ]
    with engine.begin() as connection:
        service.upsert(connection, SITE, items, by=None, actor="t", now=NOW, zone=UTC)
    assert await CredentialPusher(engine, Estate({"gw-1": target}), "central-1").push_once() == 1
    pages = [page for command, page in target.requests if command == "credentials/snapshot"]
    assert len(pages) > 5 and pages == [str(n) for n in range(1, len(pages) + 1)]
    assert sorted(c.id for c in target.store.all()) == [f"C-{n:03d}" for n in range(60)]  # the local one is gone
    assert state(engine, "gw-1") == "in_sync"
    target.store.close()
