"""The code that runs inside an analysis worker process.

Kept apart from :mod:`hurricane.inbound.workers` so that a spawned worker
imports only the analyzer, not Twisted: a worker starts in a fresh
interpreter, and every import delays the first analysis. Correlating a
message here (:mod:`hurricane.inbound.prepared`) imports more, once, with
the first batch that asks for it.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import signal
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from hurricane.bounce.analyze import AnalysisLimits
from hurricane.bounce.classify import ReplyClassifier
from hurricane.bounce.model import Analysis

if TYPE_CHECKING:
    from hurricane.inbound.prepared import Correlating, Recordable

__all__ = ["Analyzed", "Work", "WorkerInitFailed", "analyze_batch", "analyze_one",
           "encode_analysis", "init_worker", "ping"]


class Work(NamedTuple):
    """One unit of work: the raw returned message and its envelope recipient."""

    raw: bytes
    rcpt: str | None
    #: What correlating the message needs, when the executor may do it
    #: (None: the server correlates).
    context: Correlating | None = None


class Analyzed(NamedTuple):
    """One message's analysis, as an executor hands it back."""

    #: The analysis, or the exception the analyzer raised.
    result: Analysis | BaseException
    #: ``message_fingerprint`` of the message when the executor computed it
    #: (None: the caller does).
    fingerprint: bytes | None = None
    #: :func:`encode_analysis` of the result when the executor computed it,
    #: off the reactor (None: the caller does).
    record: str | None = None
    #: The analysis correlated and made ready to record, when the work's
    #: context sufficed (None: the server correlates).
    prepared: Recordable | None = None


def encode_analysis(analysis: Analysis) -> str:
    """The analysis as the JSON object the store keeps (the correlation is added later)."""
    return json.dumps(analysis.to_json(), default=str)


#: Set once per worker by :func:`init_worker`: (analyze, its keyword arguments).
_WORKER: tuple[Any, dict[str, Any]] | None = None

#: Why :func:`init_worker` could not load the classifier (None: it did).
_INIT_ERROR: str | None = None


class WorkerInitFailed(Exception):
    """This worker could not initialize (a rules file gone or invalid since start-up).

    Raised by :func:`analyze_batch` instead of analyzing: the pool treats it
    as "the workers cannot start", not as a fault of the messages.
    """


def init_worker(analyze: Any, rules_files: Sequence[str], limits: AnalysisLimits | None) -> None:
    """Load the classifier once for this worker; exit when the parent does.

    Args:
        analyze: the analysis function (``hurricane.bounce.analyze.analyze``).
        rules_files: operator rule files for ``ReplyClassifier.load``.
        limits: the analyzer's limits; None uses its defaults.
    """
    global _WORKER, _INIT_ERROR
    # Ctrl-C in a terminal reaches the whole process group; the parent
    # decides when its workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        kwargs: dict[str, Any] = {"classifier": ReplyClassifier.load(rules_files)}
        if limits is not None:
            kwargs["limits"] = limits
        _WORKER = (analyze, kwargs)
    except Exception as e:
        # Not raised: an initializer that raises kills its worker, and the
        # pool would only see "a worker died", as if a message had killed it.
        # Reported by ping() and analyze_batch() instead.
        _INIT_ERROR = f"{type(e).__name__}: {e}"
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), daemon=True,
                         name="hurricane-parent-watch").start()


def _exit_with(sentinel: int) -> None:
    """Wait until the parent process is gone, then end this worker at once.

    An idle worker would otherwise wait forever: it blocks reading the
    pool's call queue, whose write end its own copy of the queue keeps open.
    """
    from multiprocessing.connection import wait

    wait([sentinel])
    os._exit(0)


def _portable(e: BaseException) -> BaseException:
    """The exception itself when it survives pickling, else a RuntimeError naming it."""
    try:
        pickle.loads(pickle.dumps(e))
    except Exception:
        return RuntimeError(f"{type(e).__name__}: {e}")
    return e


def ping() -> str | None:
    """None when this worker is ready to analyze, else why it is not.

    The pool sends it first to each new set of workers, before any message.
    """
    if _WORKER is None:
        return _INIT_ERROR or "the worker was not initialized"
    return None


def analyze_batch(work: list[Work]) -> list[Analyzed]:
    """Analyze several messages; an exception fails only its own message.

    Returns:
        Per message, :func:`analyze_one`'s answer, its exception made
        portable (it crosses a process boundary).
    """
    if _WORKER is None:
        raise WorkerInitFailed(_INIT_ERROR or "the worker was not initialized")
    analyze, kwargs = _WORKER
    out: list[Analyzed] = []
    for one in work:
        got = analyze_one(analyze, kwargs, one)
        if isinstance(got.result, BaseException):
            got = got._replace(result=_portable(got.result))
        out.append(got)
    return out


def analyze_one(analyze: Any, kwargs: dict[str, Any], work: Work) -> Analyzed:
    """Analyze one message, and make it ready to record when the work allows.

    Besides the analysis (or the exception the analyzer raised): the
    message's fingerprint (``message_fingerprint``) and the analysis's JSON;
    with a context, the analysis correlated and its events built
    (:mod:`hurricane.inbound.prepared`), unless correlation needs the store
    or the analysis failed (the server then does as without one). All of it
    computed here so that the server process (its reactor thread) does not
    have to.
    """
    from hurricane.inbound.fingerprint import message_fingerprint

    record: str | None = None
    try:
        one: Analysis | BaseException = analyze(work.raw, work.rcpt, **kwargs)
        if isinstance(one, Analysis):
            record = encode_analysis(one)
    except Exception as e:
        one = e
    fingerprint = message_fingerprint(work.raw)
    prepared: Recordable | None = None
    # an analysis that gave up is marked failed by the server, not recorded
    if work.context is not None and isinstance(one, Analysis) \
            and (one.results or not one.error):
        prepared = _prepare(one, fingerprint, record, work)
    return Analyzed(one, fingerprint, record, prepared)


def _prepare(analysis: Analysis, fingerprint: bytes, record: str | None, work: Work
             ) -> Recordable | None:
    """The analysis ready to record, or None: the server correlates it."""
    from hurricane.inbound.prepared import NeedsServer, correlate_offline, recordable

    context = work.context
    assert context is not None
    bounce = context.bounce
    try:
        corr = correlate_offline(bounce, analysis, context)
        return recordable(bounce, analysis, corr, fingerprint, record)
    except NeedsServer:
        return None
    except Exception:
        # not this process's to report: the server meets it again and does
        return None
