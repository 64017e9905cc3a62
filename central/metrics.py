"""Central's Prometheus metrics (SPEC §11 `GET /metrics`), defined once for the worker and the API.

They live in their own registry so that tests can start several central apps in one process.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS_INGESTED = Counter(
    "lockergw_central_events_ingested", "Events stored for the first time", ["site"], registry=REGISTRY
)
DUPLICATES = Counter("lockergw_central_duplicates", "Second copies of a stored event, dropped", registry=REGISTRY)
CONFLICTS = Counter(
    "lockergw_central_conflicts", "Copies of a stored seq with another hash (chain.conflict)", registry=REGISTRY
)
REJECTED = Counter(
    "lockergw_central_rejected",
    "Messages refused at ingest, by reason (rejected_topic_mismatch, not_json, not_an_event, …)",
    ["reason"],
    registry=REGISTRY,
)
BATCH_COMMIT_SECONDS = Histogram(
    "lockergw_central_batch_commit_seconds",
    "Time to commit one ingest batch",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=REGISTRY,
)
LAG_SECONDS = Histogram(
    "lockergw_central_lag_seconds",
    "Now minus the event's ts when it is stored",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 600, 3600),
    registry=REGISTRY,
)
GAPS_OPEN = Gauge("lockergw_central_gaps_open", "Gateways whose chain has a gap now", registry=REGISTRY)
REPLAYS_SENT = Counter("lockergw_central_replays_sent", "events/replay requests sent", registry=REGISTRY)
ALERTS_OPEN = Gauge("lockergw_central_alerts_open", "Alerts not yet resolved", ["kind"], registry=REGISTRY)
MQTT_CONNECTED = Gauge("lockergw_central_mqtt_connected", "1 while the worker is connected", registry=REGISTRY)
