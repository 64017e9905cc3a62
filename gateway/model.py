"""The product's nouns: credentials, lockers, taps and decisions (SPEC §4–§5).

Plain frozen values with no I/O. Everything else in the gateway passes these around.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class Role(StrEnum):
    USER = "user"
    SECTION_MASTER = "section_master"
    DEPARTMENT_MASTER = "department_master"
    SITE_MASTER = "site_master"
    EMERGENCY = "emergency"


class Status(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    LOST = "lost"
    REVOKED = "revoked"
    RETURNED = "returned"
    REPLACED = "replaced"


#: Statuses under which a key is still out in the world (not handed back or retired).
OUTSTANDING_STATUSES = frozenset({Status.ACTIVE, Status.SUSPENDED, Status.LOST})


class Kind(StrEnum):
    CARD = "card"
    FOB = "fob"
    MOBILE = "mobile"
    PHYSICAL_KEY = "physical_key"


class LockerMode(StrEnum):
    ASSIGNED = "assigned"
    SHARED = "shared"


class Service(StrEnum):
    IN_SERVICE = "in_service"
    OUT_OF_SERVICE = "out_of_service"


ID_MAX_LEN = 128
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def has_control_character(value: str) -> bool:
    """Free text from outside (operators, reasons, holders) must not carry terminal escapes or newlines."""
    return _CONTROL.search(value) is not None


def check_text_id(value: str, what: str) -> str:
    """Validate an `id` or `holder`: non-empty, at most 128 characters, no control characters."""
    if not value:
        raise ValueError(f"{what} must not be empty")
    if len(value) > ID_MAX_LEN:
        raise ValueError(f"{what} is longer than {ID_MAX_LEN} characters")
    if _CONTROL.search(value):
        raise ValueError(f"{what} contains a control character")
    return value


@dataclass(frozen=True, slots=True)
class Credential:
    """A card, fob, mobile credential or physical key issued to a holder.

    `uid` is canonical (upper-case hex, see gateway.uid); it is empty for a physical key.
    `valid_from`/`valid_until` are timezone-aware UTC instants (`valid_until` exclusive).
    `schedule` is the weekly-window text (e.g. "Mon-Fri 07:30-18:00"), read in the gateway's timezone.
    `single_use` (mobile credentials: visitor and contractor codes) is revoked by the tap that uses it.
    """

    id: str
    uid: str
    holder: str
    role: Role
    scope: tuple[str, ...] = ()
    status: Status = Status.ACTIVE
    kind: Kind = Kind.CARD
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    schedule: str | None = None
    key_code: str | None = None
    deposit: str | None = None
    approved_by: str | None = None
    issue_no: int = 1
    issued_at: datetime | None = None
    issued_by: str | None = None
    single_use: bool = False
    #: "" for a uid as read or typed in hex; "dec" / "fc" when enrolled from what is printed on a fob
    #: (the 10-digit number / facility,card): only such a credential matches an EM4100 tap by its low bits.
    uid_form: str = ""


@dataclass(frozen=True, slots=True)
class Locker:
    """A locker door. `board` is None for a keyed (mechanical) locker the gateway cannot open."""

    id: str
    board: str | None
    lock: int | None
    section: str = ""
    department: str = ""
    mode: LockerMode = LockerMode.ASSIGNED
    service: Service = Service.IN_SERVICE
    #: For shared lockers: the credential id that holds it now.
    occupant: str | None = None

    @property
    def keyed(self) -> bool:
        return self.board is None


@dataclass(frozen=True, slots=True)
class Tap:
    """One presentation of a credential at a reader (repeated frames already folded into one)."""

    reader: str
    uid: str
    at: datetime
    #: The reader family when the match rule needs it: "em4100" for a 10-hex uid from a 125 kHz reader
    #: (the only taps a credential enrolled from a printed fob form may match by its low bits).
    family: str = ""


@dataclass(frozen=True, slots=True)
class KeypadEntry:
    """Digits typed on a reader's keypad (OSDP) — used as the target locker for master openings."""

    reader: str
    digits: str
    at: datetime


@dataclass(frozen=True, slots=True)
class PolicyEvent:
    """A side event the policy asks to be journaled alongside the decision (e.g. reader.lockout)."""

    kind: str
    locker: str | None = None
    reason: str | None = None
    data: tuple[tuple[str, str | int], ...] = field(default=())
