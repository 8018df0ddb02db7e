"""The submission listener: applications hand messages in over ESMTP."""

__all__ = [
    "auth",
    "message",
    "policy",
    "server",
]
