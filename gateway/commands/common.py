"""Helpers shared by sub-commands: the --config option and turning user errors into one line."""

from __future__ import annotations

import argparse
import sys

from gateway.config import DEFAULT_CONFIG_PATH, ConfigError, Settings, load_config

EXIT_USER_ERROR = 2


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=str(DEFAULT_CONFIG_PATH),
        metavar="FILE",
        help=f"gateway.toml (default {DEFAULT_CONFIG_PATH})",
    )


def fail(message: str) -> int:
    """Print one plain line to stderr and return the user-error exit status."""
    print(f"lockergw: {message}", file=sys.stderr)
    return EXIT_USER_ERROR


def load_or_report(path: str) -> Settings | None:
    """Load the configuration, or print one line per fault and return None."""
    try:
        return load_config(path)
    except ConfigError as exc:
        for fault in exc.faults:
            print(fault, file=sys.stderr)
        return None
