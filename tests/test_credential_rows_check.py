"""An import's rows are checked the quick way (the fields its rows share checked once per distinct
combination): every row gets exactly the fields, or exactly the problem, that checking it field by
field gives (gateway.credential_input)."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.credential_input import (
    UPSERT_FIELDS,
    CredentialFields,
    FieldError,
    _checked_fields,
    parse_credential_fields,
)

LONDON = ZoneInfo("Europe/London")

#: Cells an operator's file may hold for each column: good ones first, then bad ones, blanks and padding.
GOOD: dict[str, list[str]] = {
    "id": ["S-1", " S-2 ", "x" * 128, "é-1"],
    "uid": ["3C00000001", "3c00000001", "04:A2:2B:1C", "dec:0013530444", "206,30028", "AB"],
    "holder": ["pupil-1", "  amira "],
    "role": ["user", "USER", " site_master ", "section_master", "department_master"],
    "scope": ["L-1", "L-1;L-2", " L-1 ; ;L-2;"],
    "kind": ["card", "Physical_Key", "physical_key", "mobile", "fob"],
    "status": ["active", "LOST"],
    "valid_from": ["2026-09-01", "2026-09-01T08:00", "2026-09-01T08:00+02:00", "2027-07-23"],
    "valid_until": ["2027-07-23", "2026-09-01", "2026-08-31"],
    "schedule": ["Mon-Fri 07:30-18:00", "Mon-Fri  07:30-18:00"],
    "key_code": ["K-12"],
    "deposit": ["10", "£10"],
    "approved_by": ["head"],
    "single_use": ["true", "no"],
}
BAD: dict[str, list[str]] = {
    "id": ["", "  ", "a\x07b", "x" * 129],
    "uid": ["zz", "", " ", "0" * 34],
    "holder": ["", "tab\there", "x" * 129],
    "role": ["janitor", ""],
    "scope": [";;", "", "bad\x01", "x" * 129],
    "kind": ["spoon", ""],
    "status": ["gone", ""],
    "valid_from": ["soon", ""],
    "valid_until": ["later", ""],
    "schedule": ["Funday 25:00", ""],
    "key_code": ["", "k\x00"],
    "deposit": ["", "x" * 200],
    "approved_by": ["", "h\x1b[2J"],
    "single_use": ["maybe", ""],
}


def cell(name: str) -> st.SearchStrategy[str]:
    """Mostly good cells, so that rows with one bad cell (or none) come often."""
    return st.one_of(st.sampled_from(GOOD[name]), st.sampled_from(GOOD[name]), st.sampled_from(BAD[name]))


NAMING = ("id", "holder", "role")
rows = st.one_of(
    st.fixed_dictionaries(
        {name: cell(name) for name in NAMING},
        optional={name: cell(name) for name in UPSERT_FIELDS if name not in NAMING},
    ),
    st.fixed_dictionaries({}, optional={name: cell(name) for name in UPSERT_FIELDS}),
)


def outcome(check: Any, row: dict[str, Any]) -> CredentialFields | tuple[str, str]:
    try:
        fields: CredentialFields = check(row, LONDON)
    except FieldError as problem:
        return (problem.field, problem.problem)
    return fields


@settings(max_examples=2_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(row=rows)
def test_a_row_checked_the_quick_way_gets_what_checking_each_field_gives(row: dict[str, Any]) -> None:
    assert outcome(parse_credential_fields, row) == outcome(_checked_fields, row)


@settings(max_examples=300, deadline=None)
@given(row=rows, values=st.lists(st.sampled_from([None, True, False, 1, 0, 1.5, ["L-1"], ("L-1",)]), min_size=1))
def test_values_that_are_not_text_are_checked_as_they_stand(row: dict[str, Any], values: list[Any]) -> None:
    """JSON values (MQTT) are never taken for the text they equal (True == 1, but "1" is a flag)."""
    names = sorted(row) or ["single_use"]
    for name, value in zip(names, values, strict=False):
        row[name] = value
    assert outcome(parse_credential_fields, row) == outcome(_checked_fields, row)


def test_a_flag_given_as_a_number_is_refused_after_the_same_text_was_accepted() -> None:
    row = {"id": "V-1", "uid": "AB12", "holder": "guest", "role": "user", "kind": "mobile", "single_use": "1"}
    assert parse_credential_fields(row, LONDON)["single_use"] is True
    with pytest.raises(FieldError, match="single_use"):
        parse_credential_fields({**row, "single_use": 1}, LONDON)
    assert parse_credential_fields({**row, "single_use": True}, LONDON)["single_use"] is True
