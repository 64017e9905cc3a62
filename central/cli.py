"""`lockergw central …`: the central worker and its administrative commands.

`lockergw central --config central.toml` runs a worker; `lockergw central token …`, `… credentials …`
and `… user …` manage central's database. Each group is a module under central/commands/ with
`register(subparsers)`; none imports SQLAlchemy, FastAPI or paho at module level, so `lockergw --help`
stays fast and works on a gateway installed without the `central` extra.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from importlib import import_module
from typing import TYPE_CHECKING

from central.config import DEFAULT_CENTRAL_CONFIG_PATH
from gateway.commands.common import fail
from gateway.settings_file import ConfigError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from central.config import CentralSettings

#: Modules under central.commands, in the order `lockergw central --help` lists them.
MODULE_NAMES = ("token", "credentials", "user")
#: What central needs beyond the gateway (the `central` extra of the distribution).
REQUIRED_MODULES = ("sqlalchemy", "alembic", "fastapi", "uvicorn")


def add_central_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=str(DEFAULT_CENTRAL_CONFIG_PATH),
        metavar="FILE",
        help=f"central.toml (default {DEFAULT_CENTRAL_CONFIG_PATH})",
    )


def missing_dependencies() -> list[str]:
    return [name for name in REQUIRED_MODULES if importlib.util.find_spec(name) is None]


def open_central(config: str) -> tuple[CentralSettings, Engine] | int:
    """The settings and the (migrated) database of `--config`, or the exit status after one plain line per
    fault — for the administrative commands, which import SQLAlchemy only when they run."""
    missing = missing_dependencies()
    if missing:
        return fail(f"central needs {', '.join(missing)}: install with pip install 'locker-gateway[central]'")
    from central.config import load_central_config
    from central.database import DatabaseError, open_database

    try:
        settings = load_central_config(config)
    except ConfigError as exc:
        for fault in exc.faults:
            print(fault, file=sys.stderr)
        return 2
    try:
        return settings, open_database(settings.central.database)
    except DatabaseError as exc:
        return fail(str(exc))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "central",
        help="run central (the estate's event store, API and console) or manage it",
        description="Without a sub-command: run a central worker (SPEC §11).",
    )
    add_central_config_option(parser)
    parser.set_defaults(handler=_run)
    groups = parser.add_subparsers(dest="central_command", metavar="COMMAND")
    for name in MODULE_NAMES:
        try:
            module = import_module(f"central.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"central.commands.{name}":
                continue  # not written yet
            raise
        module.register(groups)


def _run(args: argparse.Namespace) -> int:
    missing = missing_dependencies()
    if missing:
        return fail(f"central needs {', '.join(missing)}: install with pip install 'locker-gateway[central]'")
    try:
        run = import_module("central.commands.run")
    except ModuleNotFoundError as exc:
        if exc.name == "central.commands.run":
            return fail("the central worker is not built yet")
        raise
    code: int = run.main(args)
    return code
