"""One transaction for claimed deliveries, and the result of each attempt.

:class:`Dispatcher` builds what goes on the wire for a batch (the body from
the :class:`~hurricane.outbound.bodies.BodyCache`, the VERP return path, the
token header, the SMTPUTF8/8BITMIME flags), sends it on a connection the
pool chose, and turns every recipient's answer into an
:class:`~hurricane.model.AttemptResult`.

What an answer means is not decided here:
:func:`hurricane.decisions.decide_attempt` decides it (2xx after the dot
*delivered*, a classified 5xx *failed*, a 4xx or a connection problem
*deferred*, *expired* past ``max_age``...); :class:`AttemptJudge` only adds
the retry policy's next time and the facts of the session.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol

from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from hurricane.decisions import (
    Attempt,
    Classifier,
    LocalFailure,
    RecipientAnswer,
    decide_attempt,
)
from hurricane.model import AttemptResult, Delivery
from hurricane.outbound.bodies import BodyCache
from hurricane.outbound.interface import (
    ISMTPConnection,
    OutboundMessage,
    OutboundRecipient,
    RecipientReply,
    TransportFacts,
)
from hurricane.outbound.prepare import prepare_message, wire_address
from hurricane.outbound.retry import RetryPolicy, expired
from hurricane.outcome import Phase, Reason
from hurricane.verp import VerpCodec

__all__ = ["AttemptJudge", "Dispatcher", "StreamHeaders"]

log = Logger()

#: The transport facts of an attempt that had no session.
NO_FACTS = TransportFacts()


class AttemptJudge:
    """The result to record for one attempt: :func:`decide_attempt`'s decision,
    with the next attempt time from the retry policy when it retries.

    Args:
        classifier: turns a refusal into a reason word.
        policy: the backoff policy.
        max_age: seconds after which a delivery still deferred expires.
        owner: this node's name, recorded with the result.
        rng: the retry jitter.
    """

    def __init__(self, classifier: Classifier, policy: RetryPolicy, max_age: float, owner: str,
                 rng: random.Random) -> None:
        self._classifier = classifier
        self._policy = policy
        self._max_age = max_age
        self._owner = owner
        self._rng = rng

    def judge(
        self, delivery: Delivery, attempt: Attempt, now: float, *, host: str | None = None,
        ip: str | None = None, tls: str | None = None, duration: float | None = None,
        facts: TransportFacts | None = None,
    ) -> AttemptResult:
        """The result of one attempt.

        Args:
            delivery: the row attempted.
            attempt: what happened (an answer, a session or local failure).
            now: when.
            host: the MX it went to, if any.
            ip: its address.
            tls: the TLS version of the session.
            duration: seconds the transaction took.
            facts: the source address and TLS policy and result (issue 21).

        Returns:
            the result to record.
        """
        decision = decide_attempt(attempt, self._classifier,
                                  expired=expired(delivery.created_at, now, self._max_age))
        next_attempt = (self._policy.next_attempt(delivery.attempts + 1, now, self._rng)
                        if decision.retry else None)
        facts = facts or NO_FACTS
        return decision.result(delivery.delivery_id, now, remote_host=host, remote_ip=ip,
                               tls=tls, duration=duration, next_attempt_at=next_attempt,
                               owner=self._owner, source_ip=facts.source_ip,
                               tls_policy_type=facts.tls_policy_type,
                               tls_policy_id=facts.tls_policy_id, tls_result=facts.tls_result)


class StreamHeaders(Protocol):
    """Adds a stream's per-recipient headers, then signs.

    :class:`hurricane.unsubscribe.BulkHeaders` is the server's.
    """

    @property
    def decorated(self) -> frozenset[str]:
        """The streams whose messages get headers (one recipient per transaction)."""

    def applies(self, delivery: Delivery) -> bool:
        """True when the delivery's stream adds headers (its transactions are signed here)."""

    async def apply(self, delivery: Delivery, body: bytes) -> bytes:
        """The normalised, unsigned body with the headers added, signed."""


class Dispatcher:
    """Sends one transaction per batch and hands each delivery's result on.

    Args:
        bodies: the bytes of each message.
        codec: makes the VERP return path.
        judge: turns an attempt into its result.
        clock: record times and durations.
        finish: takes one delivery's result (and frees its slot); skips a
            delivery that is not in flight any more.
        give_back: returns leases without an attempt (a body that cannot be
            loaded), with the reason for the log.
        headers: adds a stream's per-recipient headers (List-Unsubscribe,
            Feedback-ID) and signs; None adds none.
    """

    def __init__(self, bodies: BodyCache, codec: VerpCodec, judge: AttemptJudge,
                 clock: IReactorTime, finish: Callable[[Delivery, AttemptResult], None],
                 give_back: Callable[[Sequence[Delivery], str], Awaitable[None]],
                 headers: StreamHeaders | None = None) -> None:
        self._headers = headers
        self._bodies = bodies
        self._codec = codec
        self._judge = judge
        self._clock = clock
        self._finish = finish
        self._give_back = give_back

    def fail(self, batch: Iterable[Delivery], attempt: Attempt, *, host: str | None = None,
             ip: str | None = None, facts: TransportFacts | None = None) -> None:
        """Record deliveries that could not be sent, each by the same attempt.

        Args:
            batch: the deliveries.
            attempt: what went wrong (DNS, connection, local error).
            host: the MX that failed, if any.
            ip: its address.
            facts: the failed session's source and TLS facts.
        """
        now = self._clock.seconds()
        for delivery in batch:
            self._finish(delivery, self._judge.judge(delivery, attempt, now, host=host, ip=ip,
                                                     facts=facts))

    async def send(self, conn: ISMTPConnection, batch: list[Delivery]) -> bool:
        """Send one transaction for ``batch`` on ``conn`` and record every recipient.

        Args:
            conn: an open session.
            batch: deliveries of one message (one, unless per-message VERP).

        Returns:
            False when the connection misbehaved and must be closed.
        """
        first = batch[0]
        headers = self._headers if self._headers is not None and \
            self._headers.applies(first) else None
        try:
            body = await self._bodies.get(first.message_pk, sign=headers is None)
            if headers is not None:
                # Per recipient (its own unsubscribe link), then signed.
                body = await headers.apply(first, body)
        except CancelledError:
            raise
        except Exception:
            # Without the body nothing can be sent; give the leases back
            # so the rows come again, without counting an attempt.
            log.failure("loading message {message_pk} failed", message_pk=first.message_pk)
            await self._give_back(batch, "body unavailable")
            return True
        message = self._message(batch, body)
        if message is None:
            return True
        info = conn.info
        started = self._clock.seconds()
        usable = True
        try:
            replies = await conn.send(message)
        except CancelledError:
            raise
        except Exception as e:
            # send() must not raise; if it does, the session is unusable
            # and nothing is known about the recipients
            log.failure("send to {host} failed", host=info.host)
            replies = [RecipientReply(d.delivery_id, None, Phase.data, error=str(e))
                       for d in batch]
            usable = False
        now = self._clock.seconds()
        by_id = {r.delivery_id: r for r in replies}
        for delivery in batch:
            rr = by_id.get(delivery.delivery_id)
            answer = (RecipientAnswer(rr.phase, rr.reply, rr.error) if rr is not None else
                      RecipientAnswer(Phase.data, None, "no reply for this recipient"))
            self._finish(delivery, self._judge.judge(
                delivery, answer, now, host=info.host, ip=info.ip, tls=info.tls,
                duration=now - started, facts=TransportFacts(
                    info.source_ip, info.tls_policy_type, info.tls_policy_id, info.tls_result)))
        return usable

    def _message(self, batch: list[Delivery], body: bytes) -> OutboundMessage | None:
        """The transaction for ``batch``, or None after recording why there is none."""
        first = batch[0]
        try:
            # A transaction to several recipients shares one return path: it
            # is marked per-message (under its MAC) so that it vouches for the
            # message only, never for one recipient a co-recipient names.
            token = self._codec.encode(first.delivery_id, first.mailing_id, first.message_id,
                                       per_message=len(batch) > 1)
        except ValueError as e:
            # identifiers that do not fit a return path: submission should
            # have refused them; no retry can fix it
            self.fail(batch, LocalFailure(Reason.mailererror, f"cannot make a return path: {e}",
                                          permanent=True))
            return None
        recipients = tuple(
            OutboundRecipient(
                delivery_id=d.delivery_id,
                address=wire_address(d.recipient),
                orcpt=d.orcpt or f"rfc822;{d.recipient}",
            )
            for d in batch
        )
        prepared = prepare_message(body, token, [token, *(r.address for r in recipients)])
        return OutboundMessage(
            mail_from=token,
            recipients=recipients,
            body=prepared.body,
            envid=token,
            eight_bit=prepared.eight_bit,
            smtputf8=prepared.smtputf8,
        )
