"""Whose budget a request spends: an account (valid user token) or the client's network.

Keys are bytes whose first byte tells the kind apart, so one LMDB database holds both:
b"4"/b"6" network keys from `clientip.network_key`, b"t" + account id for accounts.
"""

from __future__ import annotations

from oonibackend.clientip import network_label

ACCOUNT_PREFIX = b"t"


def account_key(account_id: str) -> bytes:
    return ACCOUNT_PREFIX + account_id.encode()


def is_account_key(key: bytes) -> bool:
    return key[:1] == ACCOUNT_PREFIX


def key_label(key: bytes) -> str:
    """"account:<id>", "1.2.3.0/24" or "2001:db8:1::/48"."""
    if is_account_key(key):
        return "account:" + key[1:].decode(errors="replace")
    try:
        return network_label(key)
    except ValueError:
        return "key:" + key.hex()
