"""Tests of the operations features: accounting log, webhooks, SSH manhole."""
