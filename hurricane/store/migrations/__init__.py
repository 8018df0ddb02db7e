"""Numbered schema migrations, shipped as package data (see hurricane.store.migrate)."""
