"""Hashed secrets: submission passwords, API tokens, web users.

Format: ``pbkdf2_sha256$<iterations>$<salt, base64>$<hash, base64>`` (the form
Django uses), computed with the standard library only. Secrets never live in
the configuration in clear text; ``hurricane passwd`` prints a hash.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

ALGORITHM = "pbkdf2_sha256"
ITERATIONS = 200_000


def hash_password(password: str, *, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    """Hash a password or token for the configuration."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return "$".join((
        ALGORITHM,
        str(iterations),
        base64.b64encode(salt).decode("ascii"),
        base64.b64encode(digest).decode("ascii"),
    ))


def is_password_hash(value: str) -> bool:
    """True when ``value`` has the shape of a hash this module makes."""
    parts = value.split("$")
    return len(parts) == 4 and parts[0] == ALGORITHM and parts[1].isdigit()


def verify_password(password: str, encoded: str) -> bool:
    """Check a password against a hash in constant time; False for a malformed hash."""
    try:
        algorithm, iterations_s, salt_b64, hash_b64 = encoded.split("$")
        if algorithm != ALGORITHM:
            return False
        iterations = int(iterations_s)
        salt = base64.b64decode(salt_b64, validate=True)
        expected = base64.b64decode(hash_b64, validate=True)
    except (ValueError, TypeError):
        return False
    if not 1000 <= iterations <= 10_000_000:
        return False
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return hmac.compare_digest(digest, expected)
