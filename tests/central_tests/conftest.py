"""Fixtures for central's API tests: a migrated database of each kind, its context and app, tokens."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from central.api.app import create_app
from central.database import open_database
from central_tests.api_kit import FakeGateways, context_for, tokens


@pytest.fixture
def engine(central_database: str) -> Iterator[Engine]:
    opened = open_database(central_database)
    yield opened
    opened.dispose()


@pytest.fixture
def gateways_fake() -> FakeGateways:
    return FakeGateways()


@pytest.fixture
def client(engine: Engine, gateways_fake: FakeGateways) -> Iterator[TestClient]:
    with TestClient(create_app(context_for(engine, gateways_fake)), raise_server_exceptions=True) as test_client:
        yield test_client


@pytest.fixture
def token(engine: Engine) -> dict[str, str]:
    return tokens(engine)
