"""Reading a TOML settings file with `PREFIX<SECTION>__<KEY>` environment overrides into a pydantic model.

Shared by the gateway (`gateway.toml`, prefix `LOCKERGW_`) and central (`central.toml`, prefix
`LOCKERGW_CENTRAL_`). Every fault is one line naming the file and the key path; unknown keys — in the file
or in the environment — are faults, so a typo is never silently ignored.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError


class ConfigError(Exception):
    """A configuration that cannot be used; `faults` holds one human-readable line per problem."""

    def __init__(self, faults: list[str]) -> None:
        super().__init__("\n".join(faults))
        self.faults = faults


Model = TypeVar("Model", bound=BaseModel)


def unknown_environment_keys(environ: Mapping[str, str], model: type[BaseModel], prefix: str) -> list[str]:
    """`PREFIX*` variables that name no setting of `model`."""
    faults: list[str] = []
    sections: dict[str, Any] = {name: info.annotation for name, info in model.model_fields.items()}
    for name in environ:
        if not name.startswith(prefix) or _belongs_to_longer_prefix(name, prefix):
            continue
        parts = name.removeprefix(prefix).lower().split("__")
        section = sections.get(parts[0])
        if section is None:
            faults.append(f"environment: {name}: no such section {parts[0]!r}")
        elif (
            len(parts) > 1
            and isinstance(section, type)
            and issubclass(section, BaseModel)
            and parts[1] not in section.model_fields
        ):
            faults.append(f"environment: {name}: no key {parts[1]!r} in section {parts[0]!r}")
    return faults


#: Prefixes of other programs of this distribution that start with the gateway's own.
_NESTED_PREFIXES = ("LOCKERGW_CENTRAL_",)


def _belongs_to_longer_prefix(name: str, prefix: str) -> bool:
    return any(other != prefix and other.startswith(prefix) and name.startswith(other) for other in _NESTED_PREFIXES)


def _format_location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def format_errors(source: str, error: ValidationError, example: str) -> list[str]:
    """One line per validation error: `file: section.key: message`."""
    faults: list[str] = []
    for item in error.errors():
        location = _format_location(tuple(item["loc"]))
        kind = item["type"]
        message = str(item["msg"]).removeprefix("Value error, ")
        if kind == "extra_forbidden":
            message = f"unknown key (check the spelling; see {example})"
        elif kind == "missing":
            message = "missing (required)"
        elif kind == "string_pattern_mismatch":
            message = f"{item.get('input')!r} does not match {item['ctx']['pattern']}"
        for line in message.splitlines():
            faults.append(f"{source}: {location}: {line}" if location else f"{source}: {line}")
    return faults


def load_settings(
    path: Path | str,
    model: type[Model],
    *,
    prefix: str,
    example: str,
    cross_check: Callable[[dict[str, Any]], list[str]] | None = None,
) -> Model:
    """Read, override from the environment and validate; raise ConfigError with one line per fault.

    `model` is a pydantic-settings class whose sources put the environment before the file's values.
    `cross_check` sees the raw TOML so relations between sections are reported beside field faults.
    """
    path = Path(path)
    source = path.name
    try:
        raw: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file (pass --config PATH)"]) from None
    except PermissionError:
        raise ConfigError([f"{path}: permission denied"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{path}: is a directory, not a configuration file"]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{source}: not valid TOML: {exc}"]) from None
    faults = unknown_environment_keys(os.environ, model, prefix)
    from_environment = {
        ".".join(name.removeprefix(prefix).lower().split("__"))
        for name in os.environ
        if name.startswith(prefix) and not _belongs_to_longer_prefix(name, prefix)
    }
    unknown_key = f"unknown key (check the spelling; see {example})"
    settings: Model | None = None
    try:
        settings = model(**raw)
    except ValidationError as exc:
        # Unknown environment keys were reported above, in the environment's own words.
        faults += [
            fault
            for fault in format_errors(source, exc, example)
            if not (fault.endswith(unknown_key) and fault.split(": ")[1] in from_environment)
        ]
    if cross_check is not None:
        faults += [f"{source}: {fault}" for fault in cross_check(raw)]
    if faults or settings is None:
        raise ConfigError(list(dict.fromkeys(faults)))
    return settings
