"""Tests of the delivery scheduler, MX resolution, retries, message preparation and DKIM."""
