"""Message streams: transactional mail kept apart from bulk mail (issue 20).

A stream is a named class of mail (``[[streams]]`` in the configuration):
``kind`` says whether it is ``transactional`` (password resets, receipts) or
``bulk`` (newsletters). A message picks its stream with the header
``X-Hurricane-Stream: NAME`` (removed before delivery) or the API field
``stream``; without one it goes to :data:`DEFAULT_STREAM`, a transactional
stream that exists whether configured or not.

Bulk streams carry the one-click unsubscribe headers (RFC 8058) and a
``Feedback-ID``; an unsubscribe or a complaint suppresses the address for its
stream only (``stream:NAME``), so that a newsletter's complaints never block
a password reset.

Other helpers read a stream's keys: ``pool`` names the IP pool its mail
leaves from (issue 21).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from hurricane.outcome import StreamKind

__all__ = [
    "DEFAULT_STREAM",
    "STREAM_HEADER",
    "StreamConfig",
    "Streams",
    "UnsubscribeConfig",
    "feedback_id",
    "valid_stream_name",
]

#: The stream of a message that names none: transactional, always defined.
DEFAULT_STREAM = "transactional"
#: The header an application names a stream with (removed before delivery).
STREAM_HEADER = "X-Hurricane-Stream"

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,29}\Z")
_POOL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_FEEDBACK_FIELDS = ("mailing", "stream", "sender")
_FEEDBACK_FIELD = re.compile(r"\{([^{}]*)\}")


def valid_stream_name(name: str) -> bool:
    """True for a stream name: 1-30 of lower-case letters, digits, ``.``, ``_``,
    ``-``, starting with a letter or digit. It goes into unsubscribe tokens,
    which must survive mail systems that fold the case of an address and fit
    a 64-octet local part (:mod:`hurricane.unsubscribe`)."""
    return bool(_NAME.match(name))


@dataclass(frozen=True)
class StreamConfig:
    """``[[streams]]``: one message stream."""

    #: The name messages use in ``X-Hurricane-Stream`` and the API's ``stream``.
    name: str
    #: ``transactional`` or ``bulk`` (bulk mail gets List-Unsubscribe headers).
    kind: StreamKind = StreamKind.transactional
    #: The IP pool its mail leaves from ("" = the default pool; issue 21).
    pool: str = ""
    #: ``Feedback-ID`` template, fields ``{mailing}``, ``{stream}``, ``{sender}``
    #: ("" = no header); Gmail's feedback loop groups complaints by it.
    feedback_id: str = ""
    #: A complaint suppresses the address in every stream instead of this one.
    complaint_global: bool = False

    @property
    def bulk(self) -> bool:
        """True when the stream's mail is bulk mail."""
        return self.kind is StreamKind.bulk

    @property
    def scope(self) -> str:
        """The suppression scope of this stream: ``stream:NAME``."""
        return f"stream:{self.name}"

    def problems(self) -> list[tuple[str, str]]:
        """Invalid values as ``(key, message)`` pairs; empty when valid."""
        found = []
        if not valid_stream_name(self.name):
            found.append(("name", "expected 1-30 lower-case letters, digits, '.', '_' or '-', "
                                  f"starting with a letter or digit, got {self.name!r}"))
        if self.pool and not _POOL.match(self.pool):
            found.append(("pool", f"expected a pool name, got {self.pool!r}"))
        for fieldname in _FEEDBACK_FIELD.findall(self.feedback_id):
            if fieldname not in _FEEDBACK_FIELDS:
                found.append(("feedback_id", f"unknown field {{{fieldname}}}; expected "
                                             "{mailing}, {stream} or {sender}"))
        if any(c in self.feedback_id for c in "\r\n"):
            found.append(("feedback_id", "must be one line"))
        return found


@dataclass(frozen=True)
class UnsubscribeConfig:
    """``[unsubscribe]``: the one-click unsubscribe endpoint (RFC 8058)."""

    #: Public URL the List-Unsubscribe links start with, e.g.
    #: ``https://mail.example.com`` ("" = no https link, mailto only).
    base_url: str = ""
    #: Listeners serving only ``/u/`` (no report), e.g. behind a public proxy;
    #: [] = ``/u/`` is served on the ``[web]`` listeners only.
    listen: tuple[str, ...] = ()
    #: Days an unsubscribe link stays valid.
    token_max_age_days: int = 365

    def problems(self) -> list[tuple[str, str]]:
        """Invalid values as ``(key, message)`` pairs; empty when valid."""
        found = []
        if self.base_url and not self.base_url.startswith(("https://", "http://")):
            found.append(("base_url", "expected an https:// URL"))
        if any(c in self.base_url for c in " <>,\r\n\"'"):
            found.append(("base_url", "must not contain spaces, quotes, commas or <>"))
        if not 1 <= self.token_max_age_days <= 3650:
            found.append(("token_max_age_days", "expected 1-3650 days"))
        return found


class Streams:
    """The configured streams by name, the default transactional one included."""

    def __init__(self, streams: Sequence[StreamConfig] = ()) -> None:
        by_name: dict[str, StreamConfig] = {DEFAULT_STREAM: StreamConfig(DEFAULT_STREAM)}
        for stream in streams:
            by_name[stream.name] = stream
        self._by_name: Mapping[str, StreamConfig] = by_name

    def get(self, name: str | None) -> StreamConfig | None:
        """The stream called ``name`` (the default one for None or ""), or None."""
        return self._by_name.get(name or DEFAULT_STREAM)

    def names(self) -> list[str]:
        """Every stream name, sorted."""
        return sorted(self._by_name)

    def __iter__(self) -> Iterator[StreamConfig]:
        return iter(self._by_name.values())


def feedback_id(template: str, *, mailing: str | None, stream: str, sender: str) -> str:
    """The ``Feedback-ID`` value of a template: ``{mailing}``, ``{stream}`` and
    ``{sender}`` replaced; characters a header cannot hold dropped."""
    values = {"mailing": mailing or "", "stream": stream, "sender": sender}

    def sub(m: re.Match[str]) -> str:
        return values.get(m.group(1), "")

    text = _FEEDBACK_FIELD.sub(sub, template)
    return "".join(c for c in text if 32 < ord(c) < 127 or c == " ")[:200].strip()
