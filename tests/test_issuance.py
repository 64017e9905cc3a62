"""The SPEC §4 issuance rules and the set digest as central uses them: plain values in, plain values
out, no store (gateway.issuance, gateway.credential_digest)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.credential_digest import EMPTY_DIGEST, credentials_digest, set_digest
from gateway.credential_input import CredentialFields, parse_credential_fields
from gateway.issuance import (
    IssuanceError,
    KnownCredentials,
    Refusal,
    issue_batch,
    replacement_id,
    successor,
)
from gateway.model import Credential, Kind, Role, Status
from gateway.store import Store

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def fields(ident: str, uid: str = "", holder: str = "u-1", scope: str = "A-01", **extra: Any) -> CredentialFields:
    return parse_credential_fields(
        {"id": ident, "uid": uid, "holder": holder, "role": "user", "scope": scope, **extra}, UTC
    )


def batch(*items: CredentialFields) -> dict[int, CredentialFields]:
    return dict(enumerate(items))


def test_a_batch_numbers_keys_along_their_lineage_and_refuses_an_unapproved_duplicate() -> None:
    earlier = Credential(id="C-1", uid="AA01", holder="u-1", role=Role.USER, scope=("A-01",), issue_no=2)
    outcome = issue_batch(
        batch(
            fields("C-2", "AA02"),
            fields("C-3", "AA03", approved_by="head"),
            fields("C-4", "AA04", holder="u-4", scope="B-01"),
        ),
        KnownCredentials([earlier]),
        {},
        by="central",
        now=NOW,
    )
    assert outcome.refusals == {0: Refusal("approved_by", outcome.refusals[0].message)}
    assert "already has active C-1 for locker A-01" in outcome.refusals[0].message
    assert [(c.id, c.issue_no, c.issued_by, c.issued_at) for c in outcome.issued] == [
        ("C-3", 3, "central", NOW),
        ("C-4", 1, "central", NOW),
    ]
    assert outcome.changed == outcome.issued


def test_the_same_card_in_its_printed_form_is_a_uid_clash_and_the_message_masks_it() -> None:
    enrolled = Credential(id="C-1", uid="3C00CE754C", holder="u-1", role=Role.USER, scope=("A-01",))
    outcome = issue_batch(
        batch(fields("C-2", "dec:0013530444", holder="u-2")), KnownCredentials([enrolled]), {}, by="t", now=NOW
    )
    (refused,) = outcome.refusals.values()
    assert refused.field == "uid" and "same card as credential C-1" in refused.message
    assert "CE754C" not in refused.message and outcome.issued == ()


def test_an_update_keeps_its_issue_details_and_an_unchanged_item_is_not_a_change() -> None:
    stored = Credential(
        id="C-1", uid="AA01", holder="u-1", role=Role.USER, scope=("A-01",), issue_no=4, issued_at=NOW, issued_by="a"
    )
    later = datetime(2027, 1, 1, tzinfo=UTC)
    outcome = issue_batch(
        batch(fields("C-1", "AA01"), fields("C-1", "AA01", status="lost")),
        KnownCredentials([stored]),
        {"C-1": stored},
        by="b",
        now=later,
    )
    assert outcome.issued[0] == stored
    assert (outcome.issued[1].status, outcome.issued[1].issue_no, outcome.issued[1].issued_by) == (
        Status.LOST,
        4,
        "a",
    )
    assert outcome.changed == (outcome.issued[1],)


def test_a_replacement_follows_on_with_the_next_issue_number() -> None:
    key = Credential(id="K-1", uid="", holder="u-1", role=Role.USER, kind=Kind.PHYSICAL_KEY, key_code="7", issue_no=1)
    name = replacement_id(key, None)
    new = successor(key, "", successor_id=name, by="office", now=NOW)
    assert (new.id, new.issue_no, new.key_code, new.status, new.issued_at) == ("K-1-2", 2, "7", Status.ACTIVE, NOW)
    with pytest.raises(IssuanceError, match="physical key: its replacement has no uid"):
        successor(key, "AA01", successor_id=name, by="office", now=NOW)
    with pytest.raises(IssuanceError, match="only an active, suspended or lost"):
        successor(
            Credential(id="C-9", uid="AA09", holder="u", role=Role.USER, status=Status.RETURNED),
            "AA10",
            successor_id="C-9-2",
            by="o",
            now=NOW,
        )


def test_the_digest_of_credentials_is_the_recipe_over_what_was_sent_and_what_the_store_publishes(
    tmp_path: Path,
) -> None:
    sent: list[dict[str, Any]] = [
        {"id": "C-2", "uid": "AA02", "holder": "u-2", "role": "user", "scope": ["A-01"], "valid_until": "2026-07-31"},
        {"id": "V-1", "uid": "123456789012", "holder": "guest", "role": "user", "kind": "mobile", "single_use": True},
    ]
    outcome = issue_batch(
        dict(enumerate(parse_credential_fields(item, UTC) for item in sent)), KnownCredentials(), {}, by="c", now=NOW
    )
    blank = dict.fromkeys(("valid_from", "valid_until", "schedule", "key_code", "deposit", "approved_by"))
    records = [
        {**blank, "id": "C-2", "uid": "AA02", "holder": "u-2", "role": "user", "scope": ["A-01"], "kind": "card"}
        | {"status": "active", "valid_until": "2026-08-01T00:00:00Z"},
        {**blank, "id": "V-1", "uid": "123456789012", "holder": "guest", "role": "user", "scope": [], "kind": "mobile"}
        | {"status": "active", "single_use": True},
    ]
    by_hand = sum(
        int(hashlib.sha256(json.dumps(r, sort_keys=True, separators=(",", ":")).encode()).hexdigest(), 16)
        for r in records
    )
    assert credentials_digest(outcome.issued) == set_digest(records) == f"{by_hand % 2**256:064x}"
    assert credentials_digest([]) == set_digest([]) == EMPTY_DIGEST
    with Store.open(tmp_path, zone=UTC) as store:
        store.upsert(sent, by="c", now=NOW)
        assert store.version_and_digest()[1] == credentials_digest(store.all())
