"""Helpers shared by sub-commands: the --config option and turning user errors into one line."""

from __future__ import annotations

import argparse
import codecs
import csv
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import TextIO

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


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: A spreadsheet treats a cell starting with one of these as a formula (SPEC §4).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def printable(text: str) -> str:
    """Stored text as it may reach a terminal: control characters (an escape sequence that clears the
    screen, a newline that forges a line) shown as \\xNN instead of acting."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def csv_cell(value: str) -> str:
    """A CSV cell that a spreadsheet shows as text: a leading =, +, -, @, tab or CR gets a `'` before it."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def write_csv(out: TextIO, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Every CSV a command writes: formulas neutralised in every cell."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([csv_cell(cell) for cell in row] for row in rows)


def print_columns(out: TextIO, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A plain table with full values (for pipes and narrow terminals: nothing is cut)."""
    cells = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(name), *(len(row[i]) for row in cells)) if cells else len(name) for i, name in enumerate(header)]
    for row in (list(header), *cells):
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n")


# Dates: one form per kind of output (README, "Dates"). A terminal shows the gateway's local time to the
# minute with its offset; a CSV file carries ISO 8601 with seconds and the offset; MQTT and the journal
# carry UTC with a Z (the contract, SPEC §7).


def terminal_time(moment: datetime | None, zone: tzinfo) -> str:
    """`2026-07-21 00:00+01:00`: local time in the gateway's zone, as every table and `show` print it."""
    return "" if moment is None else moment.astimezone(zone).isoformat(sep=" ", timespec="minutes")


def csv_time(moment: datetime | None, zone: tzinfo) -> str:
    """`2026-07-21T00:00:00+01:00`: what every CSV a command writes carries."""
    return "" if moment is None else moment.astimezone(zone).isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True)
class CsvFile:
    """A CSV file found to be readable UTF-8 text, and how many lines it has (a progress bar's total)."""

    path: Path
    lines: int


#: Bytes read at a time while a CSV file is checked.
_SCAN_BLOCK = 1 << 20


def scan_csv_file(path: Path) -> CsvFile | int:
    """Check that a CSV file is UTF-8 text (a BOM allowed) without holding it, counting its lines; or
    return the exit status after one plain line saying why not."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = lines = 0
    last = b""
    try:
        with path.open("rb") as handle:
            while block := handle.read(_SCAN_BLOCK):
                held = len(decoder.getstate()[0])  # the start of a character cut by the previous block
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as exc:
                    return _not_utf8(path, offset - held + exc.start)
                offset += len(block)
                lines += block.count(b"\n")
                last = block[-1:]
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return _not_utf8(path, offset - len(decoder.getstate()[0]))
    except OSError as exc:
        return _unreadable(path, exc)
    return CsvFile(path, lines + (1 if last not in (b"", b"\n") else 0))


def read_csv_file(path: Path) -> str | int:
    """A CSV file's text (UTF-8, a BOM allowed), or the exit status after one plain line saying why not."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        return _not_utf8(path, exc.start)
    except OSError as exc:
        return _unreadable(path, exc)


def _not_utf8(path: Path, byte: int) -> int:
    return fail(f"{path}: not UTF-8 text (byte {byte}); save the file as CSV UTF-8")


def _unreadable(path: Path, exc: OSError) -> int:
    if isinstance(exc, FileNotFoundError):
        return fail(f"{path}: no such file")
    if isinstance(exc, IsADirectoryError):
        return fail(f"{path}: is a directory, not a CSV file")
    return fail(f"{path}: {exc.strerror}")
