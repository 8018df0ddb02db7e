"""Value types produced by the bounce analyzer and the reply classifier."""

from __future__ import annotations

from dataclasses import dataclass

TYPE_CHECKING = False   # (typing costs ~4 ms to import; mypy reads this as typing's)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["ReplyClass", "RecipientResult", "Analysis", "HARD_REASONS", "is_hard"]

#: Reasons that say the address itself is bad (Sisimai's notion of "hard").
HARD_REASONS = frozenset({"userunknown", "hostunknown", "hasmoved"})


def is_hard(reason: str, status: str | None) -> bool:
    """Sisimai's hard bounce: a bad address, or notaccept with a 5.x.x status."""
    if reason in HARD_REASONS:
        return True
    if reason == "notaccept":
        return bool(status) and status.startswith("5")  # type: ignore[union-attr]
    return False


@dataclass(frozen=True)
class ReplyClass:
    """The classification of one reply (SMTP code, enhanced status, text)."""

    reason: str
    hard: bool
    status: str | None
    status_inferred: bool
    rule: str | None
    permanent: bool | None
    suppress: bool
    code: str | None = None              # the reply code used (given or read from the text)
    stage: str | None = None             # the SMTP stage the decision used
    decided_by: str | None = None        # the rule id, or "status.5.1.1", "onhold.no-cause"...
    runner_up: str | None = None         # the answer the decision beat, if another applied
    runner_up_rule: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "hard": self.hard,
            "status": self.status,
            "status_inferred": self.status_inferred,
            "rule": self.rule,
            "permanent": self.permanent,
            "suppress": self.suppress,
            "code": self.code,
            "stage": self.stage,
            "decided_by": self.decided_by,
            "runner_up": self.runner_up,
            "runner_up_rule": self.runner_up_rule,
        }


@dataclass(frozen=True)
class RecipientResult:
    """What happened to one recipient according to a returned message."""

    recipient: str
    action: str
    code: str | None
    status: str | None
    status_inferred: bool
    reason: str
    hard: bool
    suppress: bool
    diagnostic: str
    remote_mta: str | None
    source: str
    rule: str | None
    original_recipient: str | None = None
    feedback_type: str | None = None
    # the evidence and the decision (docs/bounce-reasons.md), for explanations
    stage: str | None = None
    stage_source: str | None = None
    diagnostic_type: str | None = None
    family: str | None = None
    decided_by: str | None = None
    runner_up: str | None = None
    runner_up_rule: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "recipient": self.recipient,
            "action": self.action,
            "code": self.code,
            "status": self.status,
            "status_inferred": self.status_inferred,
            "reason": self.reason,
            "hard": self.hard,
            "suppress": self.suppress,
            "diagnostic": self.diagnostic,
            "remote_mta": self.remote_mta,
            "source": self.source,
            "rule": self.rule,
            "original_recipient": self.original_recipient,
            "feedback_type": self.feedback_type,
            "stage": self.stage,
            "stage_source": self.stage_source,
            "diagnostic_type": self.diagnostic_type,
            "family": self.family,
            "decided_by": self.decided_by,
            "runner_up": self.runner_up,
            "runner_up_rule": self.runner_up_rule,
        }


@dataclass(frozen=True)
class Analysis:
    """The analysis of one returned message."""

    category: str
    results: tuple[RecipientResult, ...] = ()
    original_message_id: str | None = None
    verp_tokens: tuple[str, ...] = ()
    envid: str | None = None
    subject: str | None = None
    from_address: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "results": [r.to_json() for r in self.results],
            "original_message_id": self.original_message_id,
            "verp_tokens": list(self.verp_tokens),
            "envid": self.envid,
            "subject": self.subject,
            "from_address": self.from_address,
            "error": self.error,
        }
