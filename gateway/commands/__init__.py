"""Sub-commands of `lockergw`. Each module has `register(subparsers)` that adds its parser and sets
`handler` (a function taking the parsed args and returning the exit status)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from importlib import import_module

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

#: The command each module registers → the module, in the order `lockergw --help` lists them: plain
#: names are under gateway.commands; dotted names are whole module paths (central's commands live with
#: central). `lockergw run` imports only its own module: the daemon's start-up does not wait for the
#: others' imports (pydantic models, the central, the demo's).
MODULE_NAMES = {
    "run": "run",
    "credentials": "credentials",
    "sim": "sim",
    "demo": "demo",
    "events": "events",
    "doctor": "doctor",
    "report": "report",
    "journal": "journal",
    "keygen": "keygen",
    "fleet-sim": "fleet_sim",
    "central": "central.cli",
}


def registers(command: str | None = None) -> list[Register]:
    """The `register` of `command`'s module alone, or of every module (for help and usage errors)."""
    names = [MODULE_NAMES[command]] if command in MODULE_NAMES else list(MODULE_NAMES.values())
    found: list[Register] = []
    for name in names:
        path = name if "." in name else f"gateway.commands.{name}"
        try:
            module = import_module(path)
        except ModuleNotFoundError as exc:
            if exc.name == path:
                continue  # not written yet
            raise
        found.append(module.register)
    return found
