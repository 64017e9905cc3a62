"""What the parts of one `lockergw central` process share: the settings, the database engine, the live
MQTT link to the gateways and the worker's status. The HTTP API (and later the console) receives a
`CentralContext`; the MQTT worker provides `GatewayRequests` and `WorkerStatus`.

Tests build a context around a real engine and a real broker link; nothing here does I/O itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Engine

from central.config import CentralSettings


class GatewayUnavailable(Exception):
    """A request could not be delivered or was not answered in time; the message says which, in one line."""


class GatewayTimeout(GatewayUnavailable):
    """The request was delivered to the broker but the gateway did not answer within the timeout."""


class GatewayRequests(Protocol):
    """Sends SPEC §7 requests to gateways, signed with the site's key, and awaits their response."""

    async def request(
        self, site: str, gateway: str, command: str, body: dict[str, Any], *, timeout_s: float = 10.0
    ) -> dict[str, Any]:
        """Publish `{prefix}/{site}/{gateway}/request/{command}` and return the gateway's response payload
        (`{"transaction", "status", "data"?, "error"?}`). Raises GatewayUnavailable (no broker, no answer
        within timeout_s) or ValueError (no signing key for the site)."""
        ...


class WorkerStatus(Protocol):
    """The live state of this process's MQTT worker, for `/healthz`."""

    @property
    def mqtt_connected(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class CentralContext:
    settings: CentralSettings
    engine: Engine
    requests: GatewayRequests
    status: WorkerStatus
