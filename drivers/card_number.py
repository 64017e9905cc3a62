"""Card-number arithmetic the drivers need, in the canonical form of SPEC §4 (upper-case hex, no
separators). Imports nothing of the gateway; gateway.uid builds enrolment and matching on it."""

from __future__ import annotations


def decimal_to_uid(number: int, bit_width: int = 24) -> str:
    """A decimal converter's card number as canonical hex, zero-padded to the reader's bit width."""
    digits = (bit_width + 3) // 4
    return f"{number:0{digits}X}"
