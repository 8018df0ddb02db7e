"""The code that runs inside an analysis worker process.

Kept apart from :mod:`hurricane.inbound.workers` so that a spawned worker
imports only the analyzer, not Twisted: a worker starts in a fresh
interpreter, and every import delays the first analysis.

The server starts it as ``python -m hurricane.inbound.analysis_worker``
(:func:`serve`) and talks to it over its stdin and stdout in frames: a
4-byte big-endian length, then a pickle. The first frame holds the server's
``sys.path`` and the pickled arguments of :func:`init_worker`; every later
one is a request ``(PING, None)`` or ``(BATCH, work)``, answered in order
with ``(True, result)`` or ``(False, exception)``. End of file on stdin
(the server closed it, or died, even by ``kill -9``) ends the worker.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import struct
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

from hurricane.bounce.analyze import AnalysisLimits
from hurricane.bounce.classify import ReplyClassifier
from hurricane.bounce.model import Analysis

__all__ = ["BATCH", "PING", "Analyzed", "Work", "WorkerInitFailed", "analyze_batch",
           "encode_analysis", "frame", "init_worker", "ping", "serve"]

#: One unit of work: the raw returned message and its envelope recipient.
Work = tuple[bytes, "str | None"]


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
    """Load the classifier once for this worker.

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
        Per message, the analysis (or the exception the analyzer raised),
        the message's fingerprint (``message_fingerprint``) and the
        analysis's JSON, computed here too so that the server process (its
        reactor thread) does not have to.
    """
    from hurricane.inbound.fingerprint import message_fingerprint

    if _WORKER is None:
        raise WorkerInitFailed(_INIT_ERROR or "the worker was not initialized")
    analyze, kwargs = _WORKER
    out: list[Analyzed] = []
    for raw, rcpt in work:
        record: str | None = None
        try:
            one: Analysis | BaseException = analyze(raw, rcpt, **kwargs)
            if isinstance(one, Analysis):
                record = encode_analysis(one)
        except Exception as e:
            one = _portable(e)
        out.append(Analyzed(one, message_fingerprint(raw), record))
    return out


# -- the process: frames on stdin and stdout ---------------------------------------

#: Requests (the first element of a request frame).
PING = 0
BATCH = 1

_LENGTH = struct.Struct(">I")


def frame(obj: Any) -> bytes:
    """``obj`` pickled, behind its 4-byte big-endian length."""
    body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(body)) + body


def _read_frame(stream: Any) -> bytes | None:
    """The next frame's body; None at end of file (the server is gone)."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack(head)
    body: bytes = stream.read(size)
    return body if len(body) == size else None


def serve() -> None:
    """Answer the server's frames until stdin ends (see the module docstring)."""
    # Ctrl-C in a terminal reaches the whole process group; the server
    # decides when its workers stop (it closes their stdin).
    global _INIT_ERROR
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # stdout carries frames only: a stray print() (in an operator's analyze
    # function, a library's warning) goes to stderr instead of corrupting them.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    stream = sys.stdin.buffer
    first = _read_frame(stream)
    if first is None:
        return
    path, initargs = pickle.loads(first)
    sys.path[:] = path  # where the server imports from (an injected analyze, too)
    try:
        init_worker(*pickle.loads(initargs))
    except Exception as e:  # an analyze function that does not unpickle here
        _INIT_ERROR = f"{type(e).__name__}: {e}"
    while True:
        body = _read_frame(stream)
        if body is None:
            return
        kind, work = pickle.loads(body)
        try:
            answer: Any = (True, ping() if kind == PING else analyze_batch(work))
            data = frame(answer)
        except Exception as e:
            data = frame((False, _portable(e)))
        out.write(data)
        out.flush()


if __name__ == "__main__":
    # Run through the module's own name: objects pickled from ``__main__``
    # would not unpickle in the server.
    from hurricane.inbound import analysis_worker

    analysis_worker.serve()
