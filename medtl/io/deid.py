"""Pseudonymous identifiers: keyed hashes instead of patient IDs."""

from __future__ import annotations

import hashlib
import hmac


def hash_id(value: str, salt: str, length: int = 10) -> str:
    """A keyed hash (HMAC-SHA256) of an identifier, as ``length`` hex characters.

    The same value and salt always give the same pseudonym, so cases of one patient
    stay grouped; without the salt the pseudonym cannot be traced back.

    Example:
        >>> hash_id("DEMO-001", "s3cret")
        'fdf17959ba'
    """
    return hmac.new(salt.encode(), value.encode(), hashlib.sha256).hexdigest()[:length]
