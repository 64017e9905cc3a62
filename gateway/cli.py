"""`lockergw` command line: one sub-command module per job under gateway/commands/.

User errors print one plain line and exit 2; a mistyped command line gets argparse's usage message.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gateway import __version__
from gateway.commands import registers


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every sub-command, or of `command` alone when it is one (its module only is imported)."""
    parser = argparse.ArgumentParser(prog="lockergw", description="Locker access gateway")
    parser.add_argument("--version", action="version", version=f"lockergw {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in registers(command):
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if not words:
        build_parser().print_help()  # `lockergw` alone: say what there is to do
        return 2
    args = build_parser(words[0]).parse_args(words)
    try:
        code: int = args.handler(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
