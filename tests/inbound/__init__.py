"""Tests of hurricane.inbound: returns server, policy, processor, correlation, workers."""
