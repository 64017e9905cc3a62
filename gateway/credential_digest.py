"""The credential-set digest: does a central system hold the same credential set as a gateway?

Pure arithmetic over plain values, no I/O; the gateway's store keeps the digest up to date with each
change, and central computes it over what it sent (SPEC §4, §7 `{base}/info`).

Recipe: for each credential take the canonical JSON (`gateway.events.canonical_json`: sorted keys,
no spaces, UTF-8) of its upsert fields `{id, uid, holder, role, scope: [...], kind, status,
valid_from, valid_until, schedule, key_code, deposit, approved_by}`, plus `single_use: true` for a
single-use credential (the member is left out when false) — absent values null, times as UTC text
`YYYY-MM-DDTHH:MM:SSZ` (`.ffffff` before the Z when not whole seconds), uids canonical — and its
SHA-256 as a 256-bit integer (its *share*); the digest is the sum of the shares modulo 2**256, as 64
lower-case hex digits (64 zeros for an empty set).

A sum does not depend on order, so a store adds and subtracts shares as rows change instead of
rereading 100,000 rows. The issuer-set fields (issue_no, issued_at, issued_by) are left out so the
sender can compute it over what it sent, and so is a uid's printed form (`uid_form`): the sender
computes the digest over the canonical uid its printed form normalises to. It detects any accidental
difference; it is a consistency check, not a signature.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from json.encoder import encode_basestring
from typing import Any

from gateway.model import Credential

#: Shares are summed modulo this.
DIGEST_MODULUS = 1 << 256
#: The digest of an empty set.
EMPTY_DIGEST = "0" * 64
#: `gateway.events.canonical_json`'s bytes (before UTF-8) for a record whose keys come sorted; one
#: encoder for every record (json.dumps with options builds a new encoder per call).
_CANONICAL = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


@lru_cache(maxsize=1024)
def utc_text(moment: datetime | None) -> str | None:
    """A time as the recipe (and the store) writes it: UTC, `Z`, microseconds only when not whole."""
    if moment is None:
        return None
    utc = moment.astimezone(UTC)
    spec = "microseconds" if utc.microsecond else "seconds"
    return utc.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def digest_record(credential: Credential) -> dict[str, Any]:
    """A credential's upsert fields as the digest reads them, keys already in sorted order.

    Built sorted so encoding it without `sort_keys` gives the canonical bytes at a fraction of the
    cost (this runs for every row an import writes). `single_use` is a member only when true, so sets
    without visitor codes keep the digest they had.
    """
    record: dict[str, Any] = {
        "approved_by": credential.approved_by,
        "deposit": credential.deposit,
        "holder": credential.holder,
        "id": credential.id,
        "key_code": credential.key_code,
        "kind": credential.kind.value,
        "role": credential.role.value,
        "schedule": credential.schedule,
        "scope": list(credential.scope),
    }
    if credential.single_use:
        record["single_use"] = True
    record["status"] = credential.status.value
    record["uid"] = credential.uid
    record["valid_from"] = utc_text(credential.valid_from)
    record["valid_until"] = utc_text(credential.valid_until)
    return record


def record_share(record: Mapping[str, Any]) -> int:
    """One record's share of the digest. Its keys must already be sorted (as `digest_record` gives)."""
    return int.from_bytes(hashlib.sha256(_CANONICAL.encode(record).encode("utf-8")).digest(), "big")


def credential_share(credential: Credential) -> int:
    """One credential's share of the digest."""
    return int(share_hex(credential), 16)


def share_hex(credential: Credential) -> str:
    """One credential's share of the digest as 64 hex digits (as the store keeps it beside the row).

    The canonical JSON of `digest_record` written out directly: the same bytes, with the members an
    import's rows share (kind, role, schedule, scope, status, validity) encoded once per distinct
    value. This runs for every row an import writes."""
    c = credential
    shared = _shared_members(c.kind, c.role, c.schedule, c.scope, c.single_use, c.status)
    text = (
        f'{{"approved_by":{_json_text(c.approved_by)},"deposit":{_json_text(c.deposit)},'
        f'"holder":{encode_basestring(c.holder)},"id":{encode_basestring(c.id)},'
        f'"key_code":{_json_text(c.key_code)}{shared},"uid":{encode_basestring(c.uid)}'
        f"{_validity_members(c.valid_from, c.valid_until)}}}"
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _json_text(value: str | None) -> str:
    return "null" if value is None else encode_basestring(value)


@lru_cache(maxsize=4096)
def _shared_members(
    kind: str, role: str, schedule: str | None, scope: tuple[str, ...], single_use: bool, status: str
) -> str:
    """`,"kind":…,"role":…,"schedule":…,"scope":[…]` (`,"single_use":true`) `,"status":…`."""
    single = ',"single_use":true' if single_use else ""
    return (
        f',"kind":{encode_basestring(kind)},"role":{encode_basestring(role)},"schedule":{_json_text(schedule)},'
        f'"scope":{_CANONICAL.encode(list(scope))}{single},"status":{encode_basestring(status)}'
    )


@lru_cache(maxsize=1024)
def _validity_members(valid_from: datetime | None, valid_until: datetime | None) -> str:
    """`,"valid_from":…,"valid_until":…`."""
    return f',"valid_from":{_json_text(utc_text(valid_from))},"valid_until":{_json_text(utc_text(valid_until))}'


def digest_text(total: int) -> str:
    """The digest for a sum of shares (any integer: shares may have been subtracted)."""
    return f"{total % DIGEST_MODULUS:064x}"


def set_digest(records: Iterable[Mapping[str, Any]]) -> str:
    """The digest over upsert-field records as sent (any key order; times already UTC text)."""
    return digest_text(sum(record_share(dict(sorted(record.items()))) for record in records))


def credentials_digest(credentials: Iterable[Credential]) -> str:
    """The digest over credentials (what a store holding exactly these publishes)."""
    return digest_text(sum(credential_share(credential) for credential in credentials))
