"""Value types produced by the bounce analyzer and the reply classifier."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, dataclass

TYPE_CHECKING = False   # (typing costs ~4 ms to import; mypy reads this as typing's)
if TYPE_CHECKING:
    from typing import Any, ClassVar, TypeVar

    _R = TypeVar("_R", bound="Record")

__all__ = ["ReplyClass", "RecipientResult", "Analysis", "HARD_REASONS", "is_hard", "Record",
           "replace"]

#: Reasons that say the address itself is bad (Sisimai's notion of "hard").
HARD_REASONS = frozenset({"userunknown", "hostunknown", "hasmoved"})


class Record:
    """What ``@dataclass(frozen=True)`` writes for a class, written once for all of them.

    The dataclass decorator compiles six methods from generated source for each
    class (~8 M instructions for RecipientResult, ~45 M for the analyzer's
    six classes: a fifth of ``hurricane analyze``'s start-up). A record class is
    declared ``@dataclass(init=False, repr=False, eq=False)`` (fields, defaults,
    ``dataclasses.replace``, ``fields`` and ``asdict`` as before) with its own
    ``__init__`` written out; the representation, equality, hash and refusal to
    be changed are these, the same as the generated ones
    (tests/bounce/test_bounce_records.py compares them).
    """

    __slots__ = ()
    __dataclass_fields__: ClassVar[dict[str, Any]]

    def _values(self) -> tuple[object, ...]:
        return tuple([getattr(self, n) for n in self.__dataclass_fields__])

    def __repr__(self) -> str:
        return "%s(%s)" % (type(self).__qualname__, ", ".join(
            ["%s=%r" % (n, getattr(self, n)) for n in self.__dataclass_fields__]))

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return self._values() == other._values()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._values())

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError("cannot assign to field %r" % (name,))

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError("cannot delete field %r" % (name,))


_set = object.__setattr__


def replace(record: _R, /, **changes: Any) -> _R:
    """``dataclasses.replace(record, **changes)`` for a Record, without its pass over the
    fields and through ``__init__`` (a third of the time): the same fields, in the
    same order, with the changes."""
    fields = record.__dataclass_fields__
    for name in changes:
        if name not in fields:
            raise TypeError("%s.__init__() got an unexpected keyword argument %r"
                            % (type(record).__name__, name))
    new = object.__new__(type(record))
    d = new.__dict__
    d.update(record.__dict__)
    d.update(changes)
    return new


def is_hard(reason: str, status: str | None) -> bool:
    """Sisimai's hard bounce: a bad address, or notaccept with a 5.x.x status."""
    if reason in HARD_REASONS:
        return True
    if reason == "notaccept":
        return bool(status) and status.startswith("5")  # type: ignore[union-attr]
    return False


@dataclass(init=False, repr=False, eq=False)
class ReplyClass(Record):
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

    def __init__(self, reason: str,
                 hard: bool,
                 status: str | None,
                 status_inferred: bool,
                 rule: str | None,
                 permanent: bool | None,
                 suppress: bool,
                 code: str | None = None,
                 stage: str | None = None,
                 decided_by: str | None = None,
                 runner_up: str | None = None,
                 runner_up_rule: str | None = None) -> None:
        _set(self, "reason", reason)
        _set(self, "hard", hard)
        _set(self, "status", status)
        _set(self, "status_inferred", status_inferred)
        _set(self, "rule", rule)
        _set(self, "permanent", permanent)
        _set(self, "suppress", suppress)
        _set(self, "code", code)
        _set(self, "stage", stage)
        _set(self, "decided_by", decided_by)
        _set(self, "runner_up", runner_up)
        _set(self, "runner_up_rule", runner_up_rule)

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


@dataclass(init=False, repr=False, eq=False)
class RecipientResult(Record):
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

    def __init__(self, recipient: str,
                 action: str,
                 code: str | None,
                 status: str | None,
                 status_inferred: bool,
                 reason: str,
                 hard: bool,
                 suppress: bool,
                 diagnostic: str,
                 remote_mta: str | None,
                 source: str,
                 rule: str | None,
                 original_recipient: str | None = None,
                 feedback_type: str | None = None,
                 stage: str | None = None,
                 stage_source: str | None = None,
                 diagnostic_type: str | None = None,
                 family: str | None = None,
                 decided_by: str | None = None,
                 runner_up: str | None = None,
                 runner_up_rule: str | None = None) -> None:
        _set(self, "recipient", recipient)
        _set(self, "action", action)
        _set(self, "code", code)
        _set(self, "status", status)
        _set(self, "status_inferred", status_inferred)
        _set(self, "reason", reason)
        _set(self, "hard", hard)
        _set(self, "suppress", suppress)
        _set(self, "diagnostic", diagnostic)
        _set(self, "remote_mta", remote_mta)
        _set(self, "source", source)
        _set(self, "rule", rule)
        _set(self, "original_recipient", original_recipient)
        _set(self, "feedback_type", feedback_type)
        _set(self, "stage", stage)
        _set(self, "stage_source", stage_source)
        _set(self, "diagnostic_type", diagnostic_type)
        _set(self, "family", family)
        _set(self, "decided_by", decided_by)
        _set(self, "runner_up", runner_up)
        _set(self, "runner_up_rule", runner_up_rule)

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


@dataclass(init=False, repr=False, eq=False)
class Analysis(Record):
    """The analysis of one returned message."""

    category: str
    results: tuple[RecipientResult, ...] = ()
    original_message_id: str | None = None
    verp_tokens: tuple[str, ...] = ()
    envid: str | None = None
    subject: str | None = None
    from_address: str | None = None
    error: str | None = None

    def __init__(self, category: str,
                 results: tuple[RecipientResult, ...] = (),
                 original_message_id: str | None = None,
                 verp_tokens: tuple[str, ...] = (),
                 envid: str | None = None,
                 subject: str | None = None,
                 from_address: str | None = None,
                 error: str | None = None) -> None:
        _set(self, "category", category)
        _set(self, "results", results)
        _set(self, "original_message_id", original_message_id)
        _set(self, "verp_tokens", verp_tokens)
        _set(self, "envid", envid)
        _set(self, "subject", subject)
        _set(self, "from_address", from_address)
        _set(self, "error", error)

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
