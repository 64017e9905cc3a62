"""OSDP reader data without a connection (PROTOCOLS.md §2, §5): the secure-channel key file, osdp_RAW
card data → canonical uids, keypad entries, and the LED/buzzer commands for each signal.

Pure functions and small values: drivers/osdp.py runs the connection and uses these; tests check
them directly. Card data: the first bit is the most significant bit of the first byte and the bits
are left-aligned (`length` counts bits, the unused low bits of the last byte are zero).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import osdp

from drivers.base import Feedback, Signal

SCBK_LENGTH = 16
#: An entry longer than this is cut off (a stuck key must not grow a buffer forever).
KEYPAD_MAX_DIGITS = 32


class ScbkError(ValueError):
    """The secure-channel key file cannot be used; the message is one plain line."""


def read_scbk(path: str) -> bytes | None:
    """The 16-byte secure-channel base key from a file of 32 hex characters; None when `path` is empty."""
    if not path:
        return None
    try:
        text = Path(path).read_text(encoding="ascii").strip()
    except OSError as exc:
        raise ScbkError(f"cannot read scbk_file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ScbkError(f"scbk_file {path}: expected {SCBK_LENGTH * 2} hex characters") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != SCBK_LENGTH:
        raise ScbkError(f"scbk_file {path}: expected {SCBK_LENGTH * 2} hex characters")
    return key


# ---- card data and keypad: pure -----------------------------------------------------------------


def _bits(data: bytes, length: int) -> int | None:
    """The first `length` bits of `data` (MSB first, left-aligned) as a number; None if too short."""
    size = (length + 7) // 8
    if length <= 0 or len(data) < size:
        return None
    return int.from_bytes(data[:size], "big") >> (size * 8 - length)


def _ones(value: int) -> int:
    return bin(value).count("1")


def wiegand_data(value: int, length: int) -> int | None:
    """The data bits of a Wiegand-26 or -34 frame (parity stripped), or None if a parity bit is wrong.

    The leading bit is even parity over the first half of the data bits, the trailing bit odd parity
    over the second half (H10301, H10306)."""
    half = (length - 2) // 2
    data = (value >> 1) & ((1 << (length - 2)) - 1)
    leading = value >> (length - 1)
    trailing = value & 1
    first, second = data >> half, data & ((1 << half) - 1)
    if (_ones(first) + leading) % 2 != 0 or (_ones(second) + trailing) % 2 != 1:
        return None
    return data


def wiegand_frame(data: int, length: int) -> int:
    """A Wiegand-26/34 frame for `length - 2` data bits, with both parity bits (for the driver tests)."""
    half = (length - 2) // 2
    first, second = data >> half, data & ((1 << half) - 1)
    leading = _ones(first) % 2
    trailing = 1 - _ones(second) % 2
    return leading << (length - 1) | data << 1 | trailing


def pack_bits(value: int, length: int) -> bytes:
    """`length` bits as OSDP carries them: MSB first, left-aligned in whole bytes."""
    size = (length + 7) // 8
    return (value << (size * 8 - length)).to_bytes(size, "big")


def _hex(value: int, bits: int) -> str:
    return f"{value:0{(bits + 7) // 8 * 2}X}"


def card_uid(fmt: int, data: bytes, length: int) -> str | None:
    """The canonical uid of one card read, or None when the read is malformed (a bad frame).

    Raw Wiegand: 26 bits → the 24 data bits (6 hex, FC 90 / CN 324 → 5A0144), 34 bits → 32 data bits
    (8 hex), both parity-checked; any other length → the bits as hex, zero-padded to whole bytes.
    Raw unspecified: the bits as hex. ASCII (deprecated): the characters, if they are hex digits.
    """
    if fmt == osdp.CardFormat.ASCII:
        try:
            text = data.decode("ascii").strip().upper()
        except UnicodeDecodeError:
            return None
        if not text or len(text) > 32 or any(ch not in "0123456789ABCDEF" for ch in text):
            return None
        return text.rjust(len(text) + len(text) % 2, "0")
    value = _bits(data, length)
    if value is None or length > 128:
        return None
    if fmt == osdp.CardFormat.Wiegand and length in (26, 34):
        card = wiegand_data(value, length)
        return None if card is None else _hex(card, length - 2)
    return _hex(value, length)


class KeypadEntry:
    """Keys into entries. OSDP sends digits as ASCII, '#' (enter) as 0x0D and '*' (clear) as 0x7F;
    the literal characters '#' and '*' are accepted too. Other keys (function keys) are ignored."""

    def __init__(self, max_digits: int = KEYPAD_MAX_DIGITS) -> None:
        self.max_digits = max_digits
        self.digits = ""

    def feed(self, keys: bytes) -> list[str]:
        """Add keys; return the entries that '#' completed (an empty entry is no entry)."""
        done: list[str] = []
        for key in keys:
            if key in (0x0D, ord("#")):
                if self.digits:
                    done.append(self.digits)
                self.digits = ""
            elif key in (0x7F, ord("*")):
                self.digits = ""
            elif ord("0") <= key <= ord("9") and len(self.digits) < self.max_digits:
                self.digits += chr(key)
        return done

    def flush(self) -> str | None:
        """The digits typed so far (after a pause without '#'), or None."""
        digits, self.digits = self.digits, ""
        return digits or None


# ---- feedback: LED and buzzer commands (osdp_LED 0x69, osdp_BUZ 0x6A): pure -----------------------

#: OSDP times are in units of 100 ms. The temporary LED timer is 16 bits in OSDP, but libosdp's Python
#: binding (3.2.9) carries only its low byte, so a pattern is set for at most 25.5 s at a time and a
#: longer one (a lockout) is renewed by the session before it runs out.
_TICK_S = 0.1
_MAX_TIMER = 0xFF
LED_RENEW_S = 25.0
_GREEN, _RED, _AMBER, _OFF = (
    osdp.CommandLEDColor.Green,
    osdp.CommandLEDColor.Red,
    osdp.CommandLEDColor.Amber,
    osdp.CommandLEDColor.Black,
)
#: signal → (on colour, off colour, on ticks, off ticks, default hold s) and (beep ticks, gap ticks, beeps).
_LED_PATTERNS = {
    Signal.GRANTED: (_GREEN, _GREEN, 20, 0, 2.0),
    Signal.DENIED: (_RED, _RED, 20, 0, 2.0),
    Signal.PENDING: (_AMBER, _OFF, 5, 5, 30.0),
    Signal.LOCKED_OUT: (_RED, _OFF, 2, 2, 120.0),
}
_BUZZER_PATTERNS = {
    Signal.GRANTED: (2, 0, 1),
    Signal.DENIED: (4, 2, 2),
    Signal.PENDING: (1, 0, 1),
    Signal.LOCKED_OUT: (2, 2, 3),
}


def feedback_hold_s(feedback: Feedback) -> float:
    """How long a signal's LED pattern lasts: its `hold_s`, or the signal's default."""
    return feedback.hold_s if feedback.hold_s > 0 else _LED_PATTERNS[feedback.signal][4]


def feedback_commands(feedback: Feedback, hold_s: float | None = None, beep: bool = True) -> list[dict[str, Any]]:
    """The libosdp commands for one signal: a temporary LED pattern on LED 0 for `hold_s` (default: the
    signal's hold; at most 25.5 s, after which the reader shows its permanent, idle state again) and,
    with `beep`, a buzzer pattern."""
    on_color, off_color, on_ticks, off_ticks, _ = _LED_PATTERNS[feedback.signal]
    hold = feedback_hold_s(feedback) if hold_s is None else hold_s
    led = {
        "command": osdp.Command.LED,
        "reader": 0,
        "led_number": 0,
        "control_code": 2,  # set the temporary state and start its timer now
        "on_count": on_ticks,
        "off_count": off_ticks,
        "on_color": on_color,
        "off_color": off_color,
        "timer_count": max(1, min(_MAX_TIMER, round(hold / _TICK_S))),
        "temporary": True,
    }
    if not beep:
        return [led]
    on, gap, beeps = _BUZZER_PATTERNS[feedback.signal]
    buzzer = {
        "command": osdp.Command.Buzzer,
        "reader": 0,
        "control_code": 2,  # default tone
        "on_count": on,
        "off_count": gap,
        "rep_count": beeps,
    }
    return [led, buzzer]
