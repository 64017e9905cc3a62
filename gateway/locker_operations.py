"""Remote locker operations (MQTT `lockers/{id}/open`, `service`, `assign`, `release`; SPEC §7).

Each is journaled before it takes effect, like a tap: an opening is an `access.granted` with
override (two distinct authorizers for a locker someone's things may be in, when the policy says
so), a service change a `locker.service`, an assignment of a shared locker `locker.allocated` /
`locker.released`. The lockers' in-memory state is the daemon's; these change it only after the
journal has the record.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol

from gateway.credential_view import CredentialView
from gateway.journal import StateWrite
from gateway.model import Locker, LockerMode, Service
from gateway.mqtt.ops import RequestError
from gateway.policy import PolicySettings
from gateway.records import credential_summary, locker_state_to_json, remote_open_record
from gateway.store import Store


class Wall(Protocol):
    def wall(self) -> datetime: ...


class LockerHost(Protocol):
    """The running gateway's state the operations read and (lockers) replace."""

    lockers: dict[str, Locker]
    policy: PolicySettings
    credentials: CredentialView

    @property
    def clock(self) -> Wall: ...

    @property
    def store(self) -> Store: ...

    def hash_uid(self, uid: str) -> str: ...


class LockerOperations:
    """`await append(records, at, state)` journals durably (or raises); `energise(locker)` unlocks after it;
    `locker_changed(locker)` republishes its retained state."""

    def __init__(
        self,
        host: LockerHost,
        *,
        append: Callable[..., Awaitable[list[dict[str, Any]]]],
        energise: Callable[[str], None],
        board_online: Callable[[str], bool],
        locker_changed: Callable[[str], None],
    ) -> None:
        self._host = host
        self._append = append
        self._energise = energise
        self._board_online = board_online
        self._locker_changed = locker_changed

    def _locker(self, locker_id: str) -> Locker:
        locker = self._host.lockers.get(locker_id)
        if locker is None:
            raise RequestError(f"unknown locker {locker_id!r}")
        return locker

    async def open_locker(
        self, locker: str, operator: str, reason: str, authorizers: list[dict[str, Any]]
    ) -> dict[str, Any]:
        target = self._locker(locker)
        if target.board is None or target.lock is None:
            raise RequestError(f"locker {locker!r} is keyed: the gateway cannot open it")
        # Any outstanding key counts: a lost or suspended key's holder still has belongings inside.
        in_use = target.occupant is not None or bool(self._host.store.keys_for_locker(locker))
        if self._host.policy.emergency_two_person and in_use:
            people = {str(a.get("holder") or a.get("id")).strip().casefold() for a in authorizers}
            if len(authorizers) < 2 or len(people) < 2:
                raise RequestError(
                    f"locker {locker!r} is assigned or occupied: opening it needs two distinct authorizers"
                )
        now = self._host.clock.wall()
        unlock = "sent" if self._board_online(target.board) else "failed"
        envelopes = await self._append([remote_open_record(locker, operator, reason, authorizers, unlock)], now)
        if unlock == "sent":
            self._energise(locker)
        return {"locker": locker, "unlock": unlock, "seq": envelopes[0]["seq"]}

    async def set_locker_service(self, locker: str, service: str, by: str) -> dict[str, Any]:
        target = self._locker(locker)
        try:
            new_service = Service(service)
        except ValueError:
            raise RequestError(f"service must be one of: in_service, out_of_service (got {service!r})") from None
        updated = replace(target, service=new_service)
        if updated == target:
            return {"locker": locker, "service": str(new_service)}
        record = {"kind": "locker.service", "locker": locker, "service": str(new_service), "by": by}
        await self._change(target, updated, record)
        return {"locker": locker, "service": str(new_service)}

    async def assign_locker(self, locker: str, credential_id: str, by: str) -> dict[str, Any]:
        target = self._locker(locker)
        credential = self._host.credentials.by_id.get(credential_id)
        if credential is None:
            raise RequestError(f"unknown credential {credential_id!r}")
        if credential.role != "user" or credential.status != "active":
            raise RequestError(
                f"credential {credential_id!r} is {credential.status} {credential.role}: "
                "shared lockers are held by active user credentials"
            )
        if target.mode != LockerMode.SHARED:
            raise RequestError(
                f"locker {locker!r} is an assigned locker: assign it by putting it in the credential's scope"
            )
        if target.occupant == credential_id:
            return {"locker": locker, "occupant": credential_id}  # already so: nothing to journal
        if target.occupant is not None:
            raise RequestError(f"locker {locker!r} is held by another credential; release it first")
        return await self._set_occupant(target, credential_id, "locker.allocated", by)

    async def release_locker(self, locker: str, by: str) -> dict[str, Any]:
        target = self._locker(locker)
        if target.mode != LockerMode.SHARED:
            raise RequestError(f"locker {locker!r} is not a shared locker")
        if target.occupant is None:
            raise RequestError(f"locker {locker!r} is not held by anyone")
        return await self._set_occupant(target, None, "locker.released", by)

    async def _set_occupant(self, target: Locker, occupant: str | None, kind: str, by: str) -> dict[str, Any]:
        previous = target.occupant
        updated = replace(target, occupant=occupant)
        holder = self._host.credentials.by_id.get(occupant or previous or "")
        record = {
            "kind": kind,
            "locker": target.id,
            "credential": credential_summary(holder, holder.uid, self._host.hash_uid) if holder else None,
            "reason": "remote",
            "by": by,
        }
        await self._change(target, updated, record)
        return {"locker": target.id, "occupant": occupant}

    async def _change(self, target: Locker, updated: Locker, record: dict[str, Any]) -> None:
        """Journal a locker's change and make it. It is in force from the moment it is handed to the
        journal, so that a tap decided while it commits sees it — the tap's record comes after it in
        the journal too; if the journal cannot take it, it is undone (and the error raised)."""
        self._host.lockers = {**self._host.lockers, target.id: updated}
        try:
            await self._append(
                [record], self._host.clock.wall(), [StateWrite(f"locker:{target.id}", locker_state_to_json(updated))]
            )
        except BaseException:
            if self._host.lockers.get(target.id) is updated:
                self._host.lockers = {**self._host.lockers, target.id: target}
            raise
        self._locker_changed(target.id)
