"""Find the deliveries a returned message speaks about.

A returned message names deliveries in several ways, of very different
strength. We try them in a fixed order and stop at the first that finds
anything (DESIGN.md, "The return path"); the verified keys come first:

1. ``verp``: the envelope recipients, VERP tokens the bounce listener
   verified at RCPT time (``StoredBounce.recipients``). Exact and
   authenticated.
2. ``header-token``: mail that reached postmaster or a feedback address
   carries no usable envelope; the returned original may still hold our
   ``X-Hurricane-Token`` header, checked with the same MAC (a token that
   fails it is recorded as evidence and ignored).
3. ``envid``: the RFC 3461 ENVID a DSN echoes: our VERP local part (or
   address), verified like any token.
4. ``message-id``: our Message-ID in the returned headers. Every recipient of
   the message has seen it: a hint, never proof.
5. ``orcpt`` / ``recipient``: the RFC 3461 ORCPT (the recipient as we sent
   it) or the addresses the analysis found, matched against recent
   deliveries, newest first. The weakest keys; used only when nothing else
   correlates.

Steps 1-4 find *anchor* deliveries; each result of the analysis is then
paired with the anchor for its recipient. A result naming another recipient
of an anchor's message is looked up in the same queue entry (``sibling``):
the address came from the report's text, so that match is only a hint.

A per-message token (``[delivery] verp = "per-message"``, a transaction to
several recipients) was seen by all of them, so it proves the *message*, not
the recipient: every result it carries is paired within the message's queue
entry under ``message-token``, which is not a verified key, and the "renamed
recipient" fallback never applies to it (any co-recipient could otherwise
bounce the token's first delivery). When the message had exactly one
recipient, the token does name it and keeps its own key.

Only the verified keys (:attr:`hurricane.outcome.CorrelationKey.verified`) let
an event change anything; that is decided once, in
:func:`hurricane.decisions.decide_bounce`, for every store engine.

Everything here is read-only: it asks the store questions and returns a
:class:`Correlation`, which the processor turns into events. The questions
are bounded per message (issue 23's second review: one DSN naming an address
500 times cost one query per result, seconds of store time): each weak-key
look-up (recent deliveries to a bare address or an ORCPT, the deliveries of
an anchor's queue entry) is made once per run, and at most
``_MAX_WEAK_LOOKUPS`` of them per message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.logger import Logger

from hurricane.address import bare_address
from hurricane.bounce.model import Analysis, RecipientResult
from hurricane.model import Delivery, StoredBounce
from hurricane.outcome import Action, Category, CorrelationKey, State
from hurricane.store.interface import IOutcomeStore
from hurricane.verp import VerpCodec, VerpRejection, VerpToken
from hurricane.xtext import xtext_decode

__all__ = [
    "KEYS",
    "RECIPIENT_WINDOW",
    "Correlation",
    "Match",
    "correlate",
]

log = Logger()

#: Correlation keys, strongest first (the text of :class:`CorrelationKey`).
KEYS = tuple(k.value for k in CorrelationKey)

#: How far back a bare recipient address is matched (seconds).
RECIPIENT_WINDOW = 30 * 86400.0

#: Most deliveries read back for one lookup; a Message-ID shared by more
#: recipients than this is matched per recipient instead.
_LOOKUP_LIMIT = 100

#: Store look-ups by a weak key (recent deliveries to a bare address or an
#: ORCPT, the deliveries of an anchor's queue entry) for one returned message.
#: What they match is recorded for the operator but changes nothing (only
#: verified keys do), so results past this many distinct look-ups are left
#: unmatched rather than costing a query each: a DSN may name 500 recipients
#: (the analyzer's cap), anyone can send one, and real reports to postmaster
#: name a handful. A look-up reads at most _LOOKUP_LIMIT rows through
#: deliveries_recipient_recent (migration 0006), or _QUEUE_LIMIT of one entry.
_MAX_WEAK_LOOKUPS = 50

#: Deliveries of one queue entry read at once to find the recipients a report
#: names in it (submission and the API take 100 recipients per message by
#: default); a larger entry is asked address by address past these.
_QUEUE_LIMIT = 1000


@dataclass(frozen=True)
class Match:
    """One analysis result paired with the delivery it refers to.

    ``result`` is None for a message that correlated to exactly one delivery
    but named no recipient (an auto-reply with no usable address, a bounce
    whose text the analyzer could not read): the event then concerns that
    delivery as a whole.
    """

    result: RecipientResult | None
    delivery: Delivery
    key: str


@dataclass
class Correlation:
    """What correlation found, and the evidence it looked at.

    Attributes:
        matches: results paired with deliveries, in the analysis's order.
        unmatched: results no key could pair with a delivery.
        key: the strongest key that matched anything (None: uncorrelated).
        evidence: header-derived and envelope data as seen, verified or not,
            for the stored analysis record (JSON-serialisable).
    """

    matches: list[Match] = field(default_factory=list)
    unmatched: list[RecipientResult] = field(default_factory=list)
    key: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def correlated(self) -> bool:
        """True when at least one result (or the message) reached a delivery."""
        return bool(self.matches)

    def to_json(self) -> dict[str, Any]:
        """JSON form kept next to the analysis, so a classification can be explained."""
        return {
            "key": self.key,
            "matches": [
                {
                    "delivery_id": m.delivery.delivery_id,
                    "recipient": m.result.recipient if m.result else m.delivery.recipient,
                    "key": m.key,
                }
                for m in self.matches
            ],
            "unmatched": [r.recipient for r in self.unmatched],
            "evidence": self.evidence,
        }


@dataclass(frozen=True)
class _Anchor:
    """A delivery a returned message is known to be about, and how it is known.

    ``shared`` anchors come from a per-message token seen by several
    recipients: they prove the message (the queue entry), not the delivery.
    """

    delivery: Delivery
    key: CorrelationKey
    shared: bool = False


def _add(anchors: list[_Anchor], anchor: _Anchor) -> None:
    """Append ``anchor`` unless its delivery is already anchored."""
    if all(a.delivery.delivery_id != anchor.delivery.delivery_id for a in anchors):
        anchors.append(anchor)


def _decode_token(codec: VerpCodec, value: str) -> VerpToken | VerpRejection:
    """Verify a token given as a full address or as a bare local part."""
    text = value.strip().strip("<>").strip()
    if "@" in text:
        return codec.decode(text)
    return codec.decode_local(xtext_decode(text))


def _sent(delivery: Delivery) -> bool:
    """True for a delivery that may have produced a returned message."""
    if delivery.state is State.suppressed:
        return False
    return not (delivery.state is State.queued and delivery.attempts == 0)


class _Correlator:
    """One correlation run (holds the per-run caches and evidence)."""

    def __init__(
        self,
        store: IOutcomeStore,
        codec: VerpCodec,
        bounce: StoredBounce,
        analysis: Analysis,
        now: float,
        window: float,
        known: Mapping[int, Delivery | None] | None = None,
    ) -> None:
        self.store = store
        self.codec = codec
        self.bounce = bounce
        self.analysis = analysis
        self.now = now
        self.window = window
        self.evidence: dict[str, Any] = {}
        self._by_id: dict[int, Delivery | None] = dict(known) if known else {}
        # Weak-key answers of this run: each question is asked once.
        self._recent_found: dict[str, Delivery | None] = {}
        self._queues: dict[str, tuple[dict[str, Delivery], bool]] = {}
        self._members: dict[tuple[str, str], Delivery | None] = {}
        self._weak_lookups = 0

    def _may_look_up(self) -> bool:
        """Spend one weak-key look-up; False (and counted) once they are spent."""
        if self._weak_lookups >= _MAX_WEAK_LOOKUPS:
            self.evidence["weak_lookups_skipped"] = (
                self.evidence.get("weak_lookups_skipped", 0) + 1)
            return False
        self._weak_lookups += 1
        return True

    async def get(self, delivery_id: int) -> Delivery | None:
        if delivery_id not in self._by_id:
            self._by_id[delivery_id] = await self.store.get_delivery(delivery_id)
        return self._by_id[delivery_id]

    async def run(self) -> Correlation:
        anchors = await self._anchors()
        results = list(self.analysis.results)
        if anchors:
            corr = await self._pair(anchors, results)
        else:
            corr = await self._by_recipient(results)
        corr.evidence = self.evidence
        return corr

    # -- steps 1-4: anchors ----------------------------------------------------

    async def _anchors(self) -> list[_Anchor]:
        # 1. the verified envelope recipients (one stored message per
        #    transaction: it may have had several)
        envelope: list[_Anchor] = []
        for rcpt in self.bounce.envelope():
            if rcpt.delivery_id is None:
                continue
            self.evidence.setdefault("envelope_delivery_ids", []).append(rcpt.delivery_id)
            d = await self.get(rcpt.delivery_id)
            if d is None:
                self.evidence["envelope_delivery_missing"] = True
            else:
                _add(envelope, await self._anchor(d, CorrelationKey.verp, rcpt.per_message))
        if envelope:
            return envelope

        # 2. X-Hurricane-Token headers: hints until the MAC verifies
        found: list[_Anchor] = []
        tokens: list[dict[str, object]] = []
        for value in self.analysis.verp_tokens:
            token = _decode_token(self.codec, value)
            entry: dict[str, object] = {"value": value[:200]}
            if isinstance(token, VerpToken):
                entry["delivery_id"] = token.delivery_id
                d = await self.get(token.delivery_id)
                if d is not None:
                    _add(found, await self._anchor(d, CorrelationKey.header_token,
                                                   token.per_message))
                else:
                    entry["missing"] = True
            else:
                entry["rejected"] = token.reason
            tokens.append(entry)
        if tokens:
            self.evidence["header_tokens"] = tokens
        if found:
            return found

        # 3. RFC 3461 ENVID: our VERP local part or address, verified
        if self.analysis.envid:
            token = _decode_token(self.codec, self.analysis.envid)
            entry = {"value": self.analysis.envid[:200]}
            if isinstance(token, VerpToken):
                entry["delivery_id"] = token.delivery_id
                d = await self.get(token.delivery_id)
                if d is not None:
                    self.evidence["envid"] = entry
                    return [await self._anchor(d, CorrelationKey.envid, token.per_message)]
                entry["missing"] = True
            else:
                entry["rejected"] = token.reason
            self.evidence["envid"] = entry

        # 4. our Message-ID in the returned headers: a hint only
        mid = (self.analysis.original_message_id or "").strip().strip("<>").strip()
        if mid:
            self.evidence["message_id"] = mid[:500]
            rows = await self.store.find_deliveries(
                header_message_id=mid, limit=_LOOKUP_LIMIT
            )
            if rows:
                return [_Anchor(d, CorrelationKey.message_id) for d in rows]

        return []

    async def _anchor(self, delivery: Delivery, key: CorrelationKey,
                      per_message: bool) -> _Anchor:
        """The anchor a verified token gives: its delivery, or its message when shared."""
        if not per_message:
            return _Anchor(delivery, key)
        # A per-message token was seen by every recipient of its transaction:
        # it proves which message a report is about, not which recipient.
        # Only when the message had one recipient does that name it.
        group = await self.store.find_deliveries(queue_id=delivery.queue_id, limit=2)
        if len(group) <= 1:
            return _Anchor(delivery, key)
        self.evidence.setdefault("message_tokens", []).append(
            {"delivery_id": delivery.delivery_id, "queue_id": delivery.queue_id,
             "via": key.value})
        return _Anchor(delivery, CorrelationKey.message_token, shared=True)

    # -- pairing results with anchors -------------------------------------------

    async def _pair(self, anchors: list[_Anchor], results: list[RecipientResult]
                    ) -> Correlation:
        corr = Correlation(key=_strongest(a.key for a in anchors))
        own = [a for a in anchors if not a.shared]
        shared = [a for a in anchors if a.shared]
        if not results:
            target = await self._no_result_target(own, shared)
            if target is not None:
                corr.matches.append(target)
            return corr

        by_rcpt: dict[str, _Anchor] = {}
        for anchor in own:
            by_rcpt.setdefault(anchor.delivery.recipient.lower(), anchor)
        used: set[int] = set()
        pending: list[tuple[int, RecipientResult]] = []
        paired: dict[int, Match] = {}
        for i, r in enumerate(results):
            found = next(
                (by_rcpt[a] for a in self._addresses(r) if a in by_rcpt), None
            )
            if found is not None:
                paired[i] = Match(r, found.delivery, found.key)
                used.add(found.delivery.delivery_id)
            else:
                pending.append((i, r))

        # Other recipients of the anchors' queue entries, found by the
        # address in the report's text, which any recipient of the message
        # can write: never verified. Through a shared (per-message) token the
        # message at least is proven (message-token); through one
        # recipient's token, the co-recipient is only a sibling.
        shared_queues = sorted({a.delivery.queue_id for a in shared})
        own_queues = sorted({a.delivery.queue_id for a in own})
        still: list[tuple[int, RecipientResult]] = []
        for i, r in pending:
            match: Match | None = None
            for queues, key in ((shared_queues, CorrelationKey.message_token),
                                (own_queues, CorrelationKey.sibling)):
                member = await self._in_queue(queues, r)
                if member is not None:
                    match = Match(r, member, key)
                    break
            if match is not None:
                paired[i] = match
                used.add(match.delivery.delivery_id)
            else:
                still.append((i, r))

        # A single anchor of its own and a result under another name: the
        # remote rewrote the address (alias, forward). The token is exact
        # about the delivery, so it takes the first failure (else the first
        # result). Never for a shared token: that is the forgery it allows.
        if len(anchors) == 1 and own and own[0].delivery.delivery_id not in used and still:
            pick = next((p for p in still if p[1].action == Action.failed), still[0])
            still.remove(pick)
            paired[pick[0]] = Match(pick[1], own[0].delivery, own[0].key)
            self.evidence.setdefault("renamed", []).append(pick[1].recipient)
        corr.matches = [paired[i] for i in sorted(paired)]
        corr.unmatched = [r for _, r in still]
        if corr.matches:
            corr.key = _strongest(m.key for m in corr.matches)
        return corr

    async def _no_result_target(self, own: list[_Anchor], shared: list[_Anchor]
                                ) -> Match | None:
        """What a recipient-less message concerns, when unambiguous."""
        if len(own) == 1 and not shared:
            return Match(None, own[0].delivery, own[0].key)
        # An auto-reply comes from the recipient itself.
        sender = bare_address(self.analysis.from_address)
        if self.analysis.category != Category.autoreply or not sender:
            return None
        for a in own:
            if a.delivery.recipient.lower() == sender:
                return Match(None, a.delivery, a.key)
        for qid in sorted({a.delivery.queue_id for a in shared}):
            rows = await self.store.find_deliveries(queue_id=qid, recipient=sender, limit=1)
            if rows:
                return Match(None, rows[0], CorrelationKey.message_token)
        return None

    async def _in_queue(self, queue_ids: Sequence[str], r: RecipientResult) -> Delivery | None:
        """The delivery of one of ``queue_ids`` that ``r`` names, if any."""
        for qid in queue_ids:
            loaded = await self._queue(qid)
            if loaded is None:
                return None
            members, complete = loaded
            for addr in self._addresses(r):
                if addr in members:
                    return members[addr]
                if complete:
                    continue
                # a queue entry larger than _QUEUE_LIMIT: ask for this address
                if (qid, addr) not in self._members:
                    if not self._may_look_up():
                        return None
                    rows = await self.store.find_deliveries(queue_id=qid, recipient=addr,
                                                            limit=1)
                    self._members[qid, addr] = rows[0] if rows else None
                member = self._members[qid, addr]
                if member is not None:
                    return member
        return None

    async def _queue(self, qid: str) -> tuple[dict[str, Delivery], bool] | None:
        """The deliveries of one queue entry by recipient, and whether that is all of
        them; read once per run (one weak look-up), None when look-ups are spent.

        One read of the entry rather than one per address named: asked for one
        address, an engine may read every delivery ever made to it to find the
        one of this entry (SQLite prefers the recipient index there).
        """
        if qid not in self._queues:
            if not self._may_look_up():
                return None
            rows = await self.store.find_deliveries(queue_id=qid, limit=_QUEUE_LIMIT)
            members: dict[str, Delivery] = {}
            for d in rows:  # newest first: the first of an address wins
                members.setdefault(d.recipient.lower(), d)
            self._queues[qid] = (members, len(rows) < _QUEUE_LIMIT)
        return self._queues[qid]

    @staticmethod
    def _addresses(r: RecipientResult) -> list[str]:
        """The addresses a result may be known by: ORCPT first (as we sent it)."""
        out: list[str] = []
        for value in (r.original_recipient, r.recipient):
            addr = bare_address(value)
            if addr and addr not in out:
                out.append(addr)
        return out

    # -- step 3b / 4: ORCPT and bare recipients -----------------------------------

    async def _by_recipient(self, results: list[RecipientResult]) -> Correlation:
        corr = Correlation()
        since = self.now - self.window
        paired: list[Match] = []
        for r in results:
            match: Match | None = None
            orcpt = bare_address(r.original_recipient)
            final = bare_address(r.recipient)
            for addr, key in ((orcpt, CorrelationKey.orcpt), (final, CorrelationKey.recipient)):
                if not addr:
                    continue
                d = await self._recent(addr, since)
                if d is not None:
                    match = Match(r, d, key)
                    break
            if match is not None:
                paired.append(match)
            else:
                corr.unmatched.append(r)
        if not results and self.analysis.category == Category.autoreply:
            sender = bare_address(self.analysis.from_address)
            if sender:
                d = await self._recent(sender, since)
                if d is not None:
                    paired.append(Match(None, d, CorrelationKey.recipient))
        corr.matches = paired
        corr.key = _strongest(m.key for m in paired)
        return corr

    async def _recent(self, address: str, since: float) -> Delivery | None:
        if address in self._recent_found:
            return self._recent_found[address]
        if not self._may_look_up():
            return None
        rows = await self.store.find_deliveries(
            recipient=address, since=since, limit=_LOOKUP_LIMIT
        )
        # newest first
        found = next((d for d in rows if _sent(d)), None)
        self._recent_found[address] = found
        return found


def _strongest(keys: Iterable[str]) -> str | None:
    ranked = sorted(set(keys), key=KEYS.index)
    return ranked[0] if ranked else None


async def correlate(
    store: IOutcomeStore,
    codec: VerpCodec,
    bounce: StoredBounce,
    analysis: Analysis,
    now: float,
    *,
    window: float = RECIPIENT_WINDOW,
    known: Mapping[int, Delivery | None] | None = None,
) -> Correlation:
    """Pair each result of an analysis with the delivery it refers to.

    Args:
        store: read access to deliveries (``get_delivery``, ``find_deliveries``).
        codec: verifies header tokens and ENVIDs with the same keys and MAC as
            the envelope recipient.
        bounce: the stored returned message; its ``delivery_id`` comes from
            the envelope recipient the listener verified.
        analysis: what the analyzer found in the message.
        now: the current time, for the recipient look-up window.
        window: how far back a bare recipient address is matched (seconds).
        known: deliveries already read by id (None: no such delivery), as
            ``get_delivery`` gave them just before: not asked again (the
            processor reads a whole batch's envelope deliveries at once).

    Returns:
        The pairs found, the results left unpaired, the strongest key used
        and the evidence seen (including header tokens that failed the MAC).

    Raises:
        StoreUnavailable: when the store cannot answer; nothing was written.
    """
    return await _Correlator(store, codec, bounce, analysis, now, window, known).run()
