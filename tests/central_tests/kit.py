"""What central's tests share: a central.toml, simulated gateways that publish correctly chained events
(until `lockergw fleet-sim` lands), a `lockergw central` process, and reading back central's tables."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from paho.mqtt.client import Client, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from sqlalchemy import Engine, select

from central.schema import alerts, event_chain, gateways
from gateway.events import GENESIS_HASH, SCHEMA, event_hash, format_ts, uuid7
from gateway.mqtt.topics import Topics

PREFIX = "lockers"
T = TypeVar("T")


def write_central_config(
    directory: Path, database: str, broker_url: str, worker: str = "central-1", **central: Any
) -> Path:
    """A central.toml for one worker; `central` overrides [central] keys (short timers for tests)."""
    values = {"gap_grace_s": 0.5, "repair_timeout_s": 3, "gateway_offline_s": 2, "takeover_s": 3, **central}
    lines = ["[central]", f'id = "{worker}"', f'database = "{database}"']
    lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    lines += ["[mqtt]", f'url = "{broker_url}"', f'topic_prefix = "{PREFIX}"']
    lines += ["[http]", 'listen = "127.0.0.1:0"']
    path = directory / f"{worker}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class ChainedGateway:
    """A simulated gateway: correctly chained §7 events, its state, and (optionally) answers to
    `events/replay` from everything it has published."""

    def __init__(self, broker_url: str, site: str, gateway: str, *, answers_replays: bool = True) -> None:
        self.site, self.gateway = site, gateway
        self.topics = Topics.of(PREFIX, site, gateway)
        self.boot_id = uuid7()
        self.journal: list[dict[str, Any]] = []
        self.replays: list[int] = []
        self.answers_replays = answers_replays
        host, port = broker_url.removeprefix("mqtt://").split(":")
        self.client = Client(
            CallbackAPIVersion.VERSION2, client_id=f"sim-{site}-{gateway}", protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.on_message = self._on_message
        self.client.connect(host, int(port))
        self.client.subscribe(self.topics.request("events/replay"), qos=1)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def event(self, kind: str = "door.opened", **fields: Any) -> dict[str, Any]:
        """The next event of the chain (journaled here, not yet published)."""
        previous = self.journal[-1]["hash"] if self.journal else GENESIS_HASH
        envelope: dict[str, Any] = {
            "schema": SCHEMA,
            "event_id": uuid7(),
            "site": self.site,
            "gateway": self.gateway,
            "seq": len(self.journal) + 1,
            "boot_id": self.boot_id,
            "ts": format_ts(datetime.now(UTC)),
            "kind": kind,
            **fields,
            "prev_hash": previous,
        }
        envelope["hash"] = event_hash(envelope)
        self.journal.append(envelope)
        return envelope

    def events(self, count: int, kind: str = "door.opened", **fields: Any) -> list[dict[str, Any]]:
        return [self.event(kind, **fields) for _ in range(count)]

    def publish(self, envelope: dict[str, Any], *, on: Topics | None = None) -> None:
        info = self.client.publish((on or self.topics).event(envelope["kind"]), json.dumps(envelope), qos=1)
        info.wait_for_publish(10)

    def publish_all(self, envelopes: list[dict[str, Any]]) -> None:
        infos = [self.client.publish(self.topics.event(e["kind"]), json.dumps(e), qos=1) for e in envelopes]
        for info in infos:
            info.wait_for_publish(10)

    def publish_state(self, state: str) -> None:
        payload = {"state": state, "boot_id": self.boot_id, "version": "test", "ts": format_ts(datetime.now(UTC))}
        self.client.publish(self.topics.state, json.dumps(payload), qos=1, retain=True).wait_for_publish(10)

    def _on_message(self, client: Client, _userdata: Any, message: MQTTMessage) -> None:
        request = json.loads(message.payload)
        self.replays.append(int(request["from_seq"]))
        if not self.answers_replays:
            return
        for envelope in self.journal[int(request["from_seq"]) - 1 :]:
            client.publish(self.topics.event(envelope["kind"]), json.dumps({**envelope, "historical": True}), qos=1)


def wait_until(condition: Callable[[], T], timeout: float = 20.0, what: str = "condition") -> T:
    """Poll `condition` (a database query: there is nothing to await) until it is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} (last: {value!r})")
        time.sleep(0.05)


async def async_wait_until(condition: Callable[[], T], timeout: float = 20.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(condition)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} (last: {value!r})")
        await asyncio.sleep(0.05)


def stored_seqs(engine: Engine, site: str, gateway: str) -> list[int]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(event_chain.c.seq)
            .where(event_chain.c.site == site, event_chain.c.gateway == gateway)
            .order_by(event_chain.c.seq)
        )
        return [int(seq) for seq in rows.scalars()]


def gateway_row(engine: Engine, site: str, gateway: str) -> Any:
    with engine.connect() as connection:
        return connection.execute(
            select(gateways).where(gateways.c.site == site, gateways.c.gateway == gateway)
        ).first()


def alert_rows(engine: Engine, kind: str | None = None) -> list[Any]:
    with engine.connect() as connection:
        query = select(alerts).order_by(alerts.c.id)
        if kind is not None:
            query = query.where(alerts.c.kind == kind)
        return list(connection.execute(query).all())


class CentralProcess:
    """`lockergw central --config F` as a child process."""

    def __init__(self, config: Path, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> CentralProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        process = self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "central", "--config", str(self.config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        wait_until(lambda: ": subscribed" in self.log() or process.poll() is not None, 30, "central to subscribe")
        assert process.poll() is None, self.log()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        assert self.process is not None
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGUSR1)  # central dumps every thread's stack to its log
            time.sleep(1)
            raise AssertionError(f"central did not exit within {timeout} s:\n{self.log()[-8000:]}") from None
        self._log.close()
        return code

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
            self._log.close()
