"""Card numbers: one canonical form for every reader family (SPEC §4 "Card numbers").

Canonical uid: upper-case hex, no separators, of the credential's data bytes — EM4100: 5 bytes
(10 hex), ISO 14443-A: 4/7/10 bytes, FeliCa: 8 bytes, Wiegand-26: 24 data bits (6 hex),
Wiegand-34: 32 data bits (8 hex); a decimal converter's number is zero-padded to its bit width.

Enrolment also accepts what is printed on fobs: the 10-digit decimal of the last 4 EM4100 bytes,
written with a `dec:` prefix (`dec:0013530444`), and `FFF,CCCCC` (`206,30028`). The prefix is needed
because ten bare digits are also a valid EM4100 uid in hex (`1234567890`), and the canonical form —
what readers report and `lockergw credentials enroll` prints — always wins. The fob forms carry only
the low 32 or 24 bits of the card, so they are stored as 8 or 6 hex characters and matched by
**number**: a tap whose uid ends in the same 32 (or 24) bits finds such a credential when no
credential has its exact uid. That is the one match rule beyond equality, and `CredentialIndex`
applies it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import TypeVar

_HEX = re.compile(r"^[0-9A-F]+$")
_FACILITY_CARD = re.compile(r"^(\d{1,3}),(\d{1,5})$")
_SEPARATORS = re.compile(r"[\s:.-]")

#: uids of at most this many hex characters were enrolled as a number and match by their low bits.
SHORT_UID_HEX = 8


class UidError(ValueError):
    pass


def normalise_uid(text: str) -> str:
    """Turn what an operator typed or a fob shows into the canonical uid, or raise UidError.

    Accepts hex (any case, with ':', '-', '.' or spaces between bytes, optional 0x), `dec:` and the
    decimal number printed on EM4100 fobs (the last 4 bytes; stored as 8 hex), and `FFF,CCCCC`
    (stored as 6 hex).
    """
    raw = text.strip()
    shown = mask_uid(raw)  # error messages never carry a whole card number
    if raw.lower().startswith("dec:"):
        digits = raw[4:].strip()
        if not digits.isdigit() or len(digits) > 10:
            raise UidError(f"{shown!r}: dec: takes the number printed on the fob (up to 10 digits)")
        if int(digits) > 0xFFFFFFFF:
            raise UidError(f"{shown!r}: a fob number must be at most 4294967295")
        return f"{int(digits):08X}"
    facility_card = _FACILITY_CARD.match(raw)
    if facility_card:
        facility, card = int(facility_card.group(1)), int(facility_card.group(2))
        if facility > 255 or card > 65535:
            raise UidError(f"{shown!r}: facility code must be 0-255 and card number 0-65535")
        return f"{facility << 16 | card:06X}"
    compact = _SEPARATORS.sub("", raw)
    upper = compact.upper().removeprefix("0X")
    if not upper or not _HEX.match(upper):
        raise UidError(f"{shown!r} is not a card number (hex, dec:NNNNNNNNNN as printed on a fob, or FFF,CCCCC)")
    if len(upper) % 2:
        upper = "0" + upper
    if len(upper) > 32:
        raise UidError(f"card number is longer than 16 bytes ({len(upper) // 2})")
    return upper


def decimal_to_uid(number: int, bit_width: int = 24) -> str:
    """A decimal converter's card number as canonical hex, zero-padded to the reader's bit width."""
    digits = (bit_width + 3) // 4
    return f"{number:0{digits}X}"


def mask_uid(uid: str) -> str:
    """How a uid is shown anywhere in the CLI: only the last 4 characters."""
    return "…" + uid[-4:] if len(uid) > 4 else "…" + uid


V = TypeVar("V")


class CredentialIndex(Mapping[str, V]):
    """uid → value, with the fob-number match rule: exact uid first, then the low 32, then 24 bits
    against credentials enrolled in a short (number) form. One to three dict lookups per tap."""

    def __init__(self, items: Iterable[tuple[str, V]] = ()) -> None:
        self._exact: dict[str, V] = {}
        self._short: dict[tuple[int, int], V] = {}
        for uid, value in items:
            self.put(uid, value)

    def put(self, uid: str, value: V) -> None:
        self._exact[uid] = value
        if uid and len(uid) <= SHORT_UID_HEX:
            self._short[(len(uid), int(uid, 16))] = value

    def discard(self, uid: str) -> None:
        self._exact.pop(uid, None)
        if uid and len(uid) <= SHORT_UID_HEX:
            self._short.pop((len(uid), int(uid, 16)), None)

    def __getitem__(self, uid: str) -> V:
        found = self._exact.get(uid)
        if found is not None:
            return found
        if uid and _HEX.match(uid):
            value = int(uid, 16)
            for width, mask in ((8, 0xFFFFFFFF), (6, 0xFFFFFF)):
                found = self._short.get((width, value & mask))
                if found is not None:
                    return found
        raise KeyError(uid)

    def __iter__(self) -> Iterator[str]:
        return iter(self._exact)

    def __len__(self) -> int:
        return len(self._exact)
