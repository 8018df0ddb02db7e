"""The report's side of closed-loop delivery (issue 19).

- ``/providers``: every provider budget with its configured and current
  limits, pause or suspension and the cause, and the recent policy actions
  (automatic and operator ones), from the store: every node's.
- The "held" card of a mailing page (:func:`hold_card`): when and why its
  breaker tripped, with the evidence, and Release / Cancel buttons.
- ``POST /hold``: the buttons' form (CSRF like the other forms), through
  :meth:`hurricane.operations.Operations.release_mailing` and
  :meth:`~hurricane.operations.Operations.cancel_mailing`.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from twisted.web.server import Request
from twisted.web.template import Tag, tags

from hurricane.operations import InvalidRequest
from hurricane.outcome import State
from hurricane.policy.operate import NoPolicyStore
from hurricane.report.html import fmt_time, kpis, layout, q, redirect, table
from hurricane.report.pages import Page, Pages, finish
from hurricane.report.resource import HttpError, arg

__all__ = ["HoldForm", "ProvidersPage", "hold_card"]

#: Policy events listed on the providers page.
RECENT = 50


def _rate(value: object) -> str:
    return f"{value}/min" if value else "unlimited"


def _texts(value: object) -> list[str]:
    return [str(x) for x in value] if isinstance(value, list) else []


def _evidence(evidence: object) -> str:
    return json.dumps(evidence, sort_keys=True) if evidence else ""


class ProvidersPage(Page):
    """``/providers``: limits as they adapted, and the recent actions."""

    async def get(self, request: Request, user: str) -> None:
        """The providers table and the recent policy events."""
        ops = self.pages.operations
        rows = await ops.providers()
        now = self.pages.clock.seconds()
        lines: list[list[Any]] = []
        for r in rows:
            status = ("suspended until " + fmt_time(float(str(r["suspended_until"])))
                      if r["suspended_until"] else
                      "paused until " + fmt_time(float(str(r["paused_until"])))
                      if r["paused_until"] else "sending")
            globs = ", ".join([*_texts(r["mx"]), *_texts(r["domains"])])
            lines.append([r["provider"], globs or "-", r["max_connections"],
                          _rate(r["rate_per_minute"]), _rate(r["current_rate_per_minute"]),
                          status, r["cause"] or "-"])
        events = await ops.policy_events(limit=RECENT)
        actions = [[fmt_time(e.action.at), e.action.scope, e.action.subject, e.action.action,
                    e.action.cause, e.action.before, e.action.after,
                    _evidence(dict(e.action.evidence)), e.node or "-"] for e in events]
        suspended = sum(1 for r in rows if r["suspended_until"])
        throttled = sum(1 for r in rows if r["current_rate_per_minute"]
                        and r["current_rate_per_minute"] != r["rate_per_minute"])
        content = [
            kpis([("Providers", len(rows), "budgets with a state"),
                  ("Below their rate", throttled, "cut after pushback"),
                  ("Suspended", suspended, f"as of {fmt_time(now)}")]),
            tags.div(table(["Provider", "MX / domains", "Connections", "Configured rate",
                            "Current rate", "Status", "Last cause"], lines), class_="card"),
            tags.h2("Recent actions"),
            tags.div(table(["When", "Scope", "Subject", "Action", "Cause", "Before", "After",
                            "Evidence", "Node"], actions, classes={0: "nowrap"}),
                     class_="card") if actions else tags.p("No action yet.", class_="muted"),
        ]
        finish(request, layout("Providers", content))


async def hold_card(pages: Pages, user: str, mailing_id: str) -> list[Tag]:
    """What a mailing page says about its breaker (nothing when it never tripped)."""
    try:
        hold = await pages.operations.mailing_hold(mailing_id)
    except (InvalidRequest, NoPolicyStore):
        return []
    b = hold.breaker
    if b is None:
        return []
    when = fmt_time(b.held_at)
    evidence = ", ".join(f"{k} {v}" for k, v in sorted(b.evidence.items()))
    text = (f"Held at {when} by its circuit breaker: {b.cause} ({evidence}); "
            f"{b.held} recipients held.")
    if b.state != State.held.value:
        text += f" {b.state.capitalize()} at {fmt_time(b.changed_at)}."
        return [tags.div(text, class_="msg")]

    def button(action: str, label: str) -> Tag:
        return tags.form(pages.csrf_field(user),
                         tags.input(type="hidden", name="mailing_id", value=mailing_id),
                         tags.input(type="hidden", name="action", value=action),
                         tags.button(label, type="submit"), method="post", action="/hold",
                         class_="inline")

    return [tags.div(text, f" Still held: {hold.counts.held}. ",
                     button("release", "Release (send them)"),
                     button("cancel", "Cancel them"), class_="msg")]


class HoldForm(Page):
    """``POST /hold``: release or cancel a held mailing, then back to its page."""

    form = True

    async def post(self, request: Request, user: str) -> None:
        """Release or cancel (the scheduler is woken by a release)."""
        mailing = arg(request, "mailing_id")
        action = arg(request, "action")
        ops = self.pages.operations
        try:
            if action == "release":
                count = await ops.release_mailing(mailing, f"web {user}")
                done = f"Released {count} held recipients."
            elif action == "cancel":
                count = await ops.cancel_mailing(mailing, f"web {user}")
                done = f"Cancelled {count} held recipients."
            else:
                raise HttpError(400, "action: expected release or cancel", "action")
        except InvalidRequest as e:
            raise HttpError(400, e.message, e.field) from None
        except NoPolicyStore as e:
            raise HttpError(400, str(e)) from None
        assert mailing is not None  # the operations refuse a missing id
        redirect(request, f"/mailing/{q(mailing.strip())}?" + urlencode({"done": done}))
