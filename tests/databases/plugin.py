"""Pytest fixtures for central's databases: a fresh PostgreSQL database per test (created on the server at
`LOCKERGW_TEST_POSTGRES`, default postgresql://postgres@127.0.0.1:5432/postgres, dropped afterwards) and
a fresh SQLite file. `.ci/run` makes sure a PostgreSQL server is there.

`central_database` is parametrised over both, so a test that takes it runs on each dialect.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

ADMIN_URL = os.environ.get("LOCKERGW_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def _admin_connection():  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped (with its connections) after the test."""
    name = f"lockergw_test_{secrets.token_hex(6)}"
    try:
        admin = _admin_connection()
    except Exception as exc:  # the server is missing: say so plainly rather than erroring in every test
        pytest.fail(f"PostgreSQL is not reachable at {ADMIN_URL} ({exc}); .ci/run starts one")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with _admin_connection() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'central.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def central_database(request: pytest.FixtureRequest) -> str:
    """A fresh database URL of each kind in turn."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(fixture)
    return url
