"""Sub-commands of `lockergw`. Each module has `register(subparsers)` that adds its parser and sets
`handler` (a function taking the parsed args and returning the exit status)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from importlib import import_module

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

#: Modules under gateway.commands, in the order `lockergw --help` lists them.
MODULE_NAMES = ("run", "credentials", "sim", "demo", "events", "doctor", "report", "journal", "keygen")


def _load() -> list[Register]:
    registers: list[Register] = []
    for name in MODULE_NAMES:
        try:
            module = import_module(f"gateway.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"gateway.commands.{name}":
                continue  # not written yet
            raise
        registers.append(module.register)
    return registers


COMMANDS = _load()
