-- Closed-loop delivery (issue 19).
--
-- provider_state: each provider's adaptive limits, shared by the nodes of one
-- database (the newest action wins) and kept across restarts.
-- policy_events: every automatic (or operator) action on a provider or a
-- mailing: the limit before and after, the cause, the evidence counts.
-- policy_nodes: the nodes alive, so each takes its share of a provider's rate.
-- mailing_breakers: a mailing whose circuit breaker tripped (held), was
-- released (the breaker stays off for it) or cancelled.
-- Two new delivery states, held and cancelled: the mailings roll-up keeps a
-- count column per state.

CREATE TABLE provider_state (
    provider TEXT PRIMARY KEY,
    rate DOUBLE PRECISION NOT NULL,
    ceiling DOUBLE PRECISION NOT NULL,
    paused_until DOUBLE PRECISION NOT NULL DEFAULT 0,
    suspended_until DOUBLE PRECISION NOT NULL DEFAULT 0,
    cause TEXT,
    updated_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE policy_events (
    policy_event_id BIGSERIAL PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL,
    scope TEXT NOT NULL,
    subject TEXT NOT NULL,
    action TEXT NOT NULL,
    cause TEXT NOT NULL,
    before TEXT NOT NULL,
    after TEXT NOT NULL,
    evidence TEXT NOT NULL DEFAULT '{}',
    until DOUBLE PRECISION,
    node TEXT
);
CREATE INDEX policy_events_subject ON policy_events (scope, subject, policy_event_id);

CREATE TABLE policy_nodes (
    node_id TEXT PRIMARY KEY,
    seen_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE mailing_breakers (
    mailing_key TEXT PRIMARY KEY,
    mailing_id TEXT NOT NULL,
    state TEXT NOT NULL,
    cause TEXT NOT NULL,
    evidence TEXT NOT NULL DEFAULT '{}',
    held_at DOUBLE PRECISION NOT NULL,
    held INTEGER NOT NULL DEFAULT 0,
    changed_at DOUBLE PRECISION NOT NULL
);

ALTER TABLE mailings ADD COLUMN held BIGINT;
ALTER TABLE mailings ADD COLUMN cancelled BIGINT;

-- The late outcomes of recent deliveries, per provider (domain, MX host).
CREATE INDEX deliveries_delivered_at ON deliveries (delivered_at)
    WHERE delivered_at IS NOT NULL;
