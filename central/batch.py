"""One batch of received messages → one transaction: events (central.ingest) and the registry's retained
topics (central.registry). A message central cannot use is refused with one log line and counted — and
acknowledged like the rest, since a refused message must not be redelivered forever.

A database fault that one row causes never fails its batch: the batch is retried message by message
and only the culprit is refused. A database that cannot be reached raises `DatabaseUnavailable`, and
nothing is acknowledged until it is back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError

from central import metrics
from central.database import _first_line
from central.ingest import IncomingEvent, Refused, parse_event, store_events
from central.mqtt_session import Delivery
from central.registry import RegistryError, apply_info, apply_state, locker_row, payload_object, write_lockers
from central.sql import now
from central.topics import GatewayTopic, parse_topic

log = logging.getLogger(__name__)

#: SQLSTATEs of a transaction rolled back by a concurrent one (deadlock victim, serialization failure).
TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})
TRANSIENT_TRIES = 5


class DatabaseUnavailable(Exception):
    """The database cannot be reached; the batch is kept and retried."""


@dataclass(frozen=True, slots=True)
class Retained:
    """A `state`, `info` or `lockers/{id}` message."""

    where: GatewayTopic
    payload: dict[str, Any]
    text: str


@dataclass(slots=True)
class BatchResult:
    stored: int = 0
    duplicates: int = 0
    refused: int = 0
    #: Gateways that have newly stored events (to verify now).
    gateways: set[tuple[str, str]] = field(default_factory=set)
    #: Of `refused`, the retained messages refused while writing (undone when the transaction is retried).
    registry_refused: int = 0


Item = IncomingEvent | Retained


def refuse(reason: str, topic: str, message: str) -> None:
    metrics.REJECTED.labels(reason=reason).inc()
    log.warning("refused %s: %s", topic, message)


def read_message(prefix: str, delivery: Delivery) -> Item | None:
    """What a message is; None (after one log line and a count) when it is refused or not for central."""
    where = parse_topic(prefix, delivery.topic)
    if where is None:
        return None
    try:
        if where.channel == "events":
            return parse_event(where, delivery.payload)
        if where.channel in ("state", "info", "lockers"):
            if not delivery.payload:
                return None  # a retained message being cleared
            payload, text_ = payload_object(delivery.payload)
            return Retained(where, payload, text_)
    except Refused as exc:
        refuse(exc.reason, delivery.topic, str(exc))
    except RegistryError as exc:
        refuse(f"bad_{where.channel}", delivery.topic, str(exc))
    return None


def apply_batch(engine: Engine, prefix: str, deliveries: Sequence[Delivery]) -> BatchResult:
    """Store a batch (see the module docstring). Blocking: run it in a worker thread."""
    items = [item for item in (read_message(prefix, d) for d in deliveries) if item is not None]
    result = BatchResult(refused=len(deliveries) - len(items))
    if not items:
        return result
    started = time.perf_counter()
    try:
        _write_retrying(engine, items, result)
    except (OperationalError, InterfaceError) as exc:
        raise DatabaseUnavailable(_first_line(exc)) from None
    except SQLAlchemyError:
        result = BatchResult(refused=result.refused)
        for item in items:  # find the row the database cannot take; store the others
            try:
                with engine.begin() as connection:
                    _write(connection, [item], result)
            except (OperationalError, InterfaceError) as exc:
                raise DatabaseUnavailable(_first_line(exc)) from None
            except SQLAlchemyError as exc:
                result.refused += 1
                refuse("unstorable", _describe(item), _first_line(exc))
    metrics.BATCH_COMMIT_SECONDS.observe(time.perf_counter() - started)
    return result


def _write_retrying(engine: Engine, items: Sequence[Item], result: BatchResult) -> None:
    """One transaction for the batch, tried again at once when PostgreSQL chose it as a deadlock's victim
    (or a serialization failure): the database is there, only this attempt was rolled back."""
    for attempt in range(1, TRANSIENT_TRIES + 1):
        try:
            with engine.begin() as connection:
                _write(connection, items, result)
            return
        except OperationalError as exc:
            if attempt == TRANSIENT_TRIES or getattr(exc.orig, "sqlstate", None) not in TRANSIENT_SQLSTATES:
                raise
            log.info("batch of %d rolled back (%s), trying again", len(items), _first_line(exc))
            result.stored = result.duplicates = 0
            result.refused -= result.registry_refused
            result.registry_refused = 0
            result.gateways.clear()


def _write(connection: Connection, items: Sequence[Item], result: BatchResult) -> None:
    at = now()
    events = [item for item in items if isinstance(item, IncomingEvent)]
    if events:
        outcome = store_events(connection, events, at)
        result.stored += len(outcome.stored)
        result.duplicates += outcome.duplicates
        result.gateways |= outcome.gateways
    locker_rows: list[dict[str, Any]] = []
    for item in items:
        if not isinstance(item, Retained):
            continue
        where = item.where
        try:
            if where.channel == "state":
                apply_state(connection, where.site, where.gateway, item.payload, at)
            elif where.channel == "info":
                apply_info(connection, where.site, where.gateway, item.payload, item.text, at)
            elif where.tail:
                locker_rows.append(locker_row(where.site, where.gateway, where.tail, item.payload, at))
        except RegistryError as exc:
            result.refused += 1
            result.registry_refused += 1
            refuse(f"bad_{where.channel}", f"{where.site}/{where.gateway}/{where.rest}", str(exc))
    # One statement for the batch's lockers, last in the transaction and in key order (see write_lockers).
    write_lockers(connection, locker_rows)


def _describe(item: Item) -> str:
    if isinstance(item, IncomingEvent):
        return f"{item.site}/{item.gateway} seq {item.seq}"
    return f"{item.where.site}/{item.where.gateway}/{item.where.rest}"
