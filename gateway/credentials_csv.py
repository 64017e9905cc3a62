"""A credentials CSV file (SPEC §4) read row by row: the header checked first, then one upsert item per
row, so a million-row import never holds the whole file (`lockergw credentials import`).

Each row becomes an item of its non-empty cells by column name; a row the CSV layer cannot read (more
cells than the header names, a broken quote) becomes a `gateway.store.BadItem`, which the store refuses
as it refuses a bad field, so every bad line of a file is reported in one pass. `lines[i]` is the file
line where item i starts (the header is line 1), kept as an array of machine integers (4 bytes a row).
The fields themselves are checked by the store, which knows the duplicates and uids already issued.
"""

from __future__ import annotations

import csv
import io
from array import array
from collections.abc import Iterable, Iterator
from typing import Any

from gateway.credential_input import REQUIRED_FIELDS, UPSERT_FIELDS
from gateway.store import BadItem

#: (line, column, message): one problem of a file, line 1 being the header.
LineProblem = tuple[int, str, str]

FIELD_NAMES = ", ".join(UPSERT_FIELDS)


class CredentialRows:
    """The rows of a credentials CSV, read as they are iterated (once). `header_problems` is filled
    on construction: iterate only when it is empty."""

    def __init__(self, lines: Iterable[str]) -> None:
        self.header_problems: list[LineProblem] = []
        self.lines = array("I")
        self._reader = csv.reader(lines, strict=True)
        self._columns: list[str] = []
        try:
            header = next(self._reader, None)
        except csv.Error as exc:
            self.header_problems.append((1, "header", str(exc)))
            return
        if header is None or not any(cell.strip() for cell in header):
            self.header_problems.append((1, "header", f"missing: the first line names the columns ({FIELD_NAMES})"))
            return
        self._columns = [cell.strip() for cell in header]
        self.header_problems += _header_problems(self._columns)

    @property
    def count(self) -> int:
        """How many items (rows with a cell, readable or not) have been read so far."""
        return len(self.lines)

    def __iter__(self) -> Iterator[dict[str, str] | BadItem]:
        reader, columns = self._reader, self._columns
        previous_end = reader.line_num
        while True:
            start = previous_end + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                self.lines.append(start)
                yield BadItem("csv", str(exc))
                return
            previous_end = reader.line_num
            if not any(map(str.strip, cells)):
                continue
            self.lines.append(start)
            if len(cells) > len(columns):
                yield BadItem("row", f"{len(cells)} cells but the header names {len(columns)}")
            elif all(map(str.strip, cells)):  # the usual row: a cell for every column
                yield dict(zip(columns, cells, strict=False))
            else:
                yield {name: cell for name, cell in zip(columns, cells, strict=False) if cell.strip()}


def _header_problems(columns: list[str]) -> list[LineProblem]:
    problems: list[LineProblem] = []
    for position, name in enumerate(columns):
        if name not in UPSERT_FIELDS:
            label = name or f"column {position + 1}"
            problems.append((1, label, f"unknown column (columns: {FIELD_NAMES})"))
        elif columns.index(name) != position:
            problems.append((1, name, "the column appears twice"))
    for name in REQUIRED_FIELDS:
        if name not in columns:
            problems.append((1, name, "missing column (required)"))
    return problems


class CsvCredentials:
    """A credentials CSV read whole into upsert items (central's import checks a site's file as one
    request). `lines[i]` is the file line where item i starts; problems are (line, column, message)."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.lines: list[int] = []
        self.header_problems: list[LineProblem] = []
        self.row_problems: list[LineProblem] = []


def read_credentials_csv(text: str) -> CsvCredentials:
    """Split a CSV file's text into upsert items (empty cells left out) and structural problems."""
    parsed = CsvCredentials()
    rows = CredentialRows(io.StringIO(text))
    parsed.header_problems = rows.header_problems
    if rows.header_problems:
        return parsed
    for item in rows:
        line = rows.lines[-1]
        if isinstance(item, BadItem):
            parsed.row_problems.append((line, item.field, item.message))
        else:
            parsed.items.append(item)
            parsed.lines.append(line)
    return parsed
