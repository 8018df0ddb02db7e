"""Bounce analysis: returned messages and SMTP replies -> outcome, reason, hard.

``hurricane.bounce.analyze.analyze`` reads a returned message (RFC 3464 DSN,
RFC 5965 ARF report, RFC 3834 auto-reply, or a free-text bounce of any MTA);
``hurricane.bounce.classify.ReplyClassifier`` classifies one SMTP reply and is
shared with outbound delivery; the value types live in ``hurricane.bounce.model``.
"""

__all__ = ["analyze", "classify", "model", "cli"]
