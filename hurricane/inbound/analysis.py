"""Analysis of a batch of returned messages through the executor.

One hop for the whole batch (the hand-off and back costs more than a small
analysis). In worker processes each call has a deadline
(:mod:`hurricane.inbound.workers`); a call past it, or whose worker died,
fails with :class:`WorkerLost`. Then the rule is **retry once, alone**:

- The worker may have been killed from outside, or one of the batch's
  messages kills it: each message is analyzed again alone, one at a time
  across the processor and with nothing else in the pool, so a message that
  kills its worker every time is found and marked failed while the others
  go through.
- Alone, a second death is this message's doing: it is marked failed (raw
  kept for a replay) rather than tried again, since each attempt stalls the
  pool for up to its deadline. A hostile message costs two kills of the
  worker at most.
- Workers that cannot start (:class:`PoolUnavailable`), or a stop, count
  against no message: it stays pending (the processor turns a
  ``WorkerLost`` into a retry with backoff).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import DeferredLock
from twisted.logger import Logger

from hurricane.inbound.executor import Analyzed, Executor
from hurricane.inbound.workers import PoolUnavailable, WorkerLost
from hurricane.model import StoredBounce

__all__ = ["AnalysisStage"]

log = Logger()


class AnalysisStage:
    """Analyzes batches through one executor, with the retry-once-alone rule.

    Args:
        executor: where analyses run.
        stopping: True while the service stops (a lost call is then not
            retried: its messages stay pending).
    """

    def __init__(self, executor: Executor, stopping: Callable[[], bool]) -> None:
        self.executor = executor
        self._stopping = stopping
        #: One message analyzed alone at a time after a worker died.
        self._isolating = DeferredLock()

    async def analyze(self, bounces: list[StoredBounce]) -> list[Analyzed]:
        """Per message, its analysis (or the exception), with its fingerprint
        and JSON when the executor computed them (None: the caller does)."""
        if not bounces:
            return []
        work = [(b.raw, b.rcpt_to or None) for b in bounces]
        try:
            return list(await self.executor.submit(work))
        except WorkerLost as e:
            if not self.executor.isolates or isinstance(e, PoolUnavailable) \
                    or self._stopping():
                return [Analyzed(e)] * len(bounces)
            log.warn("{error} under {count} messages; analyzing each alone",
                     error=str(e), count=len(bounces))
        except Exception as e:
            return [Analyzed(e)] * len(bounces)
        out: list[Analyzed] = []
        for bounce, item in zip(bounces, work, strict=True):
            one = await self._alone(bounce.bounce_id, item)
            if isinstance(one[0], PoolUnavailable):
                # no worker can start: do not start one per message
                return out + [one] * (len(bounces) - len(out))
            out.append(one)
        return out

    async def _alone(self, bounce_id: int, item: tuple[bytes, str | None]) -> Analyzed:
        """One message, alone in the pool, once (its batch lost its worker)."""
        await self._isolating.acquire()
        try:
            try:
                [one] = await self.executor.submit([item], alone=True)
                return one
            except PoolUnavailable as e:
                return Analyzed(e)
            except WorkerLost as e:
                if self._stopping():
                    return Analyzed(e)
                log.warn("bounce {bounce_id}: {error} (alone, after its batch)",
                         bounce_id=bounce_id, error=str(e))
                return Analyzed(RuntimeError(
                    f"the analysis worker died on this message twice, in its batch and"
                    f" alone (last: {e})"))
            except Exception as e:
                return Analyzed(e)
        finally:
            self._isolating.release()
