-- Sending identity and transport security (issue 21).
--
-- events: every attempt records the local address it was sent from
-- (source_ip: a sending pool's address), the TLS policy that applied
-- (tls_policy_type 'sts' or 'no-policy-found', tls_policy_id the MTA-STS
-- mode and id) and the TLS result ('success' or an RFC 8460 result type).
-- Other events leave them NULL. The TLS report (hurricane/tlsrpt.py) reads
-- one day of attempts with a TLS result through events_tls_day, the report's
-- outcomes per source address a window of attempts through events_source_at.
--
-- mta_sts_policies: the last MTA-STS policy fetched per domain, kept until
-- expires_at (fetched_at + its max_age), refreshed in the background.
--
-- source_first_use: when an address of a pool first sent to a provider
-- (warm-up: its day 1), and what it sent on its current day of use
-- (count_day, count_sent), saved every few seconds: a restart keeps both.

ALTER TABLE events ADD COLUMN source_ip TEXT;
ALTER TABLE events ADD COLUMN tls_policy_type TEXT;
ALTER TABLE events ADD COLUMN tls_policy_id TEXT;
ALTER TABLE events ADD COLUMN tls_result TEXT;
CREATE INDEX events_tls_day ON events (at) WHERE tls_result IS NOT NULL;
CREATE INDEX events_source_at ON events (at) WHERE source_ip IS NOT NULL;

CREATE TABLE mta_sts_policies (
    domain TEXT PRIMARY KEY,
    policy_id TEXT NOT NULL,
    mode TEXT NOT NULL,
    mx TEXT NOT NULL,
    max_age DOUBLE PRECISION NOT NULL,
    policy TEXT NOT NULL,
    fetched_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE source_first_use (
    address TEXT NOT NULL,
    provider TEXT NOT NULL,
    first_at DOUBLE PRECISION NOT NULL,
    count_day INTEGER NOT NULL DEFAULT 0,
    count_sent BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (address, provider)
);
