"""`lockergw run --config FILE`: the daemon."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from gateway.commands.common import add_config_option, fail, load_or_report
from gateway.logs import setup_logging


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("run", help="run the gateway daemon")
    add_config_option(parser)
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    settings = load_or_report(args.config)
    if settings is None:
        return 2
    setup_logging(args.log_format, args.log_level)
    from drivers.registry import DriverUnavailable
    from gateway.daemon import Gateway
    from gateway.journal import JournalError
    from gateway.sitekey import SiteKeyError
    from gateway.storage import JournalUnavailable, StateDirBusy, describe_storage_error
    from gateway.store import StoreError

    refusals: tuple[type[Exception], ...] = (DriverUnavailable, StateDirBusy)
    if settings.mqtt.url:  # aiomqtt and paho are imported only for a gateway that has a broker
        from gateway.mqtt.link import LinkError

        refusals = (*refusals, LinkError)
    state_dir = settings.gateway.state_dir
    try:
        return asyncio.run(Gateway(settings, Path(args.config)).run())
    except refusals as exc:
        return fail(str(exc))
    except (StoreError, JournalError, SiteKeyError, JournalUnavailable) as exc:
        return fail(f"cannot start: {exc}")
    except PermissionError as exc:
        return fail(f"{exc.filename}: permission denied (state_dir must be writable by this user)")
    except OSError as exc:
        logging.getLogger("lockergw").debug("start-up failed", exc_info=exc)
        where = f"{exc.filename}: " if exc.filename else f"{state_dir}: "
        return fail(f"cannot start: {where}{describe_storage_error(exc, state_dir)}")
