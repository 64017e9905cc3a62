"""Sub-commands of `lockergw`. Each module has `register(subparsers)` that adds its parser and sets
`handler` (a function taking the parsed args and returning the exit status)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from importlib import import_module

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

#: Modules with a `register`, in the order `lockergw --help` lists them: plain names are under
#: gateway.commands; dotted names are whole module paths (central's commands live with central).
MODULE_NAMES = (
    "run",
    "credentials",
    "sim",
    "demo",
    "events",
    "doctor",
    "report",
    "journal",
    "keygen",
    "fleet_sim",
    "central.cli",
)


def _load() -> list[Register]:
    registers: list[Register] = []
    for name in MODULE_NAMES:
        path = name if "." in name else f"gateway.commands.{name}"
        try:
            module = import_module(path)
        except ModuleNotFoundError as exc:
            if exc.name == path:
                continue  # not written yet
            raise
        registers.append(module.register)
    return registers


COMMANDS = _load()
