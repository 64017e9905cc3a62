"""The request models of SPEC §7: one pydantic model per command, strict, no unknown fields.

Free text that arrives in a request (operator, reason, by, authorizers) may not hold control
characters; `error_message` words a validation failure without quoting the input (it may hold a card
number).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from gateway.model import has_control_character

#: A snapshot may come in at most this many pages (a guard on memory, far above any real set).
MAX_SNAPSHOT_PAGES = 10_000


def _no_control(value: str) -> str:
    if has_control_character(value):
        raise ValueError("contains a control character")
    return value


Text = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_no_control)]
By = Text
Note = Annotated[str, Field(max_length=1024), AfterValidator(_no_control)]


class RequestModel(BaseModel):
    """Fields every request may carry: its transaction and, when signing is on, its signature."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    transaction: Any = None
    issued_at: Any = None
    nonce: Any = None
    hmac: Any = None


class HealthCheck(RequestModel):
    pass


class Upsert(RequestModel):
    credentials: list[dict[str, Any]] = Field(min_length=1)
    by: By = "mqtt"


class Remove(RequestModel):
    id: Text
    force: bool = False
    by: By = "mqtt"


class SetStatus(RequestModel):
    id: Text
    status: Literal["active", "suspended", "lost", "revoked", "returned", "replaced"]
    reason: Note | None = None
    by: By = "mqtt"


class Replace(RequestModel):
    id: Text
    new_uid: str = Field(default="", max_length=64)  # empty for a physical key
    new_id: Text | None = None
    by: By = "mqtt"


class Snapshot(RequestModel):
    version: int | Text
    page: int = Field(ge=1, le=MAX_SNAPSHOT_PAGES)
    pages: int = Field(ge=1, le=MAX_SNAPSHOT_PAGES)
    credentials: list[dict[str, Any]]
    by: By = "mqtt"


class Get(RequestModel):
    id: Text


class Authorizer(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    id: Text
    holder: Text | None = None


class Open(RequestModel):
    locker: Text
    operator: Text
    reason: Annotated[Note, Field(min_length=1)]
    authorizers: list[Authorizer] = Field(default_factory=list, max_length=16)


class SetService(RequestModel):
    locker: Text
    service: Literal["in_service", "out_of_service"]
    by: By = "mqtt"


class Assign(RequestModel):
    locker: Text
    credential: Text
    by: By = "mqtt"


class Release(RequestModel):
    locker: Text
    by: By = "mqtt"


class Replay(RequestModel):
    from_seq: int = Field(ge=1)


def error_message(exc: ValidationError) -> str:
    """Pydantic's errors as `path: problem; …` — never quoting the input (it may hold a card number)."""
    parts: list[str] = []
    for item in exc.errors(include_input=False, include_url=False):
        path = ""
        for part in item["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        kind = item["type"]
        if kind == "missing":
            problem = "missing (required)"
        elif kind == "extra_forbidden":
            problem = "unknown field"
        else:
            problem = str(item["msg"]).removeprefix("Value error, ")
        parts.append(f"{path}: {problem}" if path else problem)
    return "; ".join(dict.fromkeys(parts))
