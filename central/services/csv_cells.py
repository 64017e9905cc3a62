"""CSV that is safe to open in a spreadsheet (SPEC §4): a cell starting with `=`, `+`, `-`, `@`, tab or
carriage return is prefixed with `'` so it is never taken for a formula, and control characters from
stored text (holders, operators, reasons) are removed."""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Iterable

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: str) -> str:
    if value.startswith(FORMULA_PREFIXES):
        value = "'" + value
    return "".join(c for c in value if unicodedata.category(c) != "Cc")


def csv_text(columns: list[str], rows: Iterable[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([safe_cell(c) for c in columns])
    for row in rows:
        writer.writerow([safe_cell(row.get(column, "")) for column in columns])
    return out.getvalue()
