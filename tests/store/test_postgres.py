"""The contract and multi-node behaviour on PostgreSQL.

The server comes from ``HURRICANE_TEST_POSTGRES`` (a DSN such as
``postgresql://postgres@127.0.0.1:5432/test``). Unset, these tests skip;
with ``HURRICANE_REQUIRE_POSTGRES=1`` an unset DSN is an error instead.
Each test runs in a schema of its own (``search_path``), dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import psycopg2
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, TestCase
from txpostgres import txpostgres

from hurricane.model import AttemptResult, NewMessage, NewRecipient, State
from hurricane.store.factory import create_store, redact_url
from hurricane.store.faults import fail_statements
from hurricane.store.postgres import PostgresStore

from .contract import T0, StoreContractMixin, message

DSN = os.environ.get("HURRICANE_TEST_POSTGRES", "")


def require_postgres() -> str:
    """The test DSN; skip (or fail, under HURRICANE_REQUIRE_POSTGRES=1) without one."""
    if DSN:
        return DSN
    if os.environ.get("HURRICANE_REQUIRE_POSTGRES") == "1":
        raise RuntimeError("HURRICANE_REQUIRE_POSTGRES=1 but HURRICANE_TEST_POSTGRES is unset")
    raise SkipTest("PostgreSQL tests need HURRICANE_TEST_POSTGRES=postgresql://user@host:port/db")


class PostgresMixin:
    """A fresh schema per test and stores living in it."""

    addCleanup: Any

    def make_schema(self) -> None:
        """Create this test's schema and register its removal."""
        dsn = require_postgres()
        self.schema = "hurricane_test_" + uuid.uuid4().hex[:12]
        self.admin = psycopg2.connect(dsn)
        self.admin.autocommit = True
        with self.admin.cursor() as cur:
            cur.execute(f"CREATE SCHEMA {self.schema}")
        self.addCleanup(self.drop_schema)

    def drop_schema(self) -> None:
        """Drop this test's schema (runs after the stores are closed)."""
        with self.admin.cursor() as cur:
            cur.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
        self.admin.close()

    def admin_sql(self, statement: str) -> list[Any]:
        """Run SQL in this test's schema on a separate connection."""
        with self.admin.cursor() as cur:
            cur.execute(f"SET search_path TO {self.schema}")
            cur.execute(statement)
            return cur.fetchall() if cur.description else []

    async def open_store(self, **kw: Any) -> PostgresStore:
        """An opened store on this test's schema, closed by a cleanup."""
        store = PostgresStore(DSN, reactor, connect_kwargs={
            "options": f"-c search_path={self.schema}",
            "application_name": f"hurricane-test-{self.schema}"}, **kw)
        await store.open()
        self.addCleanup(lambda: Deferred.fromCoroutine(store.close()))
        return store


class PostgresStoreContractTests(PostgresMixin, StoreContractMixin, TestCase):
    """PostgresStore passes the IOutcomeStore contract."""

    async def make_store(self) -> Any:
        self.make_schema()
        return await self.open_store()

    async def reopen(self, store: Any) -> Any:
        await store.close()
        return await self.open_store()

    async def break_store(self, store: Any) -> None:
        self.admin_sql("DROP TABLE events, deliveries, messages CASCADE")

    def make_unreachable_store(self) -> Any:
        # Port 1 on loopback: connection refused at once.
        return create_store("postgresql://hurricane:secret@127.0.0.1:1/nothing", reactor)

    async def test_unreachable_url_redacted(self) -> None:
        """The error of an unreachable store names the URL without its password."""
        store = self.make_unreachable_store()
        error = await self.assertUnavailable(store.open())
        self.assertNotIn("secret", str(error))
        self.assertIn(redact_url("postgresql://hurricane:secret@127.0.0.1:1/nothing"),
                      str(error))


class PostgresNodesTests(PostgresMixin, TestCase):
    """Several nodes on one database; connections that die."""

    async def setUp(self) -> None:
        self.make_schema()
        self.node1 = await self.open_store(pool_size=3)
        self.node2 = await self.open_store(pool_size=3)

    async def test_concurrent_claims_never_overlap(self) -> None:
        """Two nodes claiming in parallel never get the same delivery."""
        recipients = tuple(NewRecipient(f"r{i}@x{i % 7}.test") for i in range(500))
        await self.node1.enqueue(NewMessage("a@s.test", recipients[:250], b"x"), T0)
        await self.node2.enqueue(NewMessage("a@s.test", recipients[250:], b"x"), T0)
        claimed: dict[str, list[int]] = {"n1": [], "n2": []}

        async def claimer(store: PostgresStore, owner: str) -> None:
            # Two loops per node: the pools' connections race each other too.
            while True:
                batch = await store.claim_due(T0 + 1, owner, 300, 7)
                if not batch:
                    return
                claimed[owner].extend(d.delivery_id for d in batch)

        await gatherResults([
            Deferred.fromCoroutine(claimer(store, owner))
            for store, owner in ((self.node1, "n1"), (self.node2, "n2"),
                                 (self.node1, "n1"), (self.node2, "n2"))])
        everything = claimed["n1"] + claimed["n2"]
        self.assertEqual(len(everything), 500)
        self.assertEqual(len(set(everything)), 500)
        self.assertTrue(claimed["n1"] and claimed["n2"])
        owners = dict(self.admin_sql("SELECT lease_owner, COUNT(*) FROM deliveries"
                                     " GROUP BY lease_owner"))
        self.assertEqual(owners, {"n1": len(claimed["n1"]), "n2": len(claimed["n2"])})

    async def test_concurrent_enqueue_two_nodes(self) -> None:
        """Enqueues from two nodes at once all commit, with distinct ids."""
        calls = [Deferred.fromCoroutine(store.enqueue(message(f"r{i}@x.test"), T0))
                 for i in range(60) for store in (self.node1, self.node2)]
        results = await gatherResults(calls)
        self.assertEqual(len({r.queue_id for r in results}), 120)
        self.assertEqual(self.admin_sql("SELECT COUNT(*) FROM deliveries"), [(120,)])

    def terminate(self, store: PostgresStore) -> int:
        """Kill every backend of this test's stores, as an operator or a restart would."""
        rows = self.admin_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            f" WHERE application_name = 'hurricane-test-{self.schema}'")
        return len(rows)

    async def test_terminated_connection_recovers(self) -> None:
        """A killed connection fails the call in flight (or not at all); later calls work."""
        await self.node1.enqueue(message(), T0)
        # A call in flight when the backend dies.
        in_flight = Deferred.fromCoroutine(self.node1.find_deliveries(limit=5))
        self.assertGreater(self.terminate(self.node1), 0)
        try:
            await in_flight
        except Exception as e:
            from hurricane.store.interface import StoreUnavailable

            self.assertIsInstance(e, StoreUnavailable)
        # Let the reactor notice the idle connections were closed too.
        await deferLater(reactor, 0.05, lambda: None)
        outcomes = []
        for _ in range(3):
            try:
                outcomes = await self.node1.outcomes()
                break
            except Exception as e:
                # At most the first call after the kill may still see a dead
                # connection; never more than the pool size.
                from hurricane.store.interface import StoreUnavailable

                self.assertIsInstance(e, StoreUnavailable)
        self.assertEqual(len(outcomes), 1)
        # Writes work again, on both nodes.
        await self.node1.enqueue(message(), T0)
        await self.node2.record_attempts([AttemptResult(
            delivery_id=outcomes[0].delivery_id, state=State.delivered, at=T0 + 1, code=250)])
        self.assertEqual(len(await self.node2.outcomes(state="delivered")), 1)

    async def test_kill_during_enqueue(self) -> None:
        """Enqueues in flight when the backend dies fail with StoreUnavailable or commit."""
        from hurricane.store.interface import StoreUnavailable

        calls = [Deferred.fromCoroutine(self.node1.enqueue(message(f"k{i}@x.test"), T0))
                 for i in range(20)]
        self.terminate(self.node1)
        ok = 0
        for call in calls:
            try:
                await call
                ok += 1
            except StoreUnavailable:
                pass
        committed = self.admin_sql("SELECT COUNT(*) FROM deliveries")[0][0]
        # Whatever was answered "ok" is really there (never the reverse).
        self.assertGreaterEqual(committed, ok)
        await deferLater(reactor, 0.05, lambda: None)
        for _ in range(3):
            try:
                await self.node1.enqueue(message(), T0)
                break
            except StoreUnavailable:
                continue
        else:
            self.fail("the store did not recover")


class PostgresRoundTripTests(PostgresMixin, TestCase):
    """Statements a transaction sends: no round trip spent on BEGIN/COMMIT alone."""

    async def setUp(self) -> None:
        self.make_schema()
        self.store = await self.open_store(pool_size=2)
        # What goes to the server: every query txpostgres sends.
        self.sent: list[str] = []
        execute = txpostgres.Cursor.execute

        def spy(cursor: Any, statement: str, params: Any = None) -> Any:
            self.sent.append(statement)
            return execute(cursor, statement, params)

        self.patch(txpostgres.Cursor, "execute", spy)

    async def test_enqueue_is_one_statement_committed(self) -> None:
        """A group-committed batch of enqueues is one statement, durable on return."""
        calls = [Deferred.fromCoroutine(self.store.enqueue(message(f"e{i}@x.test"), T0))
                 for i in range(3)]
        results = await gatherResults(calls)
        # The first goes alone (the store was idle), the other two together:
        # two queries (each shape prepared with its first run), neither with
        # BEGIN, and no COMMIT.
        self.assertEqual(len(self.sent), 2)
        for statement in self.sent:
            self.assertTrue(statement.startswith("PREPARE hurricane_"), statement[:60])
            self.assertIn("; EXECUTE hurricane_", statement)
            self.assertNotIn("BEGIN", statement)
        # Committed: another connection sees every row as soon as enqueue returns.
        self.assertEqual(
            sorted(r[0] for r in self.admin_sql("SELECT queue_id FROM messages")),
            sorted(r.queue_id for r in results))
        self.assertEqual(self.admin_sql("SELECT COUNT(*) FROM deliveries"), [(3,)])

    async def test_a_shape_is_prepared_once_per_connection(self) -> None:
        """The second enqueue of the same shape is a bare EXECUTE; recipients
        keep their order past ten (the position is cast, not sorted as text)."""
        store = await self.open_store(pool_size=1)
        many = tuple(NewRecipient(f"r{i}@x.test") for i in range(12))
        first = await store.enqueue(NewMessage("a@s.test", many, b"x"), T0)
        second = await store.enqueue(NewMessage("a@s.test", many, b"y"), T0)
        self.assertTrue(self.sent[-2].startswith("PREPARE hurricane_"))
        self.assertTrue(self.sent[-1].startswith("EXECUTE hurricane_"), self.sent[-1][:60])
        for result in (first, second):
            self.assertEqual([r.address for r in result.recipients],
                             [r.address for r in many])
            ids = [r.delivery_id for r in result.recipients]
            self.assertEqual(ids, sorted(ids))
            rows = self.admin_sql(
                "SELECT delivery_id, recipient FROM deliveries d JOIN messages m"
                f" USING (message_pk) WHERE m.queue_id = '{result.queue_id}'")
            self.assertEqual(dict(rows), {r.delivery_id: r.address for r in result.recipients})

    async def test_prepared_statements_off(self) -> None:
        """prepared_statements=False (PgBouncer in transaction mode): plain statements."""
        store = await self.open_store(pool_size=1, prepared_statements=False)
        for body in (b"x", b"y"):
            await store.enqueue(NewMessage("a@s.test", (NewRecipient("r@x.test"),), body), T0)
        self.assertTrue(all(st.lstrip().startswith("WITH") for st in self.sent[-2:]),
                        [st[:40] for st in self.sent[-2:]])

    async def test_statements_gone_are_prepared_again(self) -> None:
        """DEALLOCATE ALL (or a pooler) drops them: that call fails, the next prepares again."""
        from hurricane.store.interface import StoreUnavailable

        store = await self.open_store(pool_size=1)
        one = (NewRecipient("r@x.test"),)
        await store.enqueue(NewMessage("a@s.test", one, b"x"), T0)

        async def discard(txn: Any) -> None:
            await txn.execute("DEALLOCATE ALL")

        await store._run(discard)
        with self.assertRaises(StoreUnavailable):
            await store.enqueue(NewMessage("a@s.test", one, b"y"), T0)
        again = await store.enqueue(NewMessage("a@s.test", one, b"z"), T0)
        self.assertTrue(self.sent[-1].startswith("PREPARE hurricane_"))
        self.assertEqual(self.admin_sql("SELECT COUNT(*) FROM messages"), [(2,)])
        self.assertEqual(len(again.recipients), 1)

    async def _server_prepared(self, store: PostgresStore) -> int:
        async def count(txn: Any) -> int:
            await txn.execute("SELECT COUNT(*) FROM pg_prepared_statements")
            return int(txn.fetchone()[0])

        return int(await store._run(count))

    async def test_a_failed_first_run_keeps_its_name(self) -> None:
        """The EXECUTE fails after its PREPARE took: later calls reuse that
        statement instead of preparing (and leaking) one each time."""
        from hurricane.store.interface import StoreUnavailable

        store = await self.open_store(pool_size=1)
        self.admin_sql(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
            " $$BEGIN RAISE EXCEPTION 'refused'; END$$;"
            " CREATE TRIGGER refuse BEFORE INSERT ON messages FOR EACH ROW"
            " WHEN (NEW.sender = 'boom@s.test') EXECUTE FUNCTION refuse();"
            " SELECT 1")
        one = (NewRecipient("r@x.test"),)
        for _ in range(3):
            with self.assertRaises(StoreUnavailable):
                await store.enqueue(NewMessage("boom@s.test", one, b"x"), T0)
        self.assertEqual(await self._server_prepared(store), 1)
        await store.enqueue(NewMessage("a@s.test", one, b"x"), T0)
        self.assertTrue(self.sent[-1].startswith("EXECUTE hurricane_"), self.sent[-1][:60])
        self.assertEqual(await self._server_prepared(store), 1)

    async def test_a_schema_change_prepares_again(self) -> None:
        """A migration that changes a returned column's type makes the plan
        stale (0A000): that call fails, the next one prepares again."""
        from hurricane.store.interface import StoreUnavailable

        store = await self.open_store(pool_size=1)
        one = (NewRecipient("r@x.test"),)
        await store.enqueue(NewMessage("a@s.test", one, b"x"), T0)
        self.admin_sql("ALTER TABLE deliveries ALTER COLUMN reason TYPE VARCHAR(500);"
                       " SELECT 1")
        with self.assertRaises(StoreUnavailable):
            await store.enqueue(NewMessage("a@s.test", one, b"y"), T0)
        await store.enqueue(NewMessage("a@s.test", one, b"z"), T0)
        self.assertTrue(self.sent[-1].startswith("PREPARE hurricane_"), self.sent[-1][:60])
        self.assertEqual(self.admin_sql("SELECT COUNT(*) FROM messages"), [(2,)])

    async def test_a_large_shape_is_not_prepared(self) -> None:
        """Over 256 parameters (here 40 recipients: 331): a plain statement."""
        store = await self.open_store(pool_size=1)
        many = tuple(NewRecipient(f"r{i}@x.test") for i in range(40))
        result = await store.enqueue(NewMessage("a@s.test", many, b"x"), T0)
        self.assertTrue(self.sent[-1].lstrip().startswith("WITH"), self.sent[-1][:60])
        self.assertEqual([r.address for r in result.recipients], [r.address for r in many])
        self.assertEqual(await self._server_prepared(store), 0)

    async def test_a_batch_of_several_statements_keeps_its_block(self) -> None:
        """More messages than one statement takes: BEGIN ... COMMIT around the
        statements, so a failing chunk cannot leave earlier ones committed."""
        from hurricane.store.txn.submission import MESSAGE_CHUNK, prepare_message

        count = MESSAGE_CHUNK + 5
        batch = [prepare_message(message(f"m{i}@x.test"), T0) for i in range(count)]
        results = await self.store._enqueue_batch(batch)
        self.assertEqual(len({r.queue_id for r in results}), count)
        self.assertEqual(len(self.sent), 3)
        # (too many parameters to be worth preparing: plain statements)
        self.assertTrue(self.sent[0].startswith("BEGIN; \nWITH"), self.sent[0][:40])
        self.assertNotIn("BEGIN", self.sent[1])
        self.assertEqual(self.sent[2], "COMMIT")
        self.assertEqual(self.admin_sql("SELECT COUNT(*) FROM deliveries"), [(count,)])

    async def test_a_failing_chunk_commits_nothing(self) -> None:
        """The second statement of a large batch fails: no message of the batch stays."""
        from hurricane.store.interface import StoreUnavailable
        from hurricane.store.txn.submission import MESSAGE_CHUNK, prepare_message

        # The first statement (BEGIN and the first chunk) reaches the server;
        # the second fails.
        fault = self.store.faults.add(fail_statements(skip=1))
        batch = [prepare_message(message(f"f{i}@x.test"), T0)
                 for i in range(MESSAGE_CHUNK + 5)]
        with self.assertRaises(StoreUnavailable):
            await self.store._enqueue_batch(batch)
        self.assertEqual(fault.fired, 1)
        self.assertTrue(self.sent[0].startswith("BEGIN; "), self.sent[0][:40])
        self.assertEqual(self.sent[-1], "ROLLBACK")
        self.assertEqual(self.admin_sql("SELECT COUNT(*) FROM messages"), [(0,)])

    async def test_standalone_after_a_statement_keeps_the_block(self) -> None:
        """Asked after a statement, standalone() is refused: the block stays atomic."""
        answers: list[bool] = []

        async def half_done(txn: Any) -> None:
            await txn.execute("CREATE TABLE probe (x INTEGER)")
            answers.append(txn.standalone())
            await txn.execute("INSERT INTO probe VALUES (1)")
            await txn.execute("SELECT 1/0")

        from hurricane.store.interface import StoreUnavailable

        with self.assertRaises(StoreUnavailable):  # division by zero, from the server
            await self.store._run(half_done)
        self.assertEqual(answers, [False])
        self.assertTrue(self.sent[0].startswith("BEGIN; "))
        self.assertEqual(self.sent[-1], "ROLLBACK")
        # Rolled back as a whole: the table was never created.
        self.assertEqual(self.admin_sql(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'probe'"
            f" AND table_schema = '{self.schema}'"), [(0,)])
