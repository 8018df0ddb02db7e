"""Tests for hurricane.inbound.processor and hurricane.inbound.correlate."""
