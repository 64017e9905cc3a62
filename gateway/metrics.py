"""Prometheus metrics (optional `[metrics] port`): taps, grants, denials by reason, decision latency,
journal backlog and broker connection state. One registry per gateway, so tests can run several."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.taps = Counter("lockergw_taps", "Card presentations decided", ["reader"], registry=self.registry)
        self.grants = Counter("lockergw_grants", "Lockers opened by a decision", ["reason"], registry=self.registry)
        self.denials = Counter("lockergw_denials", "Taps denied", ["reason"], registry=self.registry)
        self.decision_seconds = Histogram(
            "lockergw_decision_seconds",
            "Time to decide one tap (policy only)",
            buckets=(0.00001, 0.00003, 0.0001, 0.0003, 0.001, 0.003, 0.01),
            registry=self.registry,
        )
        self.journal_seconds = Histogram(
            "lockergw_journal_commit_seconds",
            "Time to commit a decision durably before unlocking",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5),
            registry=self.registry,
        )
        self.backlog = Gauge("lockergw_journal_backlog", "Events waiting for the broker", registry=self.registry)
        self.broker_connected = Gauge(
            "lockergw_broker_connected", "1 when connected to the broker", registry=self.registry
        )
        self.broker_refuses_events = Gauge(
            "lockergw_broker_refuses_events",
            "1 while the broker answers this gateway's events with a failure reason code (they stay in the journal)",
            registry=self.registry,
        )
        self.journal_failing = Gauge(
            "lockergw_journal_failing", "1 while the journal cannot commit (taps are refused)", registry=self.registry
        )
        self.refused_taps = Counter(
            "lockergw_taps_refused_journal", "Taps refused because the journal could not commit", registry=self.registry
        )
        self.devices_online = Gauge(
            "lockergw_device_online", "1 when a device is online", ["device"], registry=self.registry
        )

    def serve(self, host: str, port: int) -> Any:
        """Expose /metrics over HTTP; returns the server (shut down with .shutdown())."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server

    def track_backlog(self, read: Callable[[], int]) -> None:
        self.backlog.set_function(lambda: float(read()))
