"""Fakes for password verification: a thread-pool stand-in and a pbkdf2 recorder."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

_T = TypeVar("_T")


class QueuedRunner:
    """Stands in for the thread pool: holds every job until :meth:`run_all`.

    Nothing runs when a job is handed over, so a test sees exactly what the
    caller did on its own thread, and how much work it queued.
    """

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[[], Any], Deferred[Any]]] = []

    def __call__(self, work: Callable[[], _T]) -> Deferred[_T]:
        d: Deferred[_T] = Deferred()
        self.jobs.append((work, d))
        return d

    def run_all(self) -> int:
        """Run the held jobs (and any they queue) in order; how many ran."""
        count = 0
        while self.jobs:
            work, d = self.jobs.pop(0)
            count += 1
            try:
                result = work()
            except Exception:
                d.errback(Failure())
            else:
                d.callback(result)
        return count


class Pbkdf2Recorder:
    """Replaces ``hurricane.passwords.hashlib``: records each pbkdf2 (thread, iterations).

    Install with ``self.patch(hurricane.passwords, "hashlib", recorder)``;
    everything else is the real hashlib.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []
        self._lock = threading.Lock()

    def pbkdf2_hmac(self, hash_name: str, password: bytes, salt: bytes, iterations: int,
                    dklen: int | None = None) -> bytes:
        """Record the call, then hash for real."""
        with self._lock:
            self.calls.append((threading.get_ident(), iterations))
        return hashlib.pbkdf2_hmac(hash_name, password, salt, iterations, dklen)

    def __getattr__(self, name: str) -> Any:
        return getattr(hashlib, name)

    def threads(self) -> set[int]:
        """The threads pbkdf2 ran on."""
        with self._lock:
            return {thread for thread, _ in self.calls}
