"""Tests of hurricane.outbound: claim loop, pool, dialer, client, MX, retries, DKIM."""
