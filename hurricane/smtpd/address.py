"""Syntax of the things a client names: HELO arguments, MAIL/RCPT paths, ESMTP parameters.

The parsers live in :mod:`hurricane.address`, with the other address and
domain-name forms; they are importable from here as they always were.
"""

from __future__ import annotations

from hurricane.address import (
    MAX_DOMAIN,
    MAX_LOCAL_PART,
    MAX_PATH,
    Kind,
    Path,
    is_address_literal,
    is_valid_domain,
    is_valid_helo,
    parse_params,
    parse_path,
)

__all__ = [
    "Kind",
    "MAX_DOMAIN",
    "MAX_LOCAL_PART",
    "MAX_PATH",
    "Path",
    "is_address_literal",
    "is_valid_domain",
    "is_valid_helo",
    "parse_params",
    "parse_path",
]
