"""Account ids and email validation (pure)."""

from __future__ import annotations

import hashlib
import re

_EMAIL = re.compile(r"[a-zA-Z0-9_.+-]+@[a-zA-Z0-9-]+\.[a-zA-Z0-9-.]+", re.ASCII)
MAX_EMAIL = 254
_ACCOUNT_ID = re.compile(r"[0-9a-f]{32}", re.ASCII)


def normalize_email(value: object) -> str | None:
    """The email stripped and lowercased, or None when it is not a plausible address."""
    if not isinstance(value, str):
        return None
    email = value.strip().lower()
    if len(email) > MAX_EMAIL or not _EMAIL.fullmatch(email):
        return None
    return email


def account_id(email: str, hashing_key: str) -> str:
    """32 hex chars: blake2b(email, key, 16 bytes), as OONI computes it (same ids, same key)."""
    h = hashlib.blake2b(email.lower().encode(), key=hashing_key.encode(), digest_size=16)
    return h.hexdigest()


def is_account_id(value: object) -> bool:
    return isinstance(value, str) and _ACCOUNT_ID.fullmatch(value) is not None
