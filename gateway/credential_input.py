"""Checking what an operator or a central system sends for one credential (SPEC §4, §7 upsert).

`parse_credential_fields(raw, zone)` takes the upsert fields as they arrive — strings from the CLI
and CSV files, JSON values from MQTT, or already-typed values — and returns them typed and
canonical, or raises `FieldError` naming the first bad field. The store, the CLI and the MQTT request
handlers all go through it, so a credential is held to the same rules whichever way it came in.

Times: an ISO date or date-time. Without an offset it is read in the gateway's time zone; a date
alone means midnight at the start of that day, except that a date-only `valid_until` covers that
whole day (it means midnight at the start of the next day, `valid_until` being exclusive).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from typing import Any, TypedDict, TypeVar

from gateway.model import ID_MAX_LEN, Kind, Role, Status, check_text_id
from gateway.schedule import parse_schedule
from gateway.uid import UID_FORMS, UidError, mask_uid, parse_uid

#: The fields an upsert (MQTT request, `credentials add`, a CSV column) may carry.
UPSERT_FIELDS = (
    "id",
    "uid",
    "holder",
    "role",
    "scope",
    "kind",
    "status",
    "valid_from",
    "valid_until",
    "schedule",
    "key_code",
    "deposit",
    "approved_by",
    "single_use",
)
REQUIRED_FIELDS = ("id", "holder", "role")
#: Roles whose scope names sections or departments and that open nothing without one.
SCOPED_MASTER_ROLES = (Role.SECTION_MASTER, Role.DEPARTMENT_MASTER)
SCOPE_SEPARATOR = ";"

E = TypeVar("E", Role, Kind, Status)

#: Fields a parsed item carries when it is checked again (the store re-checks what the handlers parsed):
#: the form a uid was written in, which its canonical text no longer shows.
_CARRIED_FIELDS = frozenset({"uid_form"})
_FIELD_SET = frozenset(UPSERT_FIELDS) | _CARRIED_FIELDS
_ROLES = {member.value: member for member in Role}
_KINDS = {member.value: member for member in Kind}
_STATUSES = {member.value: member for member in Status}

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CANONICAL_UID = re.compile(r"^(?:[0-9A-F]{2}){1,16}$")
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class CredentialFields(TypedDict):
    """The checked upsert fields: the `Credential` fields the gateway does not set itself."""

    id: str
    uid: str
    holder: str
    role: Role
    scope: tuple[str, ...]
    kind: Kind
    status: Status
    valid_from: datetime | None
    valid_until: datetime | None
    schedule: str | None
    key_code: str | None
    deposit: str | None
    approved_by: str | None
    single_use: bool
    uid_form: str


class FieldError(ValueError):
    """One bad field: `field` names it, `problem` says what is wrong in words an operator understands."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def parse_credential_fields(raw: Mapping[str, Any], zone: tzinfo) -> CredentialFields:
    """Check one credential's upsert fields; raise FieldError for the first bad or unknown field.

    Absent fields, None and empty strings all mean "not given": `kind` then defaults to card,
    `status` to active, and the optional fields to None. `scope` is a list of names or one string
    with names separated by ';'. A physical key carries a `key_code` and no `uid`; every other kind
    carries a `uid` (any form `gateway.uid.normalise_uid` accepts) and no key code.
    """
    fields = _row_fields(raw, zone)
    return _checked_fields(raw, zone) if fields is None else fields


#: The fields that neither name the credential or its card nor say which lockers it opens. An import's
#: rows repeat them (a school's file shares one role, term dates and a schedule), so each distinct
#: combination is checked once (`_shared_fields`); scopes are many more and have their own cache.
_PER_ITEM_FIELDS = ("id", "uid", "holder", "scope")
_SHARED_FIELDS = tuple(name for name in UPSERT_FIELDS if name not in _PER_ITEM_FIELDS)
#: What `_shared_fields` puts in place of the fields it does not check (a scope that satisfies any role).
_STAND_IN = {"id": "x", "holder": "x", "scope": "x"}
_STAND_IN_UID = "00"
_TEXT_ROW_FIELDS = frozenset(UPSERT_FIELDS)


def _row_fields(raw: Mapping[str, Any], zone: tzinfo) -> CredentialFields | None:
    """The fields of an item whose id, holder, uid and scope are plain valid text, the other fields
    checked once per distinct combination; None for anything else (then `_checked_fields` gives the
    same answer the slow way, or the FieldError for the first bad field).

    This is `_checked_fields` for every item it answers: each field is checked by the same rules, and
    no outcome but the scoped masters' "needs a scope" depends on more than one of id, holder, uid,
    scope and the shared fields (that one is checked here again).
    """
    if not raw.keys() <= _TEXT_ROW_FIELDS:
        return None  # an unknown field, or a carried uid_form: the slow way
    get = raw.get
    try:
        shared = _shared_fields(tuple(map(get, _SHARED_FIELDS)), zone)
    except TypeError:  # an unhashable value
        return None
    if shared is None:
        return None
    credential_id, holder, uid, scope_text = _plain_id(get("id")), _plain_id(get("holder")), get("uid"), get("scope")
    if credential_id is None or holder is None:
        return None
    if scope_text is None:
        scope: tuple[str, ...] = ()
    elif scope_text.__class__ is not str:
        return None
    else:
        try:
            scope = _scope_text(scope_text.strip())
        except FieldError:
            return None
    if not scope and shared["role"] in SCOPED_MASTER_ROLES:
        return None
    if shared["kind"] is Kind.PHYSICAL_KEY:
        if not _absent(uid):
            return None
        uid, uid_form = "", ""
    elif uid.__class__ is not str:
        return None
    else:
        uid = uid.strip()
        if _CANONICAL_UID.match(uid):
            uid_form = ""
        elif not uid:
            return None
        else:
            try:
                uid, uid_form = parse_uid(uid)
            except UidError:
                return None
    fields: CredentialFields = {
        **shared,
        "id": credential_id,
        "holder": holder,
        "scope": scope,
        "uid": uid,
        "uid_form": uid_form,
    }
    return fields


def _plain_id(value: Any) -> str | None:
    """An id or holder given as valid text, stripped; None when it is not (the slow way says why)."""
    if value.__class__ is not str:
        return None
    try:
        return check_text_id(value.strip(), "id")
    except ValueError:
        return None


@lru_cache(maxsize=1024)
def _shared_fields(values: tuple[Any, ...], zone: tzinfo) -> CredentialFields | None:
    """The checked `_SHARED_FIELDS` (given in that order, None for absent) beside stand-ins for the
    others, or None when they are not all text or do not pass (the slow way then says why).

    Only combinations of text are answered: a cache hit then needs equal text, which checks the same
    (True and 1 are equal keys but not the same field)."""
    if not all(value is None or value.__class__ is str for value in values):
        return None
    item = {name: value for name, value in zip(_SHARED_FIELDS, values, strict=True) if value is not None}
    for stand_in in ({**item, **_STAND_IN, "uid": _STAND_IN_UID}, {**item, **_STAND_IN}):
        try:
            return _checked_fields(stand_in, zone)  # a card with a uid, else a physical key without
        except FieldError:
            continue
    return None


def _checked_fields(raw: Mapping[str, Any], zone: tzinfo) -> CredentialFields:
    """`parse_credential_fields` field by field, any value types."""
    given: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in _FIELD_SET:
            raise FieldError(str(name), f"unknown field (fields: {', '.join(UPSERT_FIELDS)})")
        if value.__class__ is str:
            value = value.strip()
            if value:
                given[name] = value
        elif value is not None:
            given[name] = value
    for name in REQUIRED_FIELDS:
        if name not in given:
            raise FieldError(name, "missing (required)")

    credential_id = _text_id(given["id"], "id")
    holder = _text_id(given["holder"], "holder")
    role = _choice(_ROLES, given["role"], "role")
    kind = _choice(_KINDS, given["kind"], "kind") if "kind" in given else Kind.CARD
    status = _choice(_STATUSES, given["status"], "status") if "status" in given else Status.ACTIVE
    scope = _scope(given.get("scope", ()))
    if role in SCOPED_MASTER_ROLES and not scope:
        what = "sections" if role is Role.SECTION_MASTER else "departments"
        raise FieldError("scope", f"a {role.value} needs at least one name in its scope (the {what} it opens)")

    key_code = _optional_text(given.get("key_code"), "key_code")
    if kind is Kind.PHYSICAL_KEY:
        if "uid" in given:
            raise FieldError("uid", "a physical_key has no uid (it is never read by a reader); give its key_code")
        if key_code is None:
            raise FieldError("key_code", "missing (a physical_key needs the code it is cut to)")
        uid, uid_form = "", ""
    else:
        if "uid" not in given:
            raise FieldError("uid", f"missing (required for a {kind.value})")
        if key_code is not None:
            raise FieldError("key_code", f"only a physical_key has a key code, not a {kind.value}")
        uid, uid_form = _uid(given["uid"])
        carried = given.get("uid_form")
        if carried in UID_FORMS and uid_form == "" and _CANONICAL_UID.match(str(given["uid"])):
            uid_form = str(carried)

    valid_from = _instant(given.get("valid_from"), zone, "valid_from", end_of_day=False)
    valid_until = _instant(given.get("valid_until"), zone, "valid_until", end_of_day=True)
    if valid_from is not None and valid_until is not None and valid_until <= valid_from:
        raise FieldError("valid_until", "must be after valid_from (valid_until is exclusive)")

    single_use = _flag(given.get("single_use", False), "single_use")
    if single_use and kind is not Kind.MOBILE:
        raise FieldError("single_use", f"only a mobile credential (a visitor code) is single-use, not a {kind.value}")

    return CredentialFields(
        id=credential_id,
        uid=uid,
        holder=holder,
        role=role,
        scope=scope,
        kind=kind,
        status=status,
        valid_from=valid_from,
        valid_until=valid_until,
        schedule=_schedule(given.get("schedule")),
        key_code=key_code,
        deposit=_optional_text(given.get("deposit"), "deposit", numbers=True),
        approved_by=_optional_text(given.get("approved_by"), "approved_by"),
        single_use=single_use,
        uid_form=uid_form,
    )


_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})


def _flag(value: Any, field: str) -> bool:
    """A yes/no field: a JSON boolean, or (CLI, CSV) true/false, yes/no, 1/0 in any case."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise FieldError(field, f"must be true or false, not {value!r}")


def _absent(value: Any) -> bool:
    return value is None or (value.__class__ is str and not value.strip())


def _text(value: Any, field: str) -> str:
    if value.__class__ is str:
        return value.strip()
    if not isinstance(value, str):
        raise FieldError(field, f"must be text, not {_json_type(value)}")
    return value.strip()


def _text_id(value: Any, field: str) -> str:
    text = _text(value, field)
    try:
        return check_text_id(text, field)
    except ValueError as exc:
        raise FieldError(field, str(exc).removeprefix(f"{field} ")) from None


def _optional_text(value: Any, field: str, *, numbers: bool = False) -> str | None:
    if _absent(value):
        return None
    if numbers and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    text = _text(value, field)
    if len(text) > ID_MAX_LEN:
        raise FieldError(field, f"is longer than {ID_MAX_LEN} characters")
    if _CONTROL.search(text):
        raise FieldError(field, "contains a control character")
    return text


def _choice(members: Mapping[str, E], value: Any, field: str) -> E:
    """An enum member from its value, any case (a dict lookup: this runs for every row of an import)."""
    if isinstance(value, str):
        found = members.get(value)
        if found is None:
            found = members.get(value.strip().lower())
        if found is not None:
            return found
        names = ", ".join(members)
        raise FieldError(field, f"{value.strip()!r} is not one of: {names}")
    raise FieldError(field, f"must be text, not {_json_type(value)}")


def _scope(value: Any) -> tuple[str, ...]:
    if value.__class__ is str:
        return _scope_text(value)
    return _scope_items(value)


@lru_cache(maxsize=16_384)
def _scope_text(value: str) -> tuple[str, ...]:
    """Cached: an import's rows share its lockers' scopes (a few MB for the largest sites)."""
    return _scope_items(value)


def _scope_items(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        items: Sequence[Any] = value.split(SCOPE_SEPARATOR)
    elif isinstance(value, list | tuple):
        items = value
    else:
        raise FieldError("scope", f"must be a list of names or text separated by ';', not {_json_type(value)}")
    names: dict[str, None] = {}
    for item in items:
        if isinstance(item, str) and not item.strip() and isinstance(value, str):
            continue  # "A-01;;A-02" or a trailing ';'
        name = _text_id(item, "scope")
        names.setdefault(name, None)
    return tuple(names)


def _uid(value: Any) -> tuple[str, str]:
    text = _text(value, "uid")
    if _CANONICAL_UID.match(text):
        return text, ""  # already canonical: the usual case in an import
    try:
        return parse_uid(text)
    except UidError as exc:
        # normalise_uid quotes what it was given; the CLI must never show a whole card number.
        message = str(exc).replace(repr(text), repr(mask_uid(text)))
        raise FieldError("uid", message) from None


def _schedule(value: Any) -> str | None:
    if _absent(value):
        return None
    return _schedule_text(_text(value, "schedule"))


@lru_cache(maxsize=4096)
def _schedule_text(value: str) -> str:
    text = " ".join(value.split())
    try:
        parse_schedule(text)
    except ValueError as exc:
        raise FieldError("schedule", str(exc)) from None
    return text


def _instant(value: Any, zone: tzinfo, field: str, *, end_of_day: bool) -> datetime | None:
    if _absent(value):
        return None
    if value.__class__ is str:
        return _instant_text(value, zone, field, end_of_day)
    return _instant_value(value, zone, field, end_of_day)


@lru_cache(maxsize=4096)
def _instant_text(value: str, zone: tzinfo, field: str, end_of_day: bool) -> datetime:
    """Cached: an import's rows share a few dates."""
    return _instant_value(value, zone, field, end_of_day)


def _instant_value(value: Any, zone: tzinfo, field: str, end_of_day: bool) -> datetime:
    if not isinstance(value, datetime | date | str):
        raise FieldError(field, f"must be an ISO date or date-time, not {_json_type(value)}")
    text = value.strip() if isinstance(value, str) else value.isoformat()
    try:
        if isinstance(value, datetime):
            moment = value
        elif isinstance(value, date) or _DATE_ONLY.match(text):
            day = value if isinstance(value, date) else date.fromisoformat(text)
            moment = datetime.combine(day + timedelta(days=1) if end_of_day else day, time(0, 0))
        else:
            moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=zone)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise FieldError(
            field, f"{text!r} is not an ISO date or date-time (e.g. 2026-09-01 or 2026-09-01T08:00)"
        ) from None


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__
