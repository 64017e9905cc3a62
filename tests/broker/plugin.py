"""Pytest fixtures for a private Mosquitto, registered by tests/conftest.py (`pytest_plugins`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.mosquitto import Mosquitto, TlsFiles, make_test_pki


@pytest.fixture(scope="session")
def test_pki(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A throwaway CA with a server certificate (127.0.0.1, localhost) and a client certificate."""
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """`make(tls=..., passwords=..., acl=..., persistence=...)` → a started broker, stopped after the test."""
    started: list[Mosquitto] = []

    def make(**options: Any) -> Mosquitto:
        broker = Mosquitto(tmp_path / f"mosquitto-{len(started)}", **options)
        broker.start()
        started.append(broker)
        return broker

    yield make
    for broker in started:
        broker.stop()


@pytest.fixture
def broker(mosquitto_factory: Callable[..., Mosquitto]) -> Mosquitto:
    """A plain (anonymous) private broker on a free port."""
    return mosquitto_factory()
