"""Card numbers: one canonical form, the fob forms, and the documented match rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.uid import CredentialIndex, UidError, decimal_to_uid, mask_uid, normalise_uid

canonical_uids = st.binary(min_size=1, max_size=16).map(lambda b: b.hex().upper())


@pytest.mark.parametrize(
    ("typed", "canonical"),
    [
        ("3C00CE754C", "3C00CE754C"),
        ("3c:00:ce:75:4c", "3C00CE754C"),
        ("0x3c00ce754c", "3C00CE754C"),
        ("1234567890", "1234567890"),  # ten digits are an EM4100 uid in hex, as readers report it
        ("dec:0013530444", "00CE754C"),  # the number printed on the fob of 3C00CE754C
        ("206,30028", "CE754C"),  # FFF,CCCCC
        ("90,324", "5A0144"),  # Wiegand-26 FC 90 / CN 324 (PROTOCOLS.md §2)
        ("ABC", "0ABC"),
    ],
)
def test_forms_an_operator_may_type(typed: str, canonical: str) -> None:
    assert normalise_uid(typed) == canonical


@pytest.mark.parametrize("typed", ["", "hello", "dec:12x", "dec:99999999999", "300,1", "1,70000", "AB" * 17])
def test_bad_numbers_are_refused_without_showing_them_whole(typed: str) -> None:
    with pytest.raises(UidError) as caught:
        normalise_uid(typed)
    if len(typed) > 4:
        assert typed not in str(caught.value)


@given(canonical_uids)
def test_canonical_uids_are_left_as_they_are(uid: str) -> None:
    assert normalise_uid(uid) == uid
    assert normalise_uid(uid.lower()) == uid


@given(st.text(max_size=40))
def test_normalise_never_raises_anything_but_uid_error(text: str) -> None:
    try:
        result = normalise_uid(text)
    except UidError:
        return
    assert result == result.upper() and len(result) % 2 == 0


def test_decimal_converter_numbers_are_padded_to_the_bit_width() -> None:
    assert decimal_to_uid(0x1E256, 24) == "01E256"
    assert decimal_to_uid(0x1E256, 32) == "0001E256"


def test_mask_keeps_only_the_last_four_characters() -> None:
    assert mask_uid("3C00CE754C") == "…754C"


def test_index_matches_fob_forms_by_number_and_exact_uids_first() -> None:
    index: CredentialIndex[str] = CredentialIndex()
    index.put(normalise_uid("dec:0013530444"), "by-fob-number")
    index.put(normalise_uid("206,30028"), "by-facility-card")
    assert index.get("3C00CE754C") == "by-fob-number"  # low 32 bits match first
    index.put("3C00CE754C", "exact")
    assert index.get("3C00CE754C") == "exact"
    assert index.get("FF00CE754C") == "by-fob-number"
    assert index.get("11FFCE754C") == "by-facility-card"  # only the low 24 bits match
    assert index.get("DEADBEEF01") is None
    index.discard("3C00CE754C")
    assert index.get("3C00CE754C") == "by-fob-number"
