-- Message streams and scoped suppression (issue 20), DNS failures confirmed
-- over time (issue 18 item 9).
--
-- messages.stream: the stream a message was submitted to (NULL: the default
-- transactional stream).
--
-- scoped_suppressions: entries narrower than the global list (which stays in
-- suppressions): scope "stream:NAME" or "mailing:ID" for one address (folded),
-- or scope "domain" for every address of a domain (address = the domain),
-- added when a domain's failure to resolve was confirmed over time. An entry
-- past expires_at no longer matches.
--
-- dns_failures: when a domain was first and last seen not to resolve; a
-- second failure at least an hour after the first confirms it.

ALTER TABLE messages ADD COLUMN stream TEXT;

CREATE TABLE scoped_suppressions (
    scope TEXT NOT NULL,
    address TEXT NOT NULL,
    reason TEXT NOT NULL,
    source TEXT,
    event_id BIGINT,
    note TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION,
    PRIMARY KEY (address, scope)
);
CREATE INDEX scoped_suppressions_list ON scoped_suppressions (scope, address);

CREATE TABLE dns_failures (
    domain TEXT PRIMARY KEY,
    first_at DOUBLE PRECISION NOT NULL,
    last_at DOUBLE PRECISION NOT NULL,
    failures BIGINT NOT NULL
);
