"""`GET /healthz` (no token): the database answers, the worker's MQTT link, live workers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from central.api.deps import Context
from central.schema import workers
from central.services.models import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Is central working?")
def healthz(context: Context) -> Health:
    """Always 200: `status` is `degraded` when the database does not answer or the MQTT link is down.
    `workers` counts workers whose heartbeat is younger than `[central] takeover_s`."""
    fresh = datetime.now(UTC) - timedelta(seconds=context.settings.central.takeover_s)
    try:
        with context.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            live = connection.execute(
                select(func.count())
                .select_from(workers)
                .where(workers.c.heartbeat_at >= fresh, workers.c.stopped_at.is_(None))
            ).scalar_one()
        database_ok = True
    except SQLAlchemyError:
        live, database_ok = 0, False
    connected = context.status.mqtt_connected
    return Health(
        status="ok" if database_ok and connected else "degraded",
        database="ok" if database_ok else "error",
        mqtt="connected" if connected else "disconnected",
        workers=live,
    )
