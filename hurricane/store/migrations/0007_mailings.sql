-- The report's mailings index and settling estimate (issue 18), bounded per
-- page view on a large store.
--
-- mailings: one row per mailing id (compared case-insensitively), newest
-- first by the creation of its first message. The report registers new
-- mailings by reading messages past a mark (report_marks, by message_pk:
-- only what was stored since the last look, plus a small margin), and keeps
-- each mailing's figures here (recipients by state, how many have settled,
-- when the rest settles), recomputed from its deliveries when they are
-- stale, so the index reads one row per mailing it shows.

CREATE TABLE mailings (
    mailing_key TEXT PRIMARY KEY,
    mailing_id TEXT NOT NULL,
    first_at DOUBLE PRECISION NOT NULL,
    computed_at DOUBLE PRECISION,
    last_at DOUBLE PRECISION,
    messages BIGINT,
    queued BIGINT,
    deferred BIGINT,
    delivered BIGINT,
    failed BIGINT,
    bounced BIGINT,
    complained BIGINT,
    expired BIGINT,
    suppressed BIGINT,
    settled BIGINT,
    settles_at DOUBLE PRECISION
);
CREATE INDEX mailings_newest ON mailings (first_at, mailing_key);

CREATE TABLE report_marks (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);

-- Registering mailings reads new messages by primary key without their
-- bodies (SQLite keeps created_at after the body in the row).
CREATE INDEX messages_mailing_discovery ON messages (message_pk, mailing_id, created_at)
    WHERE mailing_id IS NOT NULL;

-- The time from "accepted by the remote" to a late outcome (an NDR or a
-- complaint), most recent first, for the settling estimate: only those rows
-- are in this index, a few percent of the deliveries.
CREATE INDEX deliveries_late_outcomes ON deliveries (updated_at)
    WHERE state IN ('bounced', 'complained') AND delivered_at IS NOT NULL;

-- The mailings stored before this migration, and the mark past them.
INSERT INTO mailings (mailing_key, mailing_id, first_at)
SELECT lower(mailing_id), MIN(mailing_id), MIN(created_at) FROM messages
WHERE mailing_id IS NOT NULL GROUP BY lower(mailing_id);

INSERT INTO report_marks (name, value)
SELECT 'mailings', COALESCE(MAX(message_pk), 0) FROM messages;
