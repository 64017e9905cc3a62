"""Card numbers: one canonical form, the fob forms, and the documented match rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.uid import (
    CredentialIndex,
    UidError,
    answer_keys,
    decimal_to_uid,
    mask_uid,
    normalise_uid,
    own_keys,
    parse_uid,
    printed_form_keys,
)

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


def test_mask_of_a_short_uid_keeps_only_the_last_two_characters() -> None:
    assert mask_uid("5A0144") == "…44"  # the last 4 of a Wiegand-26 number are its whole card number
    assert mask_uid("04A1B2C3") == "…C3"


def em4100(index: CredentialIndex[str], uid: str) -> str | None:
    """What an EM4100 (RDM6300) tap of `uid` finds, as the policy looks it up."""
    credential = index.get(uid)
    for key in printed_form_keys(uid):
        credential = credential or index.get(key)
    return credential


def test_index_matches_fob_forms_by_number_and_exact_uids_first() -> None:
    index: CredentialIndex[str] = CredentialIndex()
    index.put(*parse_uid_as("dec:0013530444", "by-fob-number"))
    index.put(*parse_uid_as("206,30028", "by-facility-card"))
    assert em4100(index, "3C00CE754C") == "by-fob-number"  # low 32 bits match first
    index.put("3C00CE754C", "exact")
    assert em4100(index, "3C00CE754C") == "exact"
    assert em4100(index, "FF00CE754C") == "by-fob-number"
    assert em4100(index, "11FFCE754C") == "by-facility-card"  # only the low 24 bits match
    assert em4100(index, "DEADBEEF01") is None
    index.discard("3C00CE754C")
    assert em4100(index, "3C00CE754C") == "by-fob-number"
    assert index.get("00CE754C") == "by-fob-number"  # a Wiegand-34 reader reading the same fob: exact


def parse_uid_as(text: str, value: str) -> tuple[str, str, str]:
    uid, form = parse_uid(text)
    return uid, value, form


def test_short_uids_typed_in_hex_never_match_the_low_bits_of_a_longer_uid() -> None:
    index: CredentialIndex[str] = CredentialIndex()
    index.put("5A0144", "wiegand-26")  # FC 90 / CN 324, as a Wiegand reader reports it
    index.put("04A1B2C3", "mifare-4-byte")
    for tapped in ("00115A0144", "04AABBCC5A0144", "FF04A1B2C3"):
        assert em4100(index, tapped) is None, tapped
        assert index.get(tapped) is None
    assert index.get("5A0144") == "wiegand-26" and index.get("04A1B2C3") == "mifare-4-byte"


def test_a_printed_form_matches_by_its_low_bits_only_at_an_em4100_reader() -> None:
    index: CredentialIndex[str] = CredentialIndex()
    index.put(*parse_uid_as("90,324", "printed"))
    assert em4100(index, "00115A0144") == "printed"  # an EM4100 fob printed "090,00324"
    assert index.get("04AABBCC5A0144") is None  # a MIFARE tap never looks up printed forms
    assert printed_form_keys("04AABBCC5A0144") == ()


def test_the_same_card_in_two_forms_shares_a_key() -> None:
    forms = [parse_uid(text) for text in ("3C00CE754C", "dec:0013530444", "206,30028")]
    for first, second in ((0, 1), (0, 2), (1, 2)):
        a, b = forms[first], forms[second]
        shared = set(own_keys(*a)) & (set(own_keys(*b)) | set(answer_keys(*b)))
        shared |= set(own_keys(*b)) & (set(own_keys(*a)) | set(answer_keys(*a)))
        assert shared, (a, b)
    # two different EM4100 cards that happen to share their low 24 bits are not the same card
    assert not set(own_keys("3C00CE754C", "")) & set(answer_keys("3D11CE754C", ""))
