"""Transaction functions shared by the store engines, one module per domain.

Each ``*_txn`` function receives an open transaction (the :class:`Txn`
protocol of :mod:`hurricane.store.txn.core`) and does one domain operation
with the SQL of :mod:`hurricane.store.sql`; :class:`hurricane.store.base.SqlStore`
runs them on every engine (SQLite file, SQLite in memory, PostgreSQL):

- :mod:`~hurricane.store.txn.submission`: queue ids, the enqueue;
- :mod:`~hurricane.store.txn.deliveries`: claims, leases, bodies, attempt
  results, retries;
- :mod:`~hurricane.store.txn.bounces`: returned mail, its analysis, retention;
- :mod:`~hurricane.store.txn.suppressions`: the suppression list;
- :mod:`~hurricane.store.txn.reads`: point and search reads, read batching;
- :mod:`~hurricane.store.txn.summaries`: counts and report aggregates
  (the report's mailings and settling reads are :mod:`hurricane.store.reports`).

The package also re-exports the names the single ``txn`` module had, so
``from hurricane.store.txn import prepare_message`` keeps working; new code
imports from the domain module (and a test patches a name there, where it
is looked up).
"""

from hurricane.store.txn.bounces import (
    bounce_analysis_txn,
    load_bounce_txn,
    mark_bounce_failed_txn,
    pending_bounces_txn,
    purge_bounces_txn,
    record_bounce_txn,
    record_bounces_txn,
    recorded_idem_key,
    store_bounce_txn,
    store_bounces_txn,
)
from hurricane.store.txn.core import (
    MAX_REPORT_ROWS,
    ReadCall,
    Row,
    Txn,
    TxnCall,
    delivery_from_row,
    event_from_row,
    name_of,
    outcome_from_row,
    run_sync,
    suppression_from_row,
    text_of,
)
from hurricane.store.txn.deliveries import (
    check_attempts,
    claim_due_txn,
    get_delivery_txn,
    load_body_txn,
    record_attempts_txn,
    release_owner_txn,
    release_txn,
    retry_now_txn,
)
from hurricane.store.txn.reads import (
    events_after_txn,
    events_txn,
    find_deliveries_txn,
    get_message_txn,
    outcomes_txn,
    read_batch_txn,
    search_deliveries_txn,
)
from hurricane.store.txn.submission import (
    QUEUE_ID_LENGTH,
    PreparedMessage,
    enqueue_batch_txn,
    enqueue_txn,
    new_queue_id,
    prepare_message,
)
from hurricane.store.txn.summaries import (
    bounce_reasons_txn,
    deferred_by_domain_txn,
    mailing_summary_txn,
    make_summary,
    oldest_pending_txn,
    queue_depth_txn,
    summary_txn,
    timeseries_txn,
    top_domains_txn,
)
from hurricane.store.txn.suppressions import (
    get_suppression_txn,
    suppress_txn,
    suppressions_txn,
    unsuppress_txn,
)

__all__ = [
    "MAX_REPORT_ROWS",
    "PreparedMessage",
    "QUEUE_ID_LENGTH",
    "ReadCall",
    "Row",
    "Txn",
    "TxnCall",
    "bounce_analysis_txn",
    "bounce_reasons_txn",
    "check_attempts",
    "claim_due_txn",
    "deferred_by_domain_txn",
    "delivery_from_row",
    "enqueue_batch_txn",
    "enqueue_txn",
    "event_from_row",
    "events_after_txn",
    "events_txn",
    "find_deliveries_txn",
    "get_delivery_txn",
    "get_message_txn",
    "get_suppression_txn",
    "load_body_txn",
    "load_bounce_txn",
    "mailing_summary_txn",
    "make_summary",
    "mark_bounce_failed_txn",
    "name_of",
    "new_queue_id",
    "oldest_pending_txn",
    "outcome_from_row",
    "outcomes_txn",
    "pending_bounces_txn",
    "prepare_message",
    "purge_bounces_txn",
    "queue_depth_txn",
    "read_batch_txn",
    "record_attempts_txn",
    "record_bounce_txn",
    "record_bounces_txn",
    "recorded_idem_key",
    "release_owner_txn",
    "release_txn",
    "retry_now_txn",
    "run_sync",
    "search_deliveries_txn",
    "store_bounce_txn",
    "store_bounces_txn",
    "summary_txn",
    "suppress_txn",
    "suppression_from_row",
    "suppressions_txn",
    "text_of",
    "timeseries_txn",
    "top_domains_txn",
    "unsuppress_txn",
]
