"""Configuration sections of the operations features: accounting log, webhooks.

Frozen dataclasses in the style of :mod:`hurricane.config`, which loads them
from TOML::

    [accounting]
    enabled = true
    file = "/var/log/hurricane/accounting.jsonl"
    rotate_bytes = 104857600      # 0 = rotate daily instead
    max_rotated_files = 0         # 0 = keep every rotated file
    poll_interval = 1.0
    batch = 500

    [[webhooks]]
    name = "crm"                  # names the cursor file; default from the URL
    url = "https://crm.example.com/hooks/hurricane"
    secret_file = "/etc/hurricane/webhook-crm.secret"
    events = ["delivered", "bounced", "complained"]   # [] = every type of the mode
    mode = "final"                # or "every"
    timeout = 10.0
    batch = 100

This module imports nothing from :mod:`hurricane.config` (which imports it), so
validation returns ``(key, message)`` pairs that the loader turns into a
``ConfigError`` naming the key path.
"""

from __future__ import annotations

from dataclasses import dataclass

from hurricane.outcome import EventKind, State

__all__ = [
    "AccountingConfig",
    "WEBHOOK_EVENT_TYPES",
    "WEBHOOK_FINAL_TYPES",
    "WebhookConfig",
]

MIB = 1024 * 1024

#: The outcome types; the only ones a ``mode = "final"`` endpoint receives:
#: the final states an event can set.
WEBHOOK_FINAL_TYPES = tuple(s.value for s in (
    State.delivered, State.failed, State.bounced, State.complained, State.expired,
    State.suppressed))

#: Event types a webhook can receive (see :mod:`hurricane.webhooks`): an
#: event is typed by the state it speaks of, or by its kind when it is
#: information only.
WEBHOOK_EVENT_TYPES = (
    *WEBHOOK_FINAL_TYPES, State.deferred.value, State.queued.value,
    *(k.value for k in (EventKind.delayed, EventKind.autoreply, EventKind.relayed,
                        EventKind.retry, EventKind.note)),
    EventKind.policy.value,  # issue 19: provider and mailing policy actions
)

WEBHOOK_MODES = ("final", "every")


@dataclass(frozen=True)
class AccountingConfig:
    """``[accounting]``: one JSON line per attempt and event (see accounting.py)."""

    enabled: bool = False
    #: The log file; "" means ``<data_dir>/accounting.jsonl``.
    file: str = ""
    #: Rotate when the file reaches this size; 0 rotates daily instead.
    rotate_bytes: int = 100 * MIB
    #: Rotated files kept (size rotation only); 0 keeps them all.
    max_rotated_files: int = 0
    #: Seconds between reads of the event feed when it is idle.
    poll_interval: float = 1.0
    #: Events read and written per batch (one fsync and one cursor write each).
    batch: int = 500

    def problems(self) -> list[tuple[str, str]]:
        """Invalid values as ``(key, message)`` pairs; empty when valid."""
        found = []
        if self.rotate_bytes < 0:
            found.append(("rotate_bytes", "must be 0 or more"))
        if self.max_rotated_files < 0:
            found.append(("max_rotated_files", "must be 0 or more"))
        if self.poll_interval <= 0:
            found.append(("poll_interval", "must be more than 0"))
        if not 1 <= self.batch <= 10_000:
            found.append(("batch", "must be between 1 and 10000"))
        return found


@dataclass(frozen=True)
class WebhookConfig:
    """``[[webhooks]]``: one HTTP endpoint that receives events as JSON arrays."""

    #: http:// or https:// URL that receives the POSTs.
    url: str
    #: File holding the HMAC secret (first line, stripped); preferred.
    secret_file: str = ""
    #: The HMAC secret itself, when there is no secret_file.
    secret: str = ""
    #: Event types sent (see WEBHOOK_EVENT_TYPES); empty = every type of the mode.
    events: tuple[str, ...] = ()
    #: "final": outcomes only; "every": every attempt and informational event too.
    mode: str = "final"
    #: Seconds to wait for the receiver's answer.
    timeout: float = 10.0
    #: Events per POST at most.
    batch: int = 100
    #: Names the cursor file (``<data_dir>/cursors/webhook-<name>.json``);
    #: "" derives it from the URL. Changing the URL of a named endpoint keeps
    #: its position in the feed.
    name: str = ""
    #: Seconds between reads of the event feed when it is idle.
    poll_interval: float = 1.0
    #: First retry delay after a failed POST; doubles up to max_backoff.
    first_backoff: float = 1.0
    max_backoff: float = 600.0

    def problems(self) -> list[tuple[str, str]]:
        """Invalid values as ``(key, message)`` pairs; empty when valid."""
        found = []
        if not self.url.startswith(("http://", "https://")):
            found.append(("url", "must be an http:// or https:// URL"))
        if not self.secret and not self.secret_file:
            found.append(("secret_file", "a secret_file (or secret) is required"))
        if self.secret and self.secret_file:
            found.append(("secret", "give either secret or secret_file, not both"))
        unknown = [e for e in self.events if e not in WEBHOOK_EVENT_TYPES]
        if unknown:
            found.append(("events", f"unknown event type(s) {', '.join(unknown)}; expected "
                                    f"some of {', '.join(WEBHOOK_EVENT_TYPES)}"))
        if self.mode not in WEBHOOK_MODES:
            found.append(("mode", 'must be "final" or "every"'))
        elif self.mode == "final":
            extra = [e for e in self.events if e not in WEBHOOK_FINAL_TYPES]
            if extra:
                found.append(("events", f'{", ".join(extra)} only exist with mode = "every"'))
        if self.timeout <= 0:
            found.append(("timeout", "must be more than 0"))
        if not 1 <= self.batch <= 1000:
            found.append(("batch", "must be between 1 and 1000"))
        if self.poll_interval <= 0:
            found.append(("poll_interval", "must be more than 0"))
        if self.first_backoff <= 0 or self.max_backoff < self.first_backoff:
            found.append(("max_backoff", "need 0 < first_backoff <= max_backoff"))
        if self.name and not all(c.isalnum() or c in "-_." for c in self.name):
            found.append(("name", "letters, digits, '-', '_' and '.' only"))
        return found
