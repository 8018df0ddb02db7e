"""SQL text shared by the SQLite and PostgreSQL engines, and their differences.

Every statement here is written once with ``?`` placeholders (SQLite's
paramstyle) and converted with :meth:`Dialect.convert` for psycopg2's
``%s``. The few places where the dialects really differ (row locks, catalog
look-ups, migration locks) are attributes of :class:`Dialect`, in the spirit
of Synapse's ``synapse/storage/engines``. No SQL lives outside this package.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from hurricane.outcome import (
    PENDING_STATES,
    STATES,
    BounceStatus,
    EventKind,
    Reason,
    Source,
    State,
    sql_list,
)

__all__ = ["Dialect", "SQLITE", "POSTGRES", "placeholders", "split_statements"]


def _lit(word: Enum) -> str:
    """One vocabulary word as a SQL literal (``'queued'``).

    The statements below are text built once, at import: the words of
    :mod:`hurricane.outcome` go in as literals (never user input; none has a
    quote), so that they are spelled only in the enums and the text stays
    what the partial indexes of the migrations name.
    """
    return sql_list([word])


#: ``'queued', 'deferred'``: the pending states, as 0002/0003's partial
#: indexes name them (a query must repeat the predicate to use the index).
_PENDING = sql_list(PENDING_STATES)


@dataclass(frozen=True)
class Dialect:
    """What differs between the engines, kept small and explicit."""

    #: Engine name, also the suffix of engine-specific migration files.
    name: str
    #: DB-API paramstyle marker for one parameter.
    marker: str
    #: Appended to a SELECT that must lock the rows it reads ("" when the
    #: engine serialises writers anyway, as SQLite does).
    for_update: str
    #: Appended to the claim sub-select so that concurrent claimers skip rows
    #: another node is taking instead of waiting for them.
    skip_locked: str
    #: SELECT returning one row when the table named by the parameter exists.
    table_exists: str
    #: Statement serialising migrations between nodes ("" when not needed).
    migration_lock: str
    #: Integer part of a non-negative expression (``{}`` is the expression):
    #: SQLite's CAST truncates, PostgreSQL's rounds, hence FLOOR there.
    floor: str = "CAST({} AS INTEGER)"
    #: Each statement is a network round trip (PostgreSQL): the hot write
    #: paths send fewer, larger statements there, in that engine's syntax
    #: (INSERT ... RETURNING inside WITH: :func:`enqueue_cte`; UPDATE ...
    #: FROM VALUES: :func:`record_attempts_from_values`).
    round_trips: bool = False

    def convert(self, sql: str) -> str:
        """Turn ``?`` placeholders into this dialect's marker.

        Args:
            sql: statement text written with ``?`` placeholders (no ``?`` or
                ``%`` inside string literals: none of ours have any).

        Returns:
            The statement in this engine's paramstyle.
        """
        if self.marker == "?":
            return sql
        return sql.replace("%", "%%").replace("?", self.marker)


SQLITE = Dialect(
    name="sqlite",
    marker="?",
    for_update="",
    skip_locked="",
    table_exists="SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
    migration_lock="",
)

POSTGRES = Dialect(
    name="postgres",
    marker="%s",
    for_update=" FOR UPDATE",
    skip_locked=" FOR UPDATE SKIP LOCKED",
    # to_regclass honours search_path, so per-test schemas work.
    table_exists="SELECT 1 WHERE to_regclass(?) IS NOT NULL",
    # Two nodes starting at once must not both apply a migration.
    migration_lock="SELECT pg_advisory_xact_lock(7305125671)",
    floor="CAST(FLOOR({}) AS BIGINT)",
    round_trips=True,
)


def placeholders(n: int) -> str:
    """``?, ?, ...`` for an ``IN (...)`` list of ``n`` parameters (n >= 1)."""
    return ", ".join("?" * n)


_COMMENT = re.compile(r"--[^\n]*")


def split_statements(script: str) -> list[str]:
    """Split a migration script into statements.

    Our migrations never put ``;`` or ``--`` inside string literals, so a
    plain split is enough; it lets both engines run each statement inside
    our own transaction (``sqlite3.executescript`` would commit).

    Args:
        script: the text of a migration file.

    Returns:
        The non-empty statements, without comments.
    """
    text = _COMMENT.sub("", script)
    return [s.strip() for s in text.split(";") if s.strip()]


# -- migrations bookkeeping (Synapse style) ---------------------------------

CREATE_SCHEMA_VERSION = """
CREATE TABLE IF NOT EXISTS schema_version (
    lock CHAR(1) NOT NULL DEFAULT 'X' UNIQUE CHECK (lock = 'X'),
    version INTEGER NOT NULL
)"""

CREATE_APPLIED_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS applied_migrations (
    version INTEGER NOT NULL,
    name TEXT NOT NULL PRIMARY KEY,
    applied_at DOUBLE PRECISION NOT NULL
)"""

SELECT_APPLIED = "SELECT name FROM applied_migrations"
SELECT_APPLIED_ONE = "SELECT 1 FROM applied_migrations WHERE name = ?"
INSERT_APPLIED = "INSERT INTO applied_migrations (version, name, applied_at) VALUES (?, ?, ?)"
SELECT_SCHEMA_VERSION = "SELECT version FROM schema_version"
DELETE_SCHEMA_VERSION = "DELETE FROM schema_version"
INSERT_SCHEMA_VERSION = "INSERT INTO schema_version (lock, version) VALUES ('X', ?)"

# -- submission -------------------------------------------------------------

SELECT_SUPPRESSED_IN = "SELECT address, reason FROM suppressions WHERE address IN ({})"

# ON CONFLICT DO NOTHING: a queue id collision returns no row and the caller
# draws another id, without aborting the (PostgreSQL) transaction.
_MESSAGE_VALUES = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_MESSAGES = """
INSERT INTO messages (queue_id, sender, mailing_id, message_id, header_message_id,
                      size, body, source, client, metadata, created_at, stream)
VALUES {}
ON CONFLICT (queue_id) DO NOTHING
RETURNING message_pk, queue_id"""


def insert_messages(n: int) -> str:
    """A multi-row INSERT of ``n`` messages returning (message_pk, queue_id)."""
    return _INSERT_MESSAGES.format(", ".join([_MESSAGE_VALUES] * n))


DELIVERY_INSERT_COLUMNS = (
    "message_pk", "recipient", "domain", "state", "reason", "next_attempt_at",
    "orcpt", "created_at", "updated_at", "text",
)

#: The text of a recipient's ``suppressed`` event when the global list
#: matched (scoped entries: :func:`hurricane.store.suppression.entry_text`).
GLOBAL_ENTRY_TEXT = "suppression entry: global"

# One statement writes the first event of every recipient of a message.
_FIRST_EVENT_KIND = (
    f"CASE WHEN state = {_lit(State.suppressed)} THEN {_lit(EventKind.suppressed)} "
    f"ELSE {_lit(EventKind.queued)} END"
)

INSERT_ENQUEUE_EVENTS = f"""
INSERT INTO events (delivery_id, kind, at, state, reason, text, source)
SELECT delivery_id, {_FIRST_EVENT_KIND},
       created_at, state, reason, text, {_lit(Source.local)}
FROM deliveries WHERE message_pk IN ({{}}) ORDER BY delivery_id"""

# The whole of an enqueue in one statement where statements cost round trips
# (Dialect.round_trips, PostgreSQL): suppression look-up, messages, deliveries in
# recipient order, their first events; it returns one row per delivery.
# A message whose queue id collided is skipped (ON CONFLICT DO NOTHING)
# with its recipients, and drawn again by the caller.
_ENQUEUE_CTE = f"""
WITH s AS (SELECT address, reason FROM suppressions WHERE address IN ({{keys}})),
x AS (SELECT scope, address, reason FROM scoped_suppressions WHERE address IN ({{keys}})
      AND (expires_at IS NULL OR expires_at > CAST(? AS DOUBLE PRECISION))),
m AS (
    INSERT INTO messages (queue_id, sender, mailing_id, message_id, header_message_id,
                          size, body, source, client, metadata, created_at, stream)
    VALUES {{messages}}
    ON CONFLICT (queue_id) DO NOTHING
    RETURNING message_pk, queue_id),
r (queue_id, ord, recipient, domain, key, orcpt, now, stream_scope, mailing_scope)
    AS (VALUES {{recipients}}),
t AS (
    SELECT r.*, COALESCE(s.reason, y.reason) AS stop,
           CASE WHEN s.reason IS NOT NULL THEN '{GLOBAL_ENTRY_TEXT}'
                WHEN y.scope = 'domain' THEN 'suppression entry: domain ' || y.address
                WHEN y.scope IS NOT NULL THEN 'suppression entry: ' || y.scope END AS why
    FROM r LEFT JOIN s ON s.address = r.key
    LEFT JOIN LATERAL (
        SELECT x.scope, x.address, x.reason FROM x
        WHERE (x.address = r.key AND x.scope IN (r.stream_scope, r.mailing_scope))
           OR (x.scope = 'domain' AND x.address = r.domain)
        ORDER BY CASE WHEN x.scope = 'domain' THEN 1 ELSE 0 END LIMIT 1) y ON TRUE),
d AS (
    INSERT INTO deliveries (message_pk, recipient, domain, state, reason, next_attempt_at,
                            orcpt, created_at, updated_at, text)
    SELECT m.message_pk, t.recipient, t.domain,
           CASE WHEN t.stop IS NULL THEN {_lit(State.queued)} ELSE {_lit(State.suppressed)} END,
           t.stop,
           CASE WHEN t.stop IS NULL THEN CAST(t.now AS DOUBLE PRECISION) END,
           t.orcpt, CAST(t.now AS DOUBLE PRECISION), CAST(t.now AS DOUBLE PRECISION), t.why
    FROM t JOIN m ON m.queue_id = t.queue_id
    ORDER BY m.message_pk, CAST(t.ord AS INTEGER)
    RETURNING delivery_id, message_pk, state, reason, created_at, text),
e AS (
    INSERT INTO events (delivery_id, kind, at, state, reason, text, source)
    SELECT delivery_id, {_FIRST_EVENT_KIND},
           created_at, state, reason, text, {_lit(Source.local)}
    FROM d ORDER BY delivery_id)
SELECT d.delivery_id, m.queue_id, d.message_pk, d.state, d.reason
FROM d JOIN m ON m.message_pk = d.message_pk
ORDER BY d.delivery_id"""


def enqueue_cte(keys: int, messages: int, recipients: int) -> str:
    """:data:`_ENQUEUE_CTE` for ``keys`` suppression keys (folded addresses and
    their domains, twice: the global and the scoped look-up, then the time),
    ``messages`` messages (12 parameters each) and ``recipients`` recipients
    (9 each: queue id, position, address, domain, folded key, ORCPT, time,
    the stream's scope, the mailing's scope or NULL)."""
    return _ENQUEUE_CTE.format(
        keys=placeholders(keys),
        messages=", ".join([_MESSAGE_VALUES] * messages),
        recipients=", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * recipients),
    )


SELECT_DELIVERY_IDS_OF_MESSAGES = (
    "SELECT delivery_id, message_pk FROM deliveries WHERE message_pk IN ({})"
    " ORDER BY delivery_id"
)

# -- delivery ---------------------------------------------------------------

DELIVERY_COLUMNS = """
d.delivery_id, d.message_pk, m.queue_id, m.sender, d.recipient, d.domain, d.state,
d.reason, d.hard, d.attempts, d.next_attempt_at, d.code, d.status, d.text,
d.remote_host, m.mailing_id, m.message_id, m.header_message_id, d.orcpt,
d.created_at, d.updated_at, d.delivered_at, d.bounced_at, d.lease_owner, d.lease_until,
m.stream"""

SELECT_DELIVERIES = (
    "SELECT" + DELIVERY_COLUMNS
    + "\nFROM deliveries d JOIN messages m ON m.message_pk = d.message_pk"
)

# The CTE reads the due index in claim order and is MATERIALIZED: written as
# a plain "IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)", PostgreSQL may run
# the sub-select more than once and lease more than n rows (seen in tests).
# The outer WHERE repeats the lease test so that, on PostgreSQL under READ
# COMMITTED, a row another node leased meanwhile is re-checked on its latest
# version and left alone.
CLAIM_DUE = f"""
WITH due AS MATERIALIZED (
    SELECT delivery_id FROM deliveries
    WHERE state IN ({_PENDING}) AND next_attempt_at <= ?
      AND (lease_until IS NULL OR lease_until <= ?){{domains}}
    ORDER BY priority, next_attempt_at, delivery_id
    LIMIT ?{{skip_locked}}
)
UPDATE deliveries SET lease_owner = ?, lease_until = ?
WHERE delivery_id IN (SELECT delivery_id FROM due)
  AND state IN ({_PENDING}) AND (lease_until IS NULL OR lease_until <= ?)
RETURNING delivery_id"""

RELEASE = """
UPDATE deliveries SET lease_owner = NULL, lease_until = NULL
WHERE delivery_id IN ({}) AND lease_owner = ?"""

RELEASE_OWNER = """
UPDATE deliveries SET lease_owner = NULL, lease_until = NULL
WHERE lease_owner = ?"""

SELECT_BODY = "SELECT body FROM messages WHERE message_pk = ?"

#: The deliveries a batch of returned messages' events name, read (and, on
#: PostgreSQL, locked, in id order) once for the batch: ``{marks}`` is an
#: ``IN`` list.
SELECT_BOUNCE_TARGETS_FOR_WRITE = (
    "SELECT delivery_id, recipient, state, attempts FROM deliveries"
    " WHERE delivery_id IN ({marks}) ORDER BY delivery_id{for_update}"
)

EVENT_INSERT_COLUMNS = (
    "delivery_id", "kind", "at", "state", "reason", "hard", "code", "status", "text",
    "remote_host", "remote_ip", "tls", "source", "rule", "duration", "bounce_id",
    "feedback_type", "correlation", "idem_key", "note",
)

INSERT_EVENT = (
    "INSERT INTO events (" + ", ".join(EVENT_INSERT_COLUMNS) + ")\nVALUES ("
    + placeholders(len(EVENT_INSERT_COLUMNS)) + ")"
)

# Idempotent variant: the conflict target names the partial unique index.
INSERT_EVENT_IDEMPOTENT = (
    INSERT_EVENT
    + "\nON CONFLICT (delivery_id, idem_key) WHERE idem_key IS NOT NULL DO NOTHING"
    + "\nRETURNING event_id"
)

INSERT_EVENT_RETURNING = INSERT_EVENT + "\nRETURNING event_id"

_EVENT_VALUES = "(" + placeholders(len(EVENT_INSERT_COLUMNS)) + ")"


def insert_events_returning(n: int) -> str:
    """A multi-row INSERT of ``n`` events returning their event ids.

    Ids are drawn in row order within the statement, so the sorted ids map
    back to the rows by position (RETURNING itself promises no order).
    """
    return ("INSERT INTO events (" + ", ".join(EVENT_INSERT_COLUMNS) + ")\nVALUES "
            + ", ".join([_EVENT_VALUES] * n) + "\nRETURNING event_id")


#: An attempt's event also records its transport facts (migration 0010, issue 21)
#: and the classifier's explanation of a server's refusal (migration 0011).
ATTEMPT_EVENT_COLUMNS = (*EVENT_INSERT_COLUMNS, "source_ip", "tls_policy_type", "tls_policy_id",
                         "tls_result", "explanation")
_ATTEMPT_VALUES = "(" + placeholders(len(ATTEMPT_EVENT_COLUMNS)) + ")"


def insert_attempt_events_returning(n: int) -> str:
    """:func:`insert_events_returning` for attempts, with :data:`ATTEMPT_EVENT_COLUMNS`."""
    return ("INSERT INTO events (" + ", ".join(ATTEMPT_EVENT_COLUMNS) + ")\nVALUES "
            + ", ".join([_ATTEMPT_VALUES] * n) + "\nRETURNING event_id")


# The recipients of deliveries about to be written, locked (PostgreSQL) in id
# order so that two writers never wait on each other in a cycle.
SELECT_DELIVERIES_FOR_WRITE = (
    "SELECT delivery_id, recipient FROM deliveries WHERE delivery_id IN ({marks})"
    " ORDER BY delivery_id{for_update}"
)

# Moves the state only while the row is pending; the lease condition is
# appended when the writer names itself.
RECORD_ATTEMPT = f"""
UPDATE deliveries SET state = ?, reason = ?, hard = ?, attempts = attempts + 1,
    code = ?, status = ?, text = ?, remote_host = ?, next_attempt_at = ?,
    priority = ?, lease_owner = NULL, lease_until = NULL, updated_at = ?,
    delivered_at = COALESCE(?, delivered_at)
WHERE delivery_id = ? AND state IN ({_PENDING})"""

LEASE_HELD_BY = " AND lease_owner = ?"

# RECORD_ATTEMPT for many results in one statement (Dialect.round_trips):
# each VALUES row carries RECORD_ATTEMPT's parameters, in its order, then
# the lease holder (NULL: no lease condition). The casts type the columns
# that may be NULL in every row.
_RECORD_ATTEMPTS_FROM_VALUES = f"""
UPDATE deliveries AS d SET state = v.state, reason = v.reason,
    hard = CAST(v.hard AS BOOLEAN), attempts = d.attempts + 1,
    code = CAST(v.code AS INTEGER), status = v.status, text = v.text,
    remote_host = v.remote_host,
    next_attempt_at = CAST(v.next_attempt_at AS DOUBLE PRECISION),
    priority = CAST(v.priority AS INTEGER), lease_owner = NULL, lease_until = NULL,
    updated_at = CAST(v.at AS DOUBLE PRECISION),
    delivered_at = COALESCE(CAST(v.delivered_at AS DOUBLE PRECISION), d.delivered_at)
FROM (VALUES {{}}) AS v (state, reason, hard, code, status, text, remote_host,
                       next_attempt_at, priority, at, delivered_at, delivery_id, owner)
WHERE d.delivery_id = CAST(v.delivery_id AS BIGINT) AND d.state IN ({_PENDING})
  AND (v.owner IS NULL OR d.lease_owner = v.owner)"""


def record_attempts_from_values(n: int) -> str:
    """:data:`_RECORD_ATTEMPTS_FROM_VALUES` for ``n`` results (13 parameters each)."""
    return _RECORD_ATTEMPTS_FROM_VALUES.format(", ".join(["(" + ", ".join(["?"] * 13) + ")"] * n))


INSERT_SUPPRESSION = """
INSERT INTO suppressions (address, reason, source, event_id, note, created_at)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (address) DO NOTHING
RETURNING address"""

RETRY_EVENTS = f"""
INSERT INTO events (delivery_id, kind, at, state, source)
SELECT delivery_id, {_lit(EventKind.retry)}, ?, state, {_lit(Source.operator)}
FROM deliveries WHERE {{where}}"""

RETRY_NOW = "UPDATE deliveries SET next_attempt_at = ?, updated_at = ? WHERE {where}"

# -- returned mail ----------------------------------------------------------

INSERT_BOUNCE = f"""
INSERT INTO bounces (received_at, mail_from, rcpt_to, delivery_id, client, raw, status)
VALUES (?, ?, ?, ?, ?, ?, {_lit(BounceStatus.pending)})
RETURNING bounce_id"""

SELECT_PENDING_BOUNCES = f"""
SELECT bounce_id FROM bounces WHERE status = {_lit(BounceStatus.pending)}
ORDER BY received_at, bounce_id LIMIT ?"""

SELECT_BOUNCE = """
SELECT bounce_id, raw, mail_from, rcpt_to, received_at, delivery_id, status,
       category, correlation, purged_at
FROM bounces WHERE """

SELECT_BOUNCE_ANALYSIS = "SELECT analysis FROM bounces WHERE bounce_id = ?"

BOUNCE_RECIPIENT_COLUMNS = ("bounce_id", "position", "rcpt_to", "delivery_id", "per_message")

SELECT_BOUNCE_RECIPIENTS = """
SELECT bounce_id, position, rcpt_to, delivery_id, per_message FROM bounce_recipients
WHERE bounce_id IN ({}) ORDER BY bounce_id, position"""

# Retention: drop the raw bytes of finished (analyzed or failed) messages
# received before a time, oldest first, a bounded number per statement; the
# outer condition is checked again on the row another node may have purged.
PURGE_BOUNCES = f"""
UPDATE bounces SET raw = ?, purged_at = ?
WHERE bounce_id IN (
    SELECT bounce_id FROM bounces
    WHERE status <> {_lit(BounceStatus.pending)} AND purged_at IS NULL AND received_at < ?
    ORDER BY received_at LIMIT ?)
  AND status <> {_lit(BounceStatus.pending)} AND purged_at IS NULL"""

MARK_BOUNCE_ANALYZED = f"""
UPDATE bounces SET status = {_lit(BounceStatus.analyzed)}, category = ?, correlation = ?,
       analysis = ?, error = NULL
WHERE bounce_id = ?"""

MARK_BOUNCE_FAILED = (
    f"UPDATE bounces SET status = {_lit(BounceStatus.failed)}, error = ? WHERE bounce_id = ?"
)

MOVE_TO_BOUNCED = f"""
UPDATE deliveries SET state = {_lit(State.bounced)}, reason = ?, hard = ?, code = ?, status = ?,
    text = ?, remote_host = COALESCE(?, remote_host), bounced_at = ?, updated_at = ?,
    next_attempt_at = NULL, lease_owner = NULL, lease_until = NULL
WHERE delivery_id = ? AND state = ?"""

MOVE_TO_COMPLAINED = f"""
UPDATE deliveries SET state = {_lit(State.complained)}, reason = ?, hard = ?, updated_at = ?,
    next_attempt_at = NULL, lease_owner = NULL, lease_until = NULL
WHERE delivery_id = ? AND state = ?"""

# -- reading ----------------------------------------------------------------

SELECT_EVENTS = """
SELECT event_id, delivery_id, kind, at, state, reason, hard, code, status, text,
       remote_host, remote_ip, tls, source, rule, duration, bounce_id, feedback_type,
       correlation, note, source_ip, tls_policy_type, tls_policy_id, tls_result, explanation
FROM events WHERE delivery_id = ? ORDER BY event_id"""

# Event feed (webhooks, accounting log): keyset on the events primary key.
SELECT_EVENTS_AFTER = """
SELECT e.event_id, e.delivery_id, e.kind, e.at, e.state, e.reason, e.hard, e.code,
       e.status, e.text, e.remote_host, e.remote_ip, e.tls, e.source, e.rule, e.duration,
       e.bounce_id, e.feedback_type, e.correlation, e.note,
       m.queue_id, d.recipient, m.sender, m.mailing_id, m.message_id, m.header_message_id,
       d.state, d.created_at, e.source_ip, e.tls_policy_type, e.tls_policy_id, e.tls_result
FROM events e
JOIN deliveries d ON d.delivery_id = e.delivery_id
JOIN messages m ON m.message_pk = d.message_pk
WHERE e.event_id > ?
ORDER BY e.event_id LIMIT ?"""

SELECT_OUTCOMES = """
SELECT m.queue_id, d.delivery_id, d.recipient, d.state, d.reason, d.hard, d.code,
       d.status, d.text, d.attempts, m.mailing_id, m.message_id, d.created_at,
       d.updated_at, d.remote_host, d.delivered_at, d.bounced_at, m.stream,
       (SELECT e.source_ip FROM events e WHERE e.delivery_id = d.delivery_id
        AND e.source_ip IS NOT NULL ORDER BY e.event_id DESC LIMIT 1)
FROM deliveries d JOIN messages m ON m.message_pk = d.message_pk
WHERE d.delivery_id > ?{filters}
ORDER BY d.delivery_id LIMIT ?"""

# -- report reads (each bounded by LIMIT and served by an index) -------------

#: Every state's text, in the order of :data:`hurricane.outcome.STATES`
#: (TOP_DOMAINS has one column per state, in this order).
ALL_STATES = tuple(s.value for s in STATES)

# Deliveries created in a window, per time bucket and current state.
TIMESERIES = """
SELECT {bucket} AS bucket, state, COUNT(*) FROM deliveries
WHERE {where}
GROUP BY 1, state ORDER BY 1 LIMIT ?"""

TOP_DOMAINS = (
    "SELECT domain, COUNT(*), "
    + ", ".join(f"SUM(CASE WHEN state = {_lit(s)} THEN 1 ELSE 0 END)" for s in STATES)
    + "\nFROM deliveries WHERE {where}\nGROUP BY domain ORDER BY 2 DESC, domain LIMIT ?"
)

BOUNCE_REASONS = f"""
SELECT COALESCE(reason, {_lit(Reason.undefined)}), state, COUNT(*) FROM deliveries
WHERE {{where}} AND state IN ({sql_list([State.failed, State.bounced])})
GROUP BY 1, state ORDER BY 3 DESC LIMIT ?"""

DEFERRED_BY_DOMAIN = f"""
SELECT domain, COUNT(*), MIN(created_at), MIN(next_attempt_at), MAX(updated_at)
FROM deliveries WHERE state = {_lit(State.deferred)}
GROUP BY domain ORDER BY 2 DESC, domain LIMIT ?"""

OLDEST_PENDING = f"""
SELECT MIN(created_at) FROM deliveries WHERE state IN ({_PENDING})"""

MAILING_MESSAGES = """
SELECT COUNT(DISTINCT d.message_pk)
FROM messages m JOIN deliveries d ON d.message_pk = m.message_pk
WHERE lower(m.mailing_id) = lower(?)"""

MAILING_COUNTS = """
SELECT d.state, d.reason, COUNT(*)
FROM messages m JOIN deliveries d ON d.message_pk = m.message_pk
WHERE lower(m.mailing_id) = lower(?)
GROUP BY d.state, d.reason"""

SELECT_MESSAGE = """
SELECT message_pk, queue_id, sender, mailing_id, message_id, header_message_id, size,
       source, client, metadata, created_at
FROM messages WHERE queue_id = ?"""

SUMMARY_COUNTS = """
SELECT state, reason, COUNT(*) FROM deliveries WHERE {where} GROUP BY state, reason"""

SUMMARY_MESSAGES = "SELECT COUNT(DISTINCT message_pk) FROM deliveries WHERE {where}"

QUEUE_DEPTH = f"""
SELECT state, COUNT(*) FROM deliveries WHERE state IN ({_PENDING}) GROUP BY state"""

# -- suppression ------------------------------------------------------------

DELETE_SUPPRESSION = "DELETE FROM suppressions WHERE address = ? RETURNING address"

SUPPRESSION_COLUMNS = "address, reason, created_at, source, event_id, note"

SELECT_SUPPRESSION = "SELECT " + SUPPRESSION_COLUMNS + " FROM suppressions WHERE address = ?"

SELECT_SUPPRESSIONS = (
    "SELECT " + SUPPRESSION_COLUMNS + " FROM suppressions WHERE address > ?"
    " ORDER BY address LIMIT ?"
)
