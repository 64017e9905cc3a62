"""Central's tables, in one place (SQLAlchemy Core). Alembic migrations under central/migrations create them.

The same tables serve SQLite (the embedded default) and PostgreSQL; on PostgreSQL `events` is partitioned by
month of `ts` (see the initial migration), so its primary key carries `ts` and idempotency per
`(site, gateway, seq)` is kept by `event_chain`, which every stored event has exactly one row in.

Times are timezone-aware UTC (`DateTime(timezone=True)`); JSON documents are stored as text exactly as
received, so what was published can always be re-hashed.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    text,
)

metadata = MetaData()

#: BIGINT on PostgreSQL, INTEGER on SQLite (so an autoincrementing id is SQLite's rowid).
Id = BigInteger().with_variant(Integer(), "sqlite")

# -- events --------------------------------------------------------------------------------------------

#: Every stored event, as published (SPEC §11 Ingest). Indexed columns are taken from the envelope;
#: text a database cannot hold (a NUL in PostgreSQL) is escaped in them, never in `envelope`.
events = Table(
    "events",
    metadata,
    Column("site", Text, nullable=False),
    Column("gateway", Text, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("kind", Text, nullable=False),
    Column("reader", Text),
    Column("locker", Text),
    Column("credential_id", Text),
    Column("holder", Text),
    Column("reason", Text),
    Column("override", Boolean),
    Column("boot_id", Text),
    Column("event_id", Text),
    Column("hash", Text, nullable=False),
    Column("envelope", Text, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("ts", "site", "gateway", "seq", name="events_pkey"),
    postgresql_partition_by="RANGE (ts)",
)
Index("events_by_gateway_seq", events.c.site, events.c.gateway, events.c.seq)
Index("events_by_kind_ts", events.c.kind, events.c.ts)
Index("events_by_locker_ts", events.c.site, events.c.locker, events.c.ts)
Index("events_by_holder_ts", events.c.holder, events.c.ts)
Index("events_by_credential_ts", events.c.credential_id, events.c.ts)
#: The overrides report (master, emergency and remote openings) reads only these few rows.
Index(
    "events_overrides_ts",
    events.c.ts,
    postgresql_where=events.c.override.is_(True),
    sqlite_where=events.c.override.is_(True),
)
#: Events that show a key still out that should have come back (the unreturned report). Literal SQL, so
#: that a query using it matches the partial index whatever the driver does with parameters.
KEY_STILL_OUT = text("kind = 'credential.lost_presented' OR (kind = 'access.denied' AND reason = 'expired')")
Index("events_keys_still_out_ts", events.c.ts, postgresql_where=KEY_STILL_OUT, sqlite_where=KEY_STILL_OUT)

#: One row per stored (site, gateway, seq): the idempotency key and what verification walks.
#: `hash_ok` says whether `hash` recomputes from the stored envelope (SPEC §7).
event_chain = Table(
    "event_chain",
    metadata,
    Column("site", Text, nullable=False),
    Column("gateway", Text, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", Text, nullable=False),
    Column("prev_hash", Text, nullable=False),
    Column("hash_ok", Boolean, nullable=False),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("stored_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("site", "gateway", "seq", name="event_chain_pkey"),
)

#: A second copy of a stored seq with a different hash: kept beside the first (alert chain.conflict).
event_conflicts = Table(
    "event_conflicts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("site", Text, nullable=False),
    Column("gateway", Text, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", Text, nullable=False),
    Column("envelope", Text, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
)
Index(
    "event_conflicts_by_copy",
    event_conflicts.c.site,
    event_conflicts.c.gateway,
    event_conflicts.c.seq,
    event_conflicts.c.hash,
    unique=True,
)

# -- gateways and their lockers ------------------------------------------------------------------------

#: What central knows of each gateway: from `state` and `info`, and its chain's verification state.
gateways = Table(
    "gateways",
    metadata,
    Column("site", Text, nullable=False),
    Column("gateway", Text, nullable=False),
    Column("state", Text, nullable=False, server_default="unknown"),  # online | offline | unknown
    Column("boot_id", Text),
    Column("version", Text),
    Column("last_seen", DateTime(timezone=True)),
    Column("state_changed_at", DateTime(timezone=True)),
    Column("info", Text),  # the retained info payload as received
    Column("credentials_version", Text),
    Column("credentials_digest", Text),
    Column("anchor_seq", BigInteger),
    Column("verified_seq", BigInteger),
    Column("verified_hash", Text),
    Column("received_seq", BigInteger),
    Column("chain", Text, nullable=False, server_default="ok"),  # ok | gap | broken
    Column("broken_seq", BigInteger),
    PrimaryKeyConstraint("site", "gateway", name="gateways_pkey"),
)

#: Each locker's retained `lockers/{id}` state now.
lockers = Table(
    "lockers",
    metadata,
    Column("site", Text, nullable=False),
    Column("gateway", Text, nullable=False),
    Column("locker", Text, nullable=False),
    Column("door", Text, nullable=False, server_default="unknown"),
    Column("service", Text, nullable=False, server_default="in_service"),
    Column("occupied", Boolean),
    Column("ts", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("site", "gateway", "locker", name="lockers_pkey"),
)

#: Gap repair: the one outstanding `events/replay` per gateway (SPEC §11 Gap repair).
replays = Table(
    "replays",
    metadata,
    Column("site", Text, nullable=False),
    Column("gateway", Text, nullable=False),
    Column("from_seq", BigInteger, nullable=False),
    Column("to_seq", BigInteger, nullable=False),
    Column("first_sent_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="1"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("site", "gateway", name="replays_pkey"),
)

# -- alerts --------------------------------------------------------------------------------------------

#: SPEC §11 Alerts. `subject` tells two open alerts of one kind apart (a locker, a seq range, a
#: credential); at most one alert per (site, gateway, kind, subject) is not resolved at a time.
alerts = Table(
    "alerts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("site", Text, nullable=False),
    Column("gateway", Text, nullable=False, server_default=""),
    Column("kind", Text, nullable=False),
    Column("subject", Text, nullable=False, server_default=""),
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("seq", BigInteger),
    Column("state", Text, nullable=False, server_default="open"),  # open | acknowledged | resolved
    Column("acknowledged_by", Text),
    Column("acknowledged_at", DateTime(timezone=True)),
    Column("resolved_at", DateTime(timezone=True)),
    Column("resolution", Text),
    Column("detail", Text, nullable=False, server_default="{}"),  # JSON object
    Column("published", Boolean, nullable=False, server_default="0"),
)
Index(
    "alerts_one_unresolved",
    alerts.c.site,
    alerts.c.gateway,
    alerts.c.kind,
    alerts.c.subject,
    unique=True,
    sqlite_where=text("state != 'resolved'"),
    postgresql_where=text("state != 'resolved'"),
)
Index("alerts_by_state_opened", alerts.c.state, alerts.c.opened_at)

# -- workers, access, audit ----------------------------------------------------------------------------

#: Live central workers: heartbeats for `/healthz` and for taking over a dead worker's MQTT session.
workers = Table(
    "workers",
    metadata,
    Column("id", Text, primary_key=True),
    Column("client_id", Text, nullable=False),
    Column("host", Text, nullable=False, server_default=""),
    Column("pid", Integer),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("heartbeat_at", DateTime(timezone=True), nullable=False),
    Column("stopped_at", DateTime(timezone=True)),  # set by a graceful stop (its session is drained)
    Column("taken_over_by", Text),
    Column("taken_over_at", DateTime(timezone=True)),
)

#: API bearer tokens (`lockergw central token create`); only a hash of each token is kept.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", Text, nullable=False),
    Column("role", Text, nullable=False),  # viewer | operator | admin
    Column("token_hash", Text, nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_used_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
)

#: Every change made through the API, the CLI or the console: who, when, what.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("site", Text),
    Column("target", Text),
    Column("detail", Text, nullable=False, server_default="{}"),
)
Index("audit_log_by_at", audit_log.c.at)

# -- credentials: central is the estate's issuing office (SPEC §11) --------------------------------------

#: Every credential central has issued, per site. `uid` is raw (central must push it to the gateways) and
#: never leaves central unmasked; `scope` is a JSON list. The columns up to `uid_form` are the gateway's
#: (SPEC §4, gateway.model.Credential); the rest are central's governance: the deposit's state and who
#: changed it, the return of a key, the reason of the last status change.
credentials = Table(
    "credentials",
    metadata,
    Column("site", Text, nullable=False),
    Column("id", Text, nullable=False),
    Column("uid", Text, nullable=False, server_default=""),
    Column("uid_form", Text, nullable=False, server_default=""),
    Column("holder", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("scope", Text, nullable=False, server_default="[]"),
    Column("kind", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("valid_from", DateTime(timezone=True)),
    Column("valid_until", DateTime(timezone=True)),
    Column("schedule", Text),
    Column("key_code", Text),
    Column("deposit", Text),  # the amount, as given
    Column("deposit_state", Text),  # held | refunded | forfeited (null without a deposit)
    Column("deposit_changed_by", Text),
    Column("deposit_changed_at", DateTime(timezone=True)),
    Column("approved_by", Text),
    Column("issue_no", Integer, nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("issued_by", Text, nullable=False),
    Column("returned_at", DateTime(timezone=True)),
    Column("returned_by", Text),
    Column("status_reason", Text),
    Column("changed_at", DateTime(timezone=True), nullable=False),
    Column("revision", BigInteger, nullable=False),  # the site revision that last changed it
    PrimaryKeyConstraint("site", "id", name="credentials_pkey"),
)
Index("credentials_by_holder", credentials.c.site, credentials.c.holder)
Index("credentials_by_uid", credentials.c.site, credentials.c.uid)
Index("credentials_by_key_code", credentials.c.site, credentials.c.key_code)
Index("credentials_by_status_until", credentials.c.status, credentials.c.valid_until)

#: One row per site central issues for: its credential revision (+1 per change) and the digest of its set
#: (gateway.store.set_digest), both written in the transaction of the change. Changes of one site
#: serialise on this row (SELECT … FOR UPDATE).
credential_sites = Table(
    "credential_sites",
    metadata,
    Column("site", Text, primary_key=True),
    Column("revision", BigInteger, nullable=False, server_default="0"),
    Column("digest", Text, nullable=False),
    Column("changed_at", DateTime(timezone=True), nullable=False),
)

#: The outbox: each change as the SPEC §7 request that carries it to a gateway (`command`, `body` as JSON,
#: raw uids included), written in the transaction of the change. Every gateway of the site receives them in
#: revision order; `digest` is the site's set digest once this change is applied.
credential_changes = Table(
    "credential_changes",
    metadata,
    Column("site", Text, nullable=False),
    Column("revision", BigInteger, nullable=False),
    Column("command", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("digest", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("site", "revision", name="credential_changes_pkey"),
)

#: Per gateway: the site revision it has acknowledged with `ok` (null: never synced), the boot it did so in,
#: and what it said its set was (its version and digest). `resync` asks for a full snapshot (drift seen).
gateway_credentials = Table(
    "gateway_credentials",
    metadata,
    Column("site", Text, nullable=False),
    Column("gateway", Text, nullable=False),
    Column("revision", BigInteger),
    Column("boot_id", Text),
    Column("gateway_version", BigInteger),
    Column("gateway_digest", Text),
    Column("resync", Boolean, nullable=False, server_default="0"),
    Column("last_error", Text),
    Column("next_attempt_at", DateTime(timezone=True)),
    Column("synced_at", DateTime(timezone=True)),
    Column("claimed_by", Text),  # the worker pushing to it now (a lease, see central.credential_push)
    Column("claimed_until", DateTime(timezone=True)),
    PrimaryKeyConstraint("site", "gateway", name="gateway_credentials_pkey"),
)
