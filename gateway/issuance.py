"""The issuance rules of SPEC §4, as pure functions over plain values: no database, no clock, no I/O.

One copy of these rules serves every issuing office: the gateway's credential store applies them
inside its write transaction, and central imports the same module to issue credentials estate-wide.
Everything here works on `gateway.model.Credential` values (frozen dataclasses) and on
`gateway.credential_input.CredentialFields` (the checked upsert fields, a mapping); the caller loads
the credentials a batch can touch, asks, and stores what comes back.

The rules:

* **Issue numbers.** A new credential gets 1 + the highest `issue_no` among the keys it follows on
  from — credentials of the same holder and role whose scope shares a name (any scope for site
  masters and emergency credentials), and for a physical key every key cut to the same code — or 1
  when there are none. An update of an existing id keeps its `issue_no`, `issued_at` and `issued_by`.
  A replacement is the retired key's `issue_no` + 1, named `{id}-{issue_no}` unless named otherwise.
* **Duplicates need `approved_by`.** A second active `user` key of the same holder whose scope shares
  a locker, or a further outstanding physical key cut to an existing code; duplicates that an
  updated credential already lived with are not new.
* **One card, one credential.** A uid clashes with any other credential for the same card, in any
  form it was enrolled in (hex as read, or the decimal / facility,card forms printed on a fob).
* **Validity and scopes** are checked per item by `gateway.credential_input.parse_credential_fields`
  before these rules run (a `valid_until` not after `valid_from` is refused there).

Typical use (what `gateway.store.Store` does)::

    known = KnownCredentials(credentials_the_batch_can_touch)
    outcome = issue_batch(parsed_fields, known, existing_by_id, by="cli", now=now)
    if outcome.refusals: ...  # refuse the batch as a whole
    else: ...                 # store outcome.changed
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from gateway.credential_input import CredentialFields
from gateway.model import OUTSTANDING_STATUSES, Credential, Kind, Role, Status, check_text_id
from gateway.uid import UidError, answer_keys, mask_uid, own_keys, parse_uid

#: Roles whose keys follow on from each other whatever their scope.
WHOLE_SITE_ROLES = (Role.SITE_MASTER, Role.EMERGENCY)


class IssuanceError(ValueError):
    """A request the rules refuse (one plain line, uids masked)."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why one item of a batch cannot be issued: the field at fault and a plain sentence."""

    field: str
    message: str


#: A card's keys: those its credential is found under (`own_keys`) and the printed-form keys the card
#: also answers to (`answer_keys`).
CardKeys = tuple[tuple[str, ...], tuple[str, ...]]


def card_keys(credential: Credential) -> CardKeys:
    """The keys `KnownCredentials` finds and files a credential's card under (worked out once per item)."""
    return own_keys(credential.uid, credential.uid_form), answer_keys(credential.uid, credential.uid_form)


class KnownCredentials:
    """The credentials a batch is checked against, changed item by item as the batch is applied.

    It needs only what the checks can touch: the batch's own ids, every credential of the batch's
    holders, every physical key cut to the batch's codes, and the credentials for the batch's cards
    (see `gateway.uid.own_keys` / `answer_keys` for the forms one card can be found under). Give it
    more and the answers are the same.
    """

    def __init__(self, credentials: Iterable[Credential] = ()) -> None:
        self.by_id: dict[str, Credential] = {}
        self.by_holder: dict[str, set[str]] = {}
        self.by_code: dict[str, set[str]] = {}
        #: uid or printed-form key → the credential found under it
        self.uid_owner: dict[str, str] = {}
        #: printed-form key → a credential whose card also answers to it (the same card in another form)
        self.answer_owner: dict[str, str] = {}
        for credential in credentials:
            self.put(credential)

    def put(self, credential: Credential, keys: CardKeys | None = None) -> None:
        """Add a credential, or put a new version of one in place of the old. `keys`: its card's keys
        (`card_keys`), when the caller has them already."""
        old = self.by_id.get(credential.id)
        if old is not None:
            self.by_holder.get(old.holder, set()).discard(old.id)
            if old.key_code is not None:
                self.by_code.get(old.key_code, set()).discard(old.id)
            own, answer = card_keys(old)
            for owners, found in ((self.uid_owner, own), (self.answer_owner, answer)):
                for key in found:
                    if owners.get(key) == old.id:
                        del owners[key]
        ident = credential.id
        self.by_id[ident] = credential
        holders = self.by_holder.get(credential.holder)
        if holders is None:
            self.by_holder[credential.holder] = {ident}
        else:
            holders.add(ident)
        if credential.key_code is not None:
            self.by_code.setdefault(credential.key_code, set()).add(ident)
        own, answer = card_keys(credential) if keys is None else keys
        for key in own:
            self.uid_owner[key] = ident
        for key in answer:
            self.answer_owner[key] = ident

    def same_card(self, credential: Credential, keys: CardKeys | None = None) -> str | None:
        """Another credential for this credential's card (its uid, or the same card in another form).
        `keys`: its card's keys (`card_keys`), when the caller has them already."""
        own, answer = card_keys(credential) if keys is None else keys
        for key in own:
            for owners in (self.uid_owner, self.answer_owner):
                owner = owners.get(key)
                if owner is not None and owner != credential.id:
                    return owner
        for key in answer:
            owner = self.uid_owner.get(key)
            if owner is not None and owner != credential.id:
                return owner
        return None

    def same_holder(self, holder: str, other_than: str) -> list[Credential]:
        """The holder's other credentials, by id (most holders have one: that case costs one lookup)."""
        return self._others(self.by_holder.get(holder), other_than)

    def same_code(self, key_code: str, other_than: str) -> list[Credential]:
        """The other credentials cut to this key code, by id."""
        return self._others(self.by_code.get(key_code), other_than)

    def _others(self, ids: set[str] | None, other_than: str) -> list[Credential]:
        if not ids or (len(ids) == 1 and other_than in ids):
            return []
        return [self.by_id[ident] for ident in sorted(ids) if ident != other_than]


# ---- one item ----------------------------------------------------------------------------------


def issue(
    fields: CredentialFields, old: Credential | None, known: KnownCredentials, *, by: str, now: datetime
) -> Credential:
    """The credential `fields` describe: an update keeps `old`'s issue details, a new one is numbered
    along its lineage and issued `now` by `by`."""
    if old is not None:
        return Credential(**fields, issue_no=old.issue_no, issued_at=old.issued_at, issued_by=old.issued_by)
    return Credential(**fields, issue_no=lineage_issue_no(known, fields) + 1, issued_at=now, issued_by=by)


def refusal(
    known: KnownCredentials, credential: Credential, old: Credential | None, keys: CardKeys | None = None
) -> Refusal | None:
    """Why `credential` (replacing `old`, if it updates one) may not join `known`, or None. `keys`: its
    card's keys (`card_keys`), when the caller has them already."""
    return card_refusal(known, credential, keys) or duplicate_refusal(known, credential, old)


def card_refusal(known: KnownCredentials, credential: Credential, keys: CardKeys | None = None) -> Refusal | None:
    """A refusal when another credential is for `credential`'s card (one card, one credential)."""
    owner = known.same_card(credential, keys)
    if owner is None:
        return None
    other = known.by_id.get(owner)
    if other is not None and other.uid != credential.uid:
        return Refusal("uid", f"{mask_uid(credential.uid)} is the same card as credential {owner} (in another form)")
    return Refusal("uid", f"{mask_uid(credential.uid)} is already on credential {owner}")


def _first_key(known: KnownCredentials, new: CredentialFields) -> bool:
    """Whether `new` is its holder's first key and cut to no known code: then it follows on from no key
    (`lineage_issue_no` is 0) and duplicates none (`user_duplicates` and `code_duplicates` are empty) —
    the usual item of a large import, spared those checks."""
    if known.by_holder.get(new["holder"]):
        return False
    code = new["key_code"]
    return code is None or not known.by_code.get(code)


def lineage_issue_no(known: KnownCredentials, new: CredentialFields) -> int:
    """The highest issue number among the keys `new` follows on from (0 when it is the first)."""
    highest = 0
    others = known.same_holder(new["holder"], new["id"])  # usually none: a holder's first key
    if others:
        scope = set(new["scope"])
        for other in others:
            if other.role is not new["role"]:
                continue
            if new["role"] in WHOLE_SITE_ROLES or scope.intersection(other.scope):
                highest = max(highest, other.issue_no)
    if new["kind"] is Kind.PHYSICAL_KEY and new["key_code"] is not None:
        for other in known.same_code(new["key_code"], new["id"]):
            if other.kind is Kind.PHYSICAL_KEY:
                highest = max(highest, other.issue_no)
    return highest


def user_duplicates(known: KnownCredentials, new: Credential) -> list[Credential]:
    """Other active user keys of the same holder that open one of the same lockers."""
    if not _is_active_user(new):
        return []
    return [
        other for other in known.same_holder(new.holder, new.id) if _is_active_user(other) and _shares_scope(other, new)
    ]


def code_duplicates(known: KnownCredentials, new: Credential) -> list[Credential]:
    """Other outstanding physical keys cut to the same code."""
    if not _is_outstanding_physical(new) or new.key_code is None:
        return []
    return [other for other in known.same_code(new.key_code, new.id) if _is_outstanding_physical(other)]


def duplicate_refusal(known: KnownCredentials, new: Credential, old: Credential | None) -> Refusal | None:
    """A refusal when `new` is an unapproved second key; duplicates `old` already lived with are not
    new (re-importing an unchanged file must not trip over an approved duplicate)."""
    if new.approved_by:
        return None
    users = user_duplicates(known, new)
    if users and old is not None:
        known_before = {other.id for other in user_duplicates(known, old)}
        users = [other for other in users if other.id not in known_before]
    if users:
        other = users[0]
        lockers = sorted(set(other.scope) & set(new.scope))
        return Refusal(
            "approved_by",
            f"holder {new.holder} already has active {other.id} for locker {lockers[0]}; "
            "a second key needs approved_by",
        )
    keys = code_duplicates(known, new)
    if keys and old is not None:
        known_before = {other.id for other in code_duplicates(known, old)}
        keys = [other for other in keys if other.id not in known_before]
    if keys:
        return Refusal(
            "approved_by",
            f"physical key {keys[0].id} is already cut to key code {new.key_code}; a further key needs approved_by",
        )
    return None


def _shares_scope(a: Credential, b: Credential) -> bool:
    return bool(set(a.scope) & set(b.scope))


def _is_active_user(credential: Credential) -> bool:
    return credential.role is Role.USER and credential.status is Status.ACTIVE


def _is_outstanding_physical(credential: Credential) -> bool:
    return credential.kind is Kind.PHYSICAL_KEY and credential.status in OUTSTANDING_STATUSES


# ---- a batch -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What a batch comes to. `issued` are the items as they would be stored, in batch order
    (refused items left out); `changed` those that differ from what was stored; `refusals` maps a
    refused item's key (its position, or whatever key the caller gave) to why."""

    issued: tuple[Credential, ...]
    changed: tuple[Credential, ...]
    refusals: Mapping[int, Refusal]


def issue_batch(
    items: Mapping[int, CredentialFields],
    known: KnownCredentials,
    existing: Mapping[str, Credential],
    *,
    by: str,
    now: datetime,
    whole_set: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> BatchOutcome:
    """Issue `items` (keyed by their position in the batch) one after another against `known`, which
    the batch updates as it goes so duplicate control applies within the batch too.

    `existing` are the stored credentials with the items' ids (an item with one is an update).
    `whole_set` is for a snapshot that becomes the whole set: an update is then checked as a new key
    (`known` should hold nothing but the snapshot itself). `progress(done, total)` is called every
    2,000 items.
    """
    issued: list[Credential] = []
    changed: list[Credential] = []
    refusals: dict[int, Refusal] = {}
    for position, (index, fields) in enumerate(items.items()):
        if progress is not None and position % 2000 == 0:
            progress(position, len(items))
        old = existing.get(fields["id"])
        if old is None and _first_key(known, fields):
            # Numbered 1, with no key to duplicate (what the rules come to): only its card is checked.
            credential = Credential(**fields, issue_no=1, issued_at=now, issued_by=by)
            keys = card_keys(credential)
            refused = card_refusal(known, credential, keys)
        else:
            credential = issue(fields, old, known, by=by, now=now)
            keys = card_keys(credential)
            refused = refusal(known, credential, None if whole_set else old, keys)
        if refused is not None:
            refusals[index] = refused
            continue
        known.put(credential, keys)
        issued.append(credential)
        if credential != old:
            changed.append(credential)
    if progress is not None:
        progress(len(items), len(items))
    return BatchOutcome(tuple(issued), tuple(changed), refusals)


# ---- replacement -------------------------------------------------------------------------------


def replacement_id(old: Credential, new_id: str | None) -> str:
    """The id of `old`'s replacement: `new_id`, or `{id}-{issue_no}` with the successor's issue number.

    Raises IssuanceError when it is not a valid id; whether it is taken is for the caller to check.
    """
    try:
        return check_text_id((new_id if new_id else f"{old.id}-{old.issue_no + 1}").strip(), "new id")
    except ValueError as exc:
        raise IssuanceError(str(exc)) from None


def check_replaceable(old: Credential) -> None:
    """Only an outstanding key (active, suspended or lost) can be replaced; raises IssuanceError."""
    if old.status not in OUTSTANDING_STATUSES:
        raise IssuanceError(
            f"{old.id} is {old.status.value}: only an active, suspended or lost credential can be replaced"
        )


def successor(old: Credential, new_uid: str, *, successor_id: str, by: str, now: datetime) -> Credential:
    """The key that replaces `old` (issue_no + 1, active, issued `now` by `by`, named `successor_id`
    — see `replacement_id`): same holder, role, kind, scope, validity, schedule and — for a physical
    key, whose replacement takes no uid — key code.

    Raises IssuanceError when `old` is not replaceable or the uid does not suit the kind. Whether the
    uid is already on another credential is for the caller to check against its store.
    """
    check_replaceable(old)
    uid, uid_form = _replacement_uid(old, new_uid)
    return Credential(
        id=successor_id,
        uid=uid,
        holder=old.holder,
        role=old.role,
        scope=old.scope,
        status=Status.ACTIVE,
        kind=old.kind,
        valid_from=old.valid_from,
        valid_until=old.valid_until,
        schedule=old.schedule,
        key_code=old.key_code,
        issue_no=old.issue_no + 1,
        issued_at=now,
        issued_by=by,
        uid_form=uid_form,
    )


def _replacement_uid(old: Credential, new_uid: str) -> tuple[str, str]:
    if old.kind is Kind.PHYSICAL_KEY:
        if new_uid.strip():
            raise IssuanceError(f"{old.id} is a physical key: its replacement has no uid (it is cut to the same code)")
        return "", ""
    if not new_uid.strip():
        raise IssuanceError(f"{old.id} is a {old.kind.value}: its replacement needs the new card's uid")
    try:
        return parse_uid(new_uid)
    except UidError as exc:
        raise IssuanceError(
            "new uid: " + str(exc).replace(repr(new_uid.strip()), repr(mask_uid(new_uid.strip())))
        ) from None
