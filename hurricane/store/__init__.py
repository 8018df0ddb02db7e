"""Storage: the IOutcomeStore interface and its engines (memory, SQLite, PostgreSQL).

Build a store with :func:`hurricane.store.factory.create_store`; no SQL lives
outside this package.
"""

__all__: list[str] = []
