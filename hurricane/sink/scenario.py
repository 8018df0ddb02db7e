"""Scenarios of the smart sink: which behaviour each recipient gets.

Pure data and functions, no protocol, no clock. A :class:`Scenario` maps a
recipient address to a :class:`Behaviour` through an ordered list of
:class:`Rule` objects (first match wins). A rule names one behaviour, or a
weighted *mix* of behaviours; the choice inside a mix is a pure function of
the scenario's seed and the lower-cased address (SHA-256), so the same
recipient always gets the same behaviour, on retries and in the next run.

The file format (TOML) is documented in :mod:`hurricane.sink`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = [
    "ACTIONS",
    "BUILTIN_BEHAVIOURS",
    "Behaviour",
    "DEFAULT_RULES",
    "ProviderPlay",
    "RETURNS",
    "Rule",
    "Scenario",
    "ScenarioError",
    "default_scenario",
    "load_scenario",
    "scenario_from_dict",
]

#: What the sink does with a recipient.
ACTIONS = ("accept", "reject", "defer", "drop", "stall")
#: Where a refusal happens.
PHASES = ("rcpt", "data")
#: What the sink mails back after accepting.
RETURNS = ("none", "dsn", "delayed", "ndr", "autoreply", "arf", "unsubscribe",
           "unsubscribe-mailto")
#: MTA styles of free-text NDRs (see :mod:`hurricane.sink.returns`).
NDR_STYLES = ("postfix", "exim", "sendmail", "qmail", "exchange", "gmail")
#: TLS modes of the listener.
TLS_MODES = ("off", "on", "fail")


class ScenarioError(ValueError):
    """A scenario file or table is wrong; the message names the key."""


@dataclass(frozen=True)
class Behaviour:
    """What happens to one recipient.

    Args:
        name: the name it is counted under.
        action: ``accept``, ``reject`` (``code`` at ``at``), ``defer`` (a 4xx
            at ``at``, ``times`` times, then accept), ``drop`` (close the
            connection in the middle of DATA, ``times`` times or, with 0,
            always), ``stall`` (say nothing for ``stall`` seconds after the
            final dot, then 451).
        at: ``rcpt`` or ``data`` (after the final dot).
        code: SMTP reply code for ``reject`` / ``defer``.
        status: enhanced status code.
        text: reply text.
        times: for ``defer`` and ``drop``: how many attempts fail before the
            recipient is accepted (0 = forever).
        then: after accepting: ``none``, ``dsn`` (RFC 3464 failure),
            ``delayed`` (RFC 3464 "delayed"), ``ndr`` (free text in ``style``),
            ``autoreply`` (RFC 3834), ``arf`` (RFC 5965 complaint),
            ``unsubscribe`` (the RFC 8058 one-click POST to the message's
            List-Unsubscribe https link, loopback only) or ``unsubscribe-mailto``
            (a mail to its mailto address).
        style: the MTA whose NDR format ``ndr`` imitates.
        delay: seconds between accepting and sending the return.
        stall: seconds of silence for ``stall``.
        return_status: enhanced status code reported in a DSN/NDR.
        return_text: diagnostic text reported in a DSN/NDR.
    """

    name: str
    action: str = "accept"
    at: str = "rcpt"
    code: int = 250
    status: str = "2.0.0"
    text: str = "Ok"
    times: int = 0
    then: str = "none"
    style: str = "postfix"
    delay: float = 1.0
    stall: float = 600.0
    return_status: str = "5.1.1"
    return_text: str = "user unknown"

    @property
    def refuses_at_rcpt(self) -> bool:
        """True when RCPT itself is refused (reject or defer at rcpt)."""
        return self.action in ("reject", "defer") and self.at == "rcpt"

    @property
    def data_class(self) -> str:
        """What happens after the dot; recipients of one transaction must agree."""
        if self.action in ("drop", "stall"):
            return self.action
        if self.action in ("reject", "defer") and self.at == "data":
            return f"{self.action}:{self.code}:{self.status}:{self.text}"
        return "accept"

    def check(self) -> None:
        """Raise :class:`ScenarioError` for an impossible combination."""
        where = f"behaviour {self.name!r}"
        if self.action not in ACTIONS:
            raise ScenarioError(f"{where}: action must be one of {', '.join(ACTIONS)}")
        if self.at not in PHASES:
            raise ScenarioError(f"{where}: at must be rcpt or data")
        if self.then not in RETURNS:
            raise ScenarioError(f"{where}: then must be one of {', '.join(RETURNS)}")
        if self.style not in NDR_STYLES:
            raise ScenarioError(f"{where}: style must be one of {', '.join(NDR_STYLES)}")
        if self.action == "reject" and not 400 <= self.code <= 599:
            raise ScenarioError(f"{where}: reject needs a 4xx or 5xx code")
        if self.action == "defer" and not 400 <= self.code <= 499:
            raise ScenarioError(f"{where}: defer needs a 4xx code")
        if self.times < 0 or self.delay < 0 or self.stall < 0:
            raise ScenarioError(f"{where}: times, delay and stall must be >= 0")


@dataclass(frozen=True)
class ProviderPlay:
    """How the sink plays a whole provider (issue 19), on top of the behaviours.

    Args:
        rate_limit: recipients accepted per second (a sliding one-second
            window); beyond, every RCPT gets ``421 4.7.28`` and the connection
            closes, as Gmail does. 0 = no limit.
        complaint_rate: once more than this share of the accepted recipients
            were ``complain`` ones (after ``complaint_min`` accepted), every
            RCPT is refused ``554 5.7.1`` (blocked for complaints). 0 = never.
        complaint_min: accepted recipients before the complaint rate counts.
    """

    rate_limit: float = 0.0
    complaint_rate: float = 0.0
    complaint_min: int = 100

    def check(self) -> None:
        """Raise :class:`ScenarioError` for a negative value."""
        if self.rate_limit < 0 or self.complaint_rate < 0 or self.complaint_min < 1:
            raise ScenarioError("provider: rate_limit and complaint_rate must be >= 0, "
                                "complaint_min >= 1")


def _b(name: str, **kw: Any) -> Behaviour:
    return Behaviour(name=name, **kw)


#: Behaviours every scenario knows by name (a file may add or replace some).
BUILTIN_BEHAVIOURS: Mapping[str, Behaviour] = {
    b.name: b
    for b in (
        _b("accept"),
        _b("unknown", action="reject", code=550, status="5.1.1",
           text="<{rcpt}>: Recipient address rejected: User unknown in virtual mailbox table"),
        _b("full", action="reject", code=552, status="5.2.2",
           text="<{rcpt}>: Recipient address rejected: Mailbox full"),
        _b("spam", action="reject", at="data", code=554, status="5.7.1",
           text="Message rejected as spam by content filter"),
        _b("grey", action="defer", code=451, status="4.7.1",
           text="<{rcpt}>: Recipient address rejected: Greylisted, try again later", times=2),
        _b("ratelimit", action="defer", code=421, status="4.7.0",
           text="Too many messages, rate limited, try again later", times=1),
        _b("late", then="dsn", return_status="5.1.1",
           return_text="550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown"),
        _b("delayed", then="delayed", return_status="4.4.7",
           return_text="Delivery delayed: connection timed out"),
        _b("complain", then="arf"),
        _b("vacation", then="autoreply"),
        _b("unsubscribe", then="unsubscribe"),
        _b("unsubscribe-mailto", then="unsubscribe-mailto"),
        _b("drop", action="drop"),
        _b("stall", action="stall", stall=600.0),
        *(
            _b(f"ndr-{style}", then="ndr", style=style, return_status="5.1.1",
               return_text="550 5.1.1 <{rcpt}>: user unknown")
            for style in NDR_STYLES
        ),
        _b("ndr-full", then="ndr", style="exim", return_status="5.2.2",
           return_text="552 5.2.2 <{rcpt}>: mailbox full, quota exceeded"),
    )
}


@dataclass(frozen=True)
class Rule:
    """One line of a scenario: addresses matching ``match`` get ``behaviour`` or a mix.

    Args:
        match: a shell glob over the lower-cased ``local@domain``
            (``"unknown-*@*"``, ``"*@full.test"``, ``"*"``).
        behaviour: the behaviour's name, when there is no mix.
        mix: (behaviour name, weight) pairs; weights are relative (percentages
            are the usual choice).
    """

    match: str
    behaviour: str | None = None
    mix: tuple[tuple[str, float], ...] = ()

    def matches(self, address: str) -> bool:
        """True when ``address`` (lower-cased) matches this rule's glob."""
        return fnmatch.fnmatchcase(address, self.match)


#: The default rules: the local part's prefix chooses, anything else is accepted.
DEFAULT_RULES: tuple[Rule, ...] = (
    *(
        Rule(f"{prefix}-*@*", behaviour=name)
        for prefix, name in (
            ("unknown", "unknown"), ("full", "full"), ("spam", "spam"), ("grey", "grey"),
            ("ratelimit", "ratelimit"), ("late", "late"), ("delayed", "delayed"),
            ("complain", "complain"), ("vacation", "vacation"), ("drop", "drop"),
            ("stall", "stall"), ("unsub", "unsubscribe"), ("unsubmail", "unsubscribe-mailto"),
        )
    ),
    *(Rule(f"ndr{style}-*@*", behaviour=f"ndr-{style}") for style in NDR_STYLES),
    Rule("*", behaviour="accept"),
)


def _unit(seed: int | str, address: str) -> float:
    """A number in [0, 1) that depends only on the seed and the address."""
    digest = hashlib.sha256(f"{seed}\0{address}".encode("utf-8", "replace")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


@dataclass(frozen=True)
class Scenario:
    """Rules, behaviours and listener settings of one sink.

    Args:
        rules: tried in order; the first whose glob matches decides.
        behaviours: name -> behaviour (built-ins plus the file's own).
        seed: makes the mixes repeatable.
        tls: ``off``, ``on`` (offer STARTTLS) or ``fail`` (offer it, then
            break the handshake).
        hostname: the name the sink greets with and writes into returns.
    """

    rules: tuple[Rule, ...] = DEFAULT_RULES
    behaviours: Mapping[str, Behaviour] = field(default_factory=lambda: dict(BUILTIN_BEHAVIOURS))
    seed: int | str = 0
    tls: str = "off"
    hostname: str = "mx.sink.test"
    provider: ProviderPlay = field(default_factory=ProviderPlay)

    def decide(self, address: str) -> Behaviour:
        """The behaviour for ``address`` (always the same for the same address)."""
        address = address.lower()
        for rule in self.rules:
            if not rule.matches(address):
                continue
            if rule.behaviour is not None:
                return self.behaviours[rule.behaviour]
            total = sum(w for _, w in rule.mix)
            point = _unit(self.seed, address) * total
            for name, weight in rule.mix:
                if point < weight:
                    return self.behaviours[name]
                point -= weight
            return self.behaviours[rule.mix[-1][0]]
        return self.behaviours["accept"]

    def check(self) -> None:
        """Raise :class:`ScenarioError` when a rule names an unknown behaviour."""
        if self.tls not in TLS_MODES:
            raise ScenarioError(f"tls must be one of {', '.join(TLS_MODES)}")
        self.provider.check()
        for b in self.behaviours.values():
            b.check()
        for i, rule in enumerate(self.rules):
            names = [rule.behaviour] if rule.behaviour else [n for n, _ in rule.mix]
            if not names:
                raise ScenarioError(f"rules[{i}]: needs behaviour or mix")
            for name in names:
                if name not in self.behaviours:
                    raise ScenarioError(f"rules[{i}]: unknown behaviour {name!r}")
            if any(w < 0 for _, w in rule.mix) or (rule.mix and not sum(w for _, w in rule.mix)):
                raise ScenarioError(f"rules[{i}]: mix weights must be >= 0, not all 0")


def default_scenario(seed: int | str = 0) -> Scenario:
    """The scenario used when no file is given (see :mod:`hurricane.sink`)."""
    return Scenario(seed=seed)


_BEHAVIOUR_KEYS = {f for f in Behaviour.__dataclass_fields__ if f != "name"}


def _behaviour(name: str, table: object, base: Behaviour | None) -> Behaviour:
    if not isinstance(table, Mapping):
        raise ScenarioError(f"behaviours.{name}: expected a table")
    unknown = set(table) - _BEHAVIOUR_KEYS - {"like"}
    if unknown:
        raise ScenarioError(f"behaviours.{name}: unknown key {sorted(unknown)[0]!r}; "
                            f"expected {', '.join(sorted(_BEHAVIOUR_KEYS | {'like'}))}")
    like = table.get("like")
    start = BUILTIN_BEHAVIOURS.get(like) if isinstance(like, str) else base
    if like is not None and start is None:
        raise ScenarioError(f"behaviours.{name}: like: unknown built-in {like!r}")
    values = {k: v for k, v in table.items() if k != "like"}
    try:
        return replace(start or Behaviour(name=name), name=name, **values)
    except TypeError as e:  # pragma: no cover - keys were checked above
        raise ScenarioError(f"behaviours.{name}: {e}") from None


def scenario_from_dict(data: Mapping[str, Any], *, seed: int | str | None = None) -> Scenario:
    """Build and check a scenario from parsed TOML.

    Args:
        data: the parsed file.
        seed: overrides the file's ``seed`` when given.

    Raises:
        ScenarioError: naming the wrong key.
    """
    allowed = {"seed", "tls", "hostname", "behaviours", "rules", "provider"}
    unknown = set(data) - allowed
    if unknown:
        raise ScenarioError(f"unknown key {sorted(unknown)[0]!r}; expected "
                            f"{', '.join(sorted(allowed))}")
    behaviours = dict(BUILTIN_BEHAVIOURS)
    for name, table in dict(data.get("behaviours", {})).items():
        behaviours[name] = _behaviour(name, table, BUILTIN_BEHAVIOURS.get(name))
    rules: list[Rule] = []
    raw_rules = data.get("rules")
    if raw_rules is None:
        rules = list(DEFAULT_RULES)
    else:
        if not isinstance(raw_rules, Sequence):
            raise ScenarioError("rules: expected an array of tables ([[rules]])")
        for i, r in enumerate(raw_rules):
            if not isinstance(r, Mapping) or "match" not in r:
                raise ScenarioError(f"rules[{i}]: expected a table with match")
            extra = set(r) - {"match", "behaviour", "mix"}
            if extra:
                raise ScenarioError(f"rules[{i}]: unknown key {sorted(extra)[0]!r}")
            mix = r.get("mix", {})
            if not isinstance(mix, Mapping):
                raise ScenarioError(f"rules[{i}]: mix: expected a table name = weight")
            rules.append(Rule(str(r["match"]).lower(), r.get("behaviour"),
                              tuple((str(k), float(v)) for k, v in mix.items())))
        if not any(rule.match == "*" for rule in rules):
            rules.append(Rule("*", behaviour="accept"))
    scenario = Scenario(
        rules=tuple(rules), behaviours=behaviours,
        seed=seed if seed is not None else data.get("seed", 0),
        tls=str(data.get("tls", "off")), hostname=str(data.get("hostname", "mx.sink.test")),
        provider=_provider(data.get("provider", {})),
    )
    scenario.check()
    return scenario


def _provider(table: Any) -> ProviderPlay:
    if not isinstance(table, Mapping):
        raise ScenarioError("provider: expected a table")
    keys = set(ProviderPlay.__dataclass_fields__)
    unknown = set(table) - keys
    if unknown:
        raise ScenarioError(f"provider: unknown key {sorted(unknown)[0]!r}; expected "
                            f"{', '.join(sorted(keys))}")
    try:
        return ProviderPlay(
            rate_limit=float(table.get("rate_limit", 0.0)),
            complaint_rate=float(table.get("complaint_rate", 0.0)),
            complaint_min=int(table.get("complaint_min", 100)))
    except (TypeError, ValueError):
        raise ScenarioError("provider: expected numbers") from None


def load_scenario(path: str, *, seed: int | str | None = None) -> Scenario:
    """Read a scenario file (TOML).

    Raises:
        ScenarioError: naming the file and the key.
    """
    try:
        with open(path, "rb") as fp:
            data = tomllib.load(fp)
    except OSError as e:
        raise ScenarioError(f"{path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{path}: not valid TOML: {e}") from None
    try:
        return scenario_from_dict(data, seed=seed)
    except ScenarioError as e:
        raise ScenarioError(f"{path}: {e}") from None


def mix_rule(weights: Mapping[str, float], match: str = "*") -> Rule:
    """A rule giving addresses matching ``match`` a weighted mix (demo, tests)."""
    return Rule(match, None, tuple(weights.items()))
