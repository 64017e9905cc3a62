"""`lockergw sim --config FILE [--socket PATH]`: simulated readers and lock boards for a configuration."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from gateway.commands.common import add_config_option, fail, load_or_report


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "sim",
        help="run simulated readers and lock boards at a configuration's ports",
        description=(
            "Start a simulator for every rdm6300, serial-ascii, osdp and pn532 (udp:) reader and every "
            "Kerong board of the configuration, at the configured port paths (symlinks to pseudo-terminals), "
            "with a console on stdin and a control socket. Type 'help' for the commands; see docs/simulators.md."
        ),
    )
    add_config_option(parser)
    parser.add_argument(
        "--socket",
        metavar="PATH",
        help="control socket (default: lockergw-sim-<gateway id>.sock in the temporary directory)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = load_or_report(args.config)
    if settings is None:
        return 2
    from simulators.control import run_simulator
    from simulators.pty import SimError

    stdin = sys.stdin if sys.stdin is not None and not sys.stdin.closed else None
    try:
        return asyncio.run(run_simulator(settings, Path(args.socket) if args.socket else None, stdin))
    except SimError as exc:
        return fail(str(exc))
