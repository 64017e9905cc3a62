"""`lockergw central token create|list|revoke` as a user runs it: the token printed once, alone on the last
line, usable at once against the API; only its hash stored; revoked tokens refused; bad input one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from central.api.app import create_app
from central.database import open_database
from central.schema import api_tokens
from central_tests.api_kit import bearer, context_for


def lockergw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "central", *args], capture_output=True, text=True, timeout=60
    )


def test_a_token_is_shown_once_stored_hashed_works_and_can_be_revoked(central_database: str, tmp_path: Path) -> None:
    config = tmp_path / "central.toml"
    config.write_text(f'[central]\ndatabase = "{central_database}"\n')

    made = lockergw("token", "create", "--name", "dashboard", "--role", "operator", "--config", str(config))
    assert made.returncode == 0, made.stderr
    token = made.stdout.splitlines()[-1]
    assert token.startswith("lgwc_") and len(token) > 40 and " " not in token

    engine = open_database(central_database)
    try:
        with engine.connect() as connection:
            stored = connection.execute(select(api_tokens)).one()
        assert (stored.name, stored.role) == ("dashboard", "operator")
        assert token not in stored.token_hash and len(stored.token_hash) == 64
        with TestClient(create_app(context_for(engine))) as client:
            assert client.get("/api/gateways", headers=bearer(token)).status_code == 200
            listing = lockergw("token", "list", "--config", str(config))
            assert listing.returncode == 0 and "dashboard" in listing.stdout and token not in listing.stdout
            revoked = lockergw("token", "revoke", "dashboard", "--config", str(config))
            assert revoked.returncode == 0 and "revoked" in revoked.stdout
            assert client.get("/api/gateways", headers=bearer(token)).status_code == 401
    finally:
        engine.dispose()

    again = lockergw("token", "revoke", "dashboard", "--config", str(config))
    assert (again.returncode, again.stderr) == (2, "lockergw: no live token with id or name 'dashboard'\n")
    bad_role = lockergw("token", "create", "--name", "x", "--role", "root", "--config", str(config))
    assert bad_role.returncode == 2 and "invalid choice: 'root'" in bad_role.stderr
    bad_name = lockergw("token", "create", "--name", "\x1b[2J", "--role", "viewer", "--config", str(config))
    assert (bad_name.returncode, bad_name.stderr) == (2, "lockergw: name: must be 1 to 128 printable characters\n")
    no_config = lockergw("token", "list", "--config", str(tmp_path / "missing.toml"))
    assert no_config.returncode == 2 and "Traceback" not in no_config.stderr and len(no_config.stderr.splitlines()) == 1
