"""Visitor and contractor codes: short-lived `mobile` credentials shown as a QR code or typed as a PIN.

A code is 12 random decimal digits (`secrets`, about 39.9 bits). The same digits are its uid — digits
are upper-case hex characters, so the code is already a canonical uid, and no card family reports a
6-byte uid, so a code never clashes with a card — which lets one code travel three ways: as the text
of a QR code read by a scanner on a `serial-ascii` reader in `text` mode, typed on an OSDP keypad
(an entry of exactly 12 digits is a code; shorter entries name lockers), or read aloud by the front
desk. Why guessing is hopeless under the lockout rules is worked out in docs/visitors.md.
"""

from __future__ import annotations

import io
import re
import secrets
from datetime import timedelta
from pathlib import Path

from drivers.base import CODE_DIGITS
from gateway.storage import private_umask

__all__ = ["CODE_DIGITS", "USED_UP_PREFIX", "VisitorError", "code_of_entry", "grouped", "new_code", "parse_validity"]

#: The journal's runtime-state key of a single-use credential used up but not yet revoked in the store.
USED_UP_PREFIX = "used_up:"
#: The longest validity a visitor code may be issued for (a code is a short-term key, not a card).
MAX_VALIDITY = timedelta(days=14)

_DURATION = re.compile(r"(\d+)\s*([dhm])")
_UNITS = {"d": timedelta(days=1), "h": timedelta(hours=1), "m": timedelta(minutes=1)}


class VisitorError(ValueError):
    """A visitor-code request that cannot be met; the message is one plain line."""


def new_code() -> str:
    """A fresh random code of CODE_DIGITS decimal digits (leading zeros kept)."""
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def code_of_entry(digits: str) -> str | None:
    """The code in a keypad entry, or None when the entry is not a code (e.g. a locker number)."""
    typed = digits.strip().rstrip("#")
    if len(typed) == CODE_DIGITS and typed.isascii() and typed.isdigit():
        return typed
    return None


def grouped(code: str) -> str:
    """A code as people read and type it: `1234 5678 9012`."""
    return " ".join(code[i : i + 4] for i in range(0, len(code), 4))


def parse_validity(text: str) -> timedelta:
    """`4h`, `90m`, `1d`, `2h30m` → a timedelta between one minute and MAX_VALIDITY; VisitorError else."""
    compact = text.strip().lower().replace(" ", "")
    parts = _DURATION.findall(compact)
    if not compact or not parts or "".join(n + u for n, u in parts) != compact:
        raise VisitorError(f"--valid-for {text!r}: give hours, minutes or days, e.g. 4h, 90m, 1d or 2h30m")
    total = sum((_UNITS[unit] * int(number) for number, unit in parts), timedelta())
    if total < timedelta(minutes=1) or total > MAX_VALIDITY:
        raise VisitorError(f"--valid-for {text!r}: must be between 1 minute and {MAX_VALIDITY.days} days")
    return total


def terminal_qr(code: str) -> str:
    """The code as a QR code drawn with block characters, for the operator's terminal."""
    import qrcode  # imported here: only the visitor command draws QR codes

    qr = qrcode.QRCode(border=2, error_correction=qrcode.constants.ERROR_CORRECT_M)
    qr.add_data(code)
    qr.make(fit=True)
    out = io.StringIO()
    qr.print_ascii(out=out, invert=True)
    return out.getvalue()


def write_png(code: str, path: Path) -> None:
    """The code as a QR code in a PNG file (pure Python: qrcode with pypng). The file opens a locker,
    like a key file: created 0600 whatever the umask (SPEC §10)."""
    import qrcode
    from qrcode.image.pure import PyPNGImage

    image = qrcode.make(code, image_factory=PyPNGImage, box_size=10, border=4)
    with private_umask(), path.open("wb") as out:
        image.save(out)
