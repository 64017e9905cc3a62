"""A credential's share of the set digest, as the store writes it beside each row, is the SHA-256 of the
recipe's canonical JSON (gateway.credential_digest): the quick way and the recipe agree for any text."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.credential_digest import credential_share, digest_record, record_share, share_hex
from gateway.model import Credential, Kind, Role, Status

text = st.text(min_size=1, max_size=12)
moments = st.none() | st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)

credentials = st.builds(
    Credential,
    id=text,
    uid=st.sampled_from(["", "3C00000001", "00CE754C", "CE754C"]),
    holder=text,
    role=st.sampled_from(list(Role)),
    scope=st.lists(text, max_size=3).map(tuple),
    status=st.sampled_from(list(Status)),
    kind=st.sampled_from(list(Kind)),
    valid_from=moments,
    valid_until=moments,
    schedule=st.none() | text,
    key_code=st.none() | text,
    deposit=st.none() | text,
    approved_by=st.none() | text,
    single_use=st.booleans(),
    uid_form=st.sampled_from(["", "dec", "fc"]),
)


@settings(max_examples=500, deadline=None)
@given(credential=credentials)
def test_the_share_written_beside_a_row_is_the_recipes(credential: Credential) -> None:
    recipe = record_share(digest_record(credential))
    assert share_hex(credential) == f"{recipe:064x}"
    assert credential_share(credential) == recipe
