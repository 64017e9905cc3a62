"""Card numbers: one canonical form for every reader family (SPEC §4 "Card numbers").

Canonical uid: upper-case hex, no separators, of the credential's data bytes — EM4100: 5 bytes
(10 hex), ISO 14443-A: 4/7/10 bytes, FeliCa: 8 bytes, Wiegand-26: 24 data bits (6 hex),
Wiegand-34: 32 data bits (8 hex); a decimal converter's number is zero-padded to its bit width.

Enrolment also accepts what is printed on fobs: the 10-digit decimal of the last 4 EM4100 bytes,
written with a `dec:` prefix (`dec:0013530444`), and `FFF,CCCCC` (`206,30028`). The prefix is needed
because ten bare digits are also a valid EM4100 uid in hex (`1234567890`), and the canonical form —
what readers report and `lockergw credentials enroll` prints — always wins. The fob forms carry only
the low 32 or 24 bits of the card, so they are stored as 8 or 6 hex characters with their *form*
(`dec` or `fc`) beside them.

The one match rule beyond equality (SPEC §4): a credential enrolled from a printed form also matches
a tap from an EM4100 (125 kHz, 10 hex) reader whose low 32 (`dec`) or 24 (`fc`) bits are its number.
Nothing else matches on fewer bits: a 6- or 8-character Wiegand or MIFARE credential typed in hex
never matches the low bits of a longer uid, and a printed form never matches a MIFARE or Wiegand tap
other than exactly. The store's `by_key` (what the daemon looks cards up with) and `CredentialIndex`
(in memory, for the policy's tests and benchmark) apply the rule through `printed_form_keys`. The
same card in two forms (`3C00CE754C`, `dec:0013530444`, `206,30028`) is one card: `card_keys` gives the keys two
credentials for the same card share, and the store refuses the second as a uid clash.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import TypeVar

from drivers.card_number import decimal_to_uid as decimal_to_uid  # readers' side; enrolment shares it

_HEX = re.compile(r"^[0-9A-F]+$")
_FACILITY_CARD = re.compile(r"^(\d{1,3}),(\d{1,5})$")
_SEPARATORS = re.compile(r"[\s:.-]")

#: The reader family a printed fob form describes: EM4100, 125 kHz, 5 bytes (10 hex characters).
EM4100 = "em4100"
EM4100_HEX = 10
#: Forms of a uid: typed or read in hex (""), the 10-digit number printed on a fob ("dec", low 32 bits),
#: facility,card printed on a fob ("fc", low 24 bits).
UID_FORMS = ("", "dec", "fc")


class UidError(ValueError):
    pass


def normalise_uid(text: str) -> str:
    """The canonical uid of what an operator typed or a fob shows (see `parse_uid`)."""
    return parse_uid(text)[0]


def parse_uid(text: str) -> tuple[str, str]:
    """Turn what an operator typed or a fob shows into (canonical uid, form), or raise UidError.

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
        return f"{int(digits):08X}", "dec"
    facility_card = _FACILITY_CARD.match(raw)
    if facility_card:
        facility, card = int(facility_card.group(1)), int(facility_card.group(2))
        if facility > 255 or card > 65535:
            raise UidError(f"{shown!r}: facility code must be 0-255 and card number 0-65535")
        return f"{facility << 16 | card:06X}", "fc"
    compact = _SEPARATORS.sub("", raw)
    upper = compact.upper().removeprefix("0X")
    if not upper or not _HEX.match(upper):
        raise UidError(f"{shown!r} is not a card number (hex, dec:NNNNNNNNNN as printed on a fob, or FFF,CCCCC)")
    if len(upper) % 2:
        upper = "0" + upper
    if len(upper) > 32:
        raise UidError(f"card number is longer than 16 bytes ({len(upper) // 2})")
    return upper, ""


def mask_uid(uid: str) -> str:
    """How a uid is shown anywhere in the CLI: the last 4 characters of a uid of 10 or more, the last 2
    of a shorter one (the last 4 of a 6-character Wiegand-26 number are its whole card number)."""
    return "…" + (uid[-4:] if len(uid) >= 10 else uid[-2:])


def printed_form_keys(uid: str) -> tuple[str, ...]:
    """The index keys under which an EM4100 tap `uid` finds a credential enrolled from a printed form."""
    if len(uid) != EM4100_HEX or not _HEX.match(uid):
        return ()
    value = int(uid, 16)
    return (f"dec:{value & 0xFFFFFFFF:08X}", f"fc:{value & 0xFFFFFF:06X}")


def form_key(uid: str, form: str) -> str | None:
    """The index key of a credential enrolled from a printed form; None for a plain uid."""
    return f"{form}:{uid}" if form and uid else None


def own_keys(uid: str, form: str) -> tuple[str, ...]:
    """The keys a credential is found under: its uid, and its form key when enrolled from a printed form."""
    if not uid:
        return ()
    key = form_key(uid, form)
    return (uid,) if key is None else (uid, key)


def answer_keys(uid: str, form: str) -> tuple[str, ...]:
    """The printed-form keys a card also answers to at an EM4100 reader: a credential found under one
    of them is the same card written in another form (`3C00CE754C` = `dec:0013530444` = `206,30028`)."""
    if form == "dec":
        return (f"fc:{uid[-6:]}",)
    if form == "fc":
        return ()
    return printed_form_keys(uid)


V = TypeVar("V")


class CredentialIndex(Mapping[str, V]):
    """uid → value, where a value enrolled from a printed form is also found under its form key
    (`dec:00CE754C`, `fc:CE754C`) — the keys `printed_form_keys` gives for an EM4100 tap. Iteration and
    length cover the uids only. One dict lookup per tap; three for an unknown EM4100 card."""

    def __init__(self, items: Iterable[tuple[str, V]] = ()) -> None:
        self._exact: dict[str, V] = {}
        self._printed: dict[str, V] = {}
        for uid, value in items:
            self.put(uid, value, str(getattr(value, "uid_form", "")))

    def put(self, uid: str, value: V, form: str = "") -> None:
        self._exact[uid] = value
        key = form_key(uid, form)
        if key is not None:
            self._printed[key] = value
        else:
            self._drop_printed(uid)

    def discard(self, uid: str) -> None:
        self._exact.pop(uid, None)
        self._drop_printed(uid)

    def _drop_printed(self, uid: str) -> None:
        if uid and len(uid) <= 8:
            for form in UID_FORMS[1:]:
                self._printed.pop(f"{form}:{uid}", None)

    def __getitem__(self, key: str) -> V:
        found = self._exact.get(key)
        if found is None:
            found = self._printed.get(key)
            if found is None:
                raise KeyError(key)
        return found

    def __iter__(self) -> Iterator[str]:
        return iter(self._exact)

    def __len__(self) -> int:
        return len(self._exact)
