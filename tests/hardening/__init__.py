"""Durability, fault and attack-surface tests against real Hurricane processes on loopback."""
