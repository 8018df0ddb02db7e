-- One stored returned message per SMTP transaction (issue 23): the raw bytes
-- once in bounces, every envelope recipient here. delivery_id comes from a
-- VERP token verified at RCPT time; per_message says that token was shared by
-- several recipients of one of our transactions (it proves the message, not
-- the delivery). No foreign key to deliveries: one may be purged while the
-- returned message is kept.

CREATE TABLE bounce_recipients (
    bounce_id INTEGER NOT NULL REFERENCES bounces (bounce_id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    rcpt_to TEXT NOT NULL,
    delivery_id INTEGER,
    per_message BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (bounce_id, position)
);

-- Messages stored before: one recipient each, the one on their row.
INSERT INTO bounce_recipients (bounce_id, position, rcpt_to, delivery_id, per_message)
SELECT bounce_id, 0, rcpt_to, delivery_id, FALSE FROM bounces;

-- Retention: when the raw bytes of an analyzed message were dropped
-- ([bounce] retention); NULL while they are kept.
ALTER TABLE bounces ADD COLUMN purged_at REAL;

-- The purge reads the oldest finished messages that still hold their bytes.
CREATE INDEX bounces_purge ON bounces (received_at)
    WHERE status <> 'pending' AND purged_at IS NULL;
