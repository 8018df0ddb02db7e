-- Indexes shared by both engines (expression and partial indexes exist in
-- SQLite >= 3.9 and PostgreSQL alike).

CREATE UNIQUE INDEX messages_queue_id ON messages (queue_id);
-- Identifiers are looked up case-insensitively: MTAs may fold the case of
-- what comes back in a VERP address or a header.
CREATE INDEX messages_mailing_id ON messages (lower(mailing_id));
CREATE INDEX messages_message_id ON messages (lower(message_id));
CREATE INDEX messages_header_message_id ON messages (lower(header_message_id));

-- Claiming due work: only pending rows are in this index, in claim order
-- (new mail first, then by due time), so claim_due reads it front to back.
CREATE INDEX deliveries_due ON deliveries (priority, next_attempt_at, delivery_id)
    WHERE state IN ('queued', 'deferred');
CREATE INDEX deliveries_message ON deliveries (message_pk);
CREATE INDEX deliveries_recipient ON deliveries (lower(recipient));
CREATE INDEX deliveries_domain ON deliveries (domain);
CREATE INDEX deliveries_created ON deliveries (created_at);

CREATE INDEX events_delivery ON events (delivery_id, event_id);
-- The same returned message recorded twice is recorded once.
CREATE UNIQUE INDEX events_idem ON events (delivery_id, idem_key) WHERE idem_key IS NOT NULL;

CREATE INDEX bounces_pending ON bounces (received_at, bounce_id) WHERE status = 'pending';
