"""What a caller can get wrong, as values with a one-line message; the API maps each to its HTTP status."""

from __future__ import annotations


class ServiceError(Exception):
    """A request that cannot be carried out as asked; `str(exc)` is the one line shown to the user."""


class BadInput(ServiceError):
    """A value that is malformed or out of range; the message starts with the field's name (HTTP 400)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class NotFound(ServiceError):
    """The thing named does not exist (HTTP 404)."""


class Conflict(ServiceError):
    """The thing exists but is not in a state that allows this (HTTP 409)."""
