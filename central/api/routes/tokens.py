"""`GET /api/tokens`, `POST /api/tokens`, `POST /api/tokens/{id}/revoke` (admin only)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict

from central.api.deps import Admin, Db, actor
from central.api.errors import ErrorBody
from central.api.params import Name
from central.services import access
from central.services.models import ApiToken, ApiTokenList, NewApiToken, RoleName
from central.tokens import Role

router = APIRouter(tags=["tokens"])


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    role: RoleName


@router.get("/api/tokens", response_model=ApiTokenList, summary="Every API token (never the tokens themselves)")
def tokens(connection: Db, _token: Admin) -> ApiTokenList:
    return ApiTokenList(tokens=access.tokens(connection))


@router.post("/api/tokens", response_model=NewApiToken, status_code=201, summary="Make a token (shown once)")
def create(connection: Db, token: Admin, body: TokenRequest) -> NewApiToken:
    made = access.create(connection, body.name, Role[body.role], actor=actor(token), now=datetime.now(UTC))
    connection.commit()
    return made


@router.post(
    "/api/tokens/{token_id}/revoke",
    response_model=ApiToken,
    summary="Revoke a token",
    responses={
        404: {"model": ErrorBody, "description": "no such token"},
        409: {"model": ErrorBody, "description": "already revoked"},
    },
)
def revoke(connection: Db, token: Admin, token_id: Annotated[int, Path(ge=1, le=2**63 - 1)]) -> ApiToken:
    revoked = access.revoke(connection, token_id, actor=actor(token), now=datetime.now(UTC))
    connection.commit()
    return revoked
