"""The audit log: every change made through the API (and later the CLI and console) — who, when, what."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert

from central.schema import audit_log


def record(
    connection: Connection,
    *,
    at: datetime,
    actor: str,
    action: str,
    site: str | None = None,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    connection.execute(
        insert(audit_log).values(
            at=at,
            actor=actor,
            action=action,
            site=site,
            target=target,
            detail=json.dumps(detail or {}, ensure_ascii=False, sort_keys=True),
        )
    )
