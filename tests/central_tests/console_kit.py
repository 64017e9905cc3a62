"""What the console tests share: users of each role and a signed-in test client."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import Engine

from central.services import users
from central.tokens import Role

PASSWORD = "correct horse battery"
ROLE_NAMES = {role: f"{role.name}-1" for role in Role}


def add_users(engine: Engine) -> dict[Role, str]:
    """One user per role, named `viewer-1`, `operator-1`, `admin-1`, all with PASSWORD."""
    with engine.begin() as connection:
        for role, name in ROLE_NAMES.items():
            users.add(connection, name, role, PASSWORD, actor="test", now=datetime.now(UTC))
    return ROLE_NAMES


def hidden_token(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]*)"', html)
    assert found, html
    return found.group(1)


def sign_in(client: TestClient, name: str, password: str = PASSWORD) -> Response:
    form = client.get("/console/signin")
    answer: Response = client.post(
        "/console/signin",
        data={"name": name, "password": password, "csrf_token": hidden_token(form.text)},
        follow_redirects=False,
    )
    return answer


def signed_in(client: TestClient, name: str) -> str:
    """Sign `client` in as `name`; return the session's CSRF token."""
    answer = sign_in(client, name)
    assert answer.status_code == 303, answer.text
    return hidden_token(client.get("/console/").text)
