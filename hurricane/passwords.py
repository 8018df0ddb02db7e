"""Hashed secrets: submission passwords, web users, admin passwords and API tokens.

Two formats, both computed with the standard library only:

- passwords: ``pbkdf2_sha256$<iterations>$<salt, base64>$<hash, base64>`` (the
  form Django uses). A password has little entropy, so its hash must be slow
  (about 40 ms of CPU at 200,000 iterations); verify it off the reactor thread
  (:mod:`hurricane.credentials`).
- API tokens: ``sha256$<hex digest>``. A token made by ``hurricane passwd
  --token`` is 256 random bits: nobody can search that space, so a slow hash
  buys nothing, and a fast unsalted one lets the server find the token by its
  digest (one dict lookup) instead of trying every configured hash. Tokens
  hashed with pbkdf2 by earlier versions keep working.

Secrets never live in the configuration in clear text; ``hurricane passwd``
prints a hash.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections import Counter
from collections.abc import Iterable

ALGORITHM = "pbkdf2_sha256"
ITERATIONS = 200_000
#: The prefix of a fast API-token hash.
TOKEN_ALGORITHM = "sha256"
#: Bounds of the iteration count a pbkdf2 hash may ask for (a huge count in a
#: hash would be a way to make one verification cost minutes).
MIN_ITERATIONS = 1000
MAX_ITERATIONS = 10_000_000
#: Shortest token ``hurricane passwd --token`` accepts from the operator: a
#: fast hash is only safe for a secret nobody can guess.
MIN_TOKEN_LENGTH = 24


def hash_password(password: str, *, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    """Hash a password for the configuration (pbkdf2_sha256)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return "$".join((
        ALGORITHM,
        str(iterations),
        base64.b64encode(salt).decode("ascii"),
        base64.b64encode(digest).decode("ascii"),
    ))


def is_password_hash(value: str) -> bool:
    """True when ``value`` has the shape of a pbkdf2 hash this module makes."""
    return pbkdf2_iterations(value) is not None


def pbkdf2_iterations(value: str) -> int | None:
    """The iteration count of a well-formed pbkdf2 hash, or None for anything else."""
    parts = value.split("$")
    if len(parts) != 4 or parts[0] != ALGORITHM or not parts[1].isdigit():
        return None
    try:
        base64.b64decode(parts[2], validate=True)
        base64.b64decode(parts[3], validate=True)
    except ValueError:
        return None
    iterations = int(parts[1])
    return iterations if MIN_ITERATIONS <= iterations <= MAX_ITERATIONS else None


def verify_password(password: str, encoded: str) -> bool:
    """Check a password against a pbkdf2 hash in constant time; False for anything else.

    This costs the hash's iteration count in CPU: call it from a thread pool,
    never from the reactor thread.
    """
    try:
        algorithm, iterations_s, salt_b64, hash_b64 = encoded.split("$")
        if algorithm != ALGORITHM:
            return False
        iterations = int(iterations_s)
        salt = base64.b64decode(salt_b64, validate=True)
        expected = base64.b64decode(hash_b64, validate=True)
    except (ValueError, TypeError):
        return False
    if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        return False
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return hmac.compare_digest(digest, expected)


def dummy_password_hash(hashes: Iterable[str]) -> str:
    """A pbkdf2 hash no password matches, as slow as the usual one of ``hashes``.

    Verified for unknown user names so that they take as long as known ones:
    the iteration count is the most common among ``hashes`` (the larger on a
    tie; :data:`ITERATIONS` when there are none), since an unknown name that
    answered faster or slower than the real users would tell them apart.
    """
    counts = Counter(n for n in map(pbkdf2_iterations, hashes) if n is not None)
    iterations = max(counts, key=lambda n: (counts[n], n)) if counts else ITERATIONS
    # A random salt and digest: the digest of no known password.
    return "$".join((ALGORITHM, str(iterations),
                     base64.b64encode(secrets.token_bytes(16)).decode("ascii"),
                     base64.b64encode(secrets.token_bytes(32)).decode("ascii")))


def generate_token() -> str:
    """A new API token: 32 random bytes, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """The hex SHA-256 of a token, the key :func:`hash_token` stores."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def hash_token(token: str) -> str:
    """Hash an API token for ``[web.tokens]`` (``sha256$<hex>``)."""
    return f"{TOKEN_ALGORITHM}${token_digest(token)}"


def token_hash_digest(value: str) -> str | None:
    """The hex digest of a well-formed ``sha256$`` token hash, or None."""
    algorithm, sep, digest = value.partition("$")
    if algorithm != TOKEN_ALGORITHM or not sep or len(digest) != 64:
        return None
    try:
        bytes.fromhex(digest)
    except ValueError:
        return None
    return digest.lower()


def is_token_hash(value: str) -> bool:
    """True for a hash ``[web.tokens]`` accepts: ``sha256$`` or (older) pbkdf2."""
    return token_hash_digest(value) is not None or is_password_hash(value)
