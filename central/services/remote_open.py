"""Opening a locker from central (SPEC §11): find the gateway that has it, forward a signed `lockers/open`
through the context's MQTT link, answer with the gateway's response, and keep every attempt in the audit
log whatever its outcome."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from central.context import CentralContext, GatewayUnavailable
from central.schema import gateways
from central.services import audit
from central.services.errors import Conflict
from central.services.lockers import gateway_of
from central.services.models import Authorizer, OpenResult

#: How long a gateway has to answer a remote open.
OPEN_TIMEOUT_S = 10.0


def _find(context: CentralContext, site: str, locker: str) -> str:
    with context.engine.connect() as connection:
        gateway = gateway_of(connection, site, locker)
        state = connection.execute(
            select(gateways.c.state).where(gateways.c.site == site, gateways.c.gateway == gateway)
        ).scalar()
    if state == "offline":
        raise GatewayUnavailable(f"gateway {gateway} of site {site} is offline; locker {locker} cannot be opened now")
    return gateway


def _audit(context: CentralContext, actor: str, site: str, locker: str, detail: dict[str, Any]) -> None:
    with context.engine.begin() as connection:
        audit.record(
            connection,
            at=datetime.now(UTC),
            actor=actor,
            action="locker.open",
            site=site,
            target=locker,
            detail=detail,
        )


async def open_locker(
    context: CentralContext,
    site: str,
    locker: str,
    *,
    operator: str,
    reason: str,
    authorizers: list[Authorizer],
    actor: str,
    timeout_s: float = OPEN_TIMEOUT_S,
) -> OpenResult:
    """The gateway's `ok` answer; NotFound (no such locker), Conflict (the gateway refused, e.g. the
    two-person rule), GatewayUnavailable (offline, no broker, no answer, no signing key)."""
    gateway = await asyncio.to_thread(_find, context, site, locker)
    body = {
        "locker": locker,
        "operator": operator,
        "reason": reason,
        "authorizers": [a.model_dump(exclude_none=True) for a in authorizers],
    }
    detail: dict[str, Any] = {
        "gateway": gateway,
        "operator": operator,
        "reason": reason,
        "authorizers": body["authorizers"],
    }
    try:
        response = await context.requests.request(site, gateway, "lockers/open", body, timeout_s=timeout_s)
    except ValueError as exc:  # no signing key for the site: a fault of central's configuration
        await asyncio.to_thread(
            _audit, context, actor, site, locker, {**detail, "outcome": "not sent", "error": str(exc)}
        )
        raise GatewayUnavailable(f"not sent: {exc}") from None
    except GatewayUnavailable as exc:
        await asyncio.to_thread(
            _audit, context, actor, site, locker, {**detail, "outcome": "no answer", "error": str(exc)}
        )
        raise
    status, data = response.get("status"), response.get("data")
    outcome = {"outcome": status, "response": response}
    await asyncio.to_thread(_audit, context, actor, site, locker, {**detail, **outcome})
    if status != "ok":
        raise Conflict(f"gateway {gateway} refused: {response.get('error') or 'no reason given'}")
    return OpenResult(
        site=site, gateway=gateway, locker=locker, status="ok", data=data if isinstance(data, dict) else {}
    )
