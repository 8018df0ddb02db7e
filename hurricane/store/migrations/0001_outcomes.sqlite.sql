-- The outcome model (DESIGN.md): messages, one delivery row per (message,
-- recipient), append-only events, returned messages and the suppression list.
-- Timestamps are float epoch seconds. AUTOINCREMENT so that a delivery id,
-- which goes into VERP tokens, is never reused after rows are deleted.

CREATE TABLE messages (
    message_pk INTEGER PRIMARY KEY AUTOINCREMENT,
    queue_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    mailing_id TEXT,
    message_id TEXT,
    header_message_id TEXT,
    size INTEGER NOT NULL,
    body BLOB NOT NULL,
    source TEXT NOT NULL,
    client TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL
);

CREATE TABLE deliveries (
    -- VERP tokens carry 52 bits of delivery id.
    delivery_id INTEGER PRIMARY KEY AUTOINCREMENT CHECK (delivery_id < 4503599627370496),
    message_pk INTEGER NOT NULL REFERENCES messages (message_pk) ON DELETE CASCADE,
    recipient TEXT NOT NULL,
    domain TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    hard BOOLEAN NOT NULL DEFAULT FALSE,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    -- 0 for new mail, 1 for retries: new mail is claimed first.
    priority INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until REAL,
    code INTEGER,
    status TEXT,
    text TEXT,
    remote_host TEXT,
    orcpt TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    delivered_at REAL,
    bounced_at REAL
);

CREATE TABLE bounces (
    bounce_id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL NOT NULL,
    mail_from TEXT NOT NULL,
    rcpt_to TEXT NOT NULL,
    -- From a verified VERP address; no foreign key: the delivery may be purged
    -- while the returned message is kept for replay.
    delivery_id INTEGER,
    client TEXT,
    raw BLOB NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    category TEXT,
    correlation TEXT,
    analysis TEXT,
    error TEXT
);

CREATE TABLE events (
    event_id INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id INTEGER NOT NULL REFERENCES deliveries (delivery_id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    at REAL NOT NULL,
    state TEXT,
    reason TEXT,
    hard BOOLEAN NOT NULL DEFAULT FALSE,
    code INTEGER,
    status TEXT,
    text TEXT,
    remote_host TEXT,
    remote_ip TEXT,
    tls TEXT,
    source TEXT,
    rule TEXT,
    duration REAL,
    bounce_id INTEGER REFERENCES bounces (bounce_id) ON DELETE SET NULL,
    feedback_type TEXT,
    correlation TEXT,
    idem_key TEXT
);

CREATE TABLE suppressions (
    address TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    source TEXT,
    event_id INTEGER,
    note TEXT,
    created_at REAL NOT NULL
);
