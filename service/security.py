"""Bearer tokens: random, shown once, stored as SHA-256 (they carry 256 bits of entropy,
so a fast hash is enough: there is nothing to brute-force)."""

from __future__ import annotations

import hashlib
import secrets

TOKEN_PREFIX = "dcs_"


def new_token() -> str:
    """A fresh bearer token (43 URL-safe characters after the prefix)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The hex SHA-256 stored for a token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_hint(token: str) -> str:
    """The first characters of a token, safe to show in listings."""
    return token[: len(TOKEN_PREFIX) + 4]
