"""What the MQTT request handlers may ask of the running gateway, beyond the credential store.

The daemon implements this protocol; the handlers never touch devices, the journal or policy state
directly. Methods raise `RequestError` for a user fault (unknown locker, bad state): its message
becomes the response's `error`.
"""

from __future__ import annotations

from typing import Any, Protocol


class RequestError(Exception):
    """A request that cannot be carried out; the message names the fault in one line."""


class GatewayOps(Protocol):
    #: This run's boot id: the same on `{base}/state` as in the events' envelopes.
    boot_id: str

    def health(self) -> dict[str, Any]:
        """Liveness facts: uptime, devices online, journal backlog, credential-set version."""

    def journal_status(self) -> dict[str, Any]:
        """`{"status": "ok"}`, or `{"status": "failing", "since", "cause"}` while the journal cannot commit."""

    def info(self) -> dict[str, Any]:
        """The retained `{base}/info` payload (never a secret)."""

    def locker_states(self) -> dict[str, dict[str, Any]]:
        """locker id → the retained `{base}/lockers/{id}` payload."""

    async def credentials_changed(self) -> None:
        """The store changed: bring the policy snapshot up to date before returning (without stalling
        taps meanwhile)."""

    async def open_locker(
        self, locker: str, operator: str, reason: str, authorizers: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Journal `access.granted` (reason remote_open, override) and unlock; returns response data."""

    async def set_locker_service(self, locker: str, service: str, by: str) -> dict[str, Any]: ...

    async def assign_locker(self, locker: str, credential_id: str, by: str) -> dict[str, Any]: ...

    async def release_locker(self, locker: str, by: str) -> dict[str, Any]: ...
