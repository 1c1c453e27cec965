"""Shared scoring helpers (docs/fastpath.md §2.8 and its conventions).

The scores dict is serialized in insertion order and compared byte for byte with the reference,
so every builder returns a *fresh* dict with the reference key order; nothing here is mutable
shared state.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

_ZERO_KEYS = ("blocking_general", "blocking_global", "blocking_country", "blocking_isp",
              "blocking_local")

# Read-only views for comparisons; scorers must start from `scores_zero()` / `scores_failed()`.
SCORES_ZERO: Mapping[str, float] = MappingProxyType(dict.fromkeys(_ZERO_KEYS, 0.0))
SCORES_FAILED: Mapping[str, float] = MappingProxyType({**SCORES_ZERO, "accuracy": 0.0})


def scores_zero() -> dict[str, Any]:
    """Fresh `SCORES_ZERO`: every rule starts from it (§2.6)."""
    return dict.fromkeys(_ZERO_KEYS, 0.0)


def scores_failed() -> dict[str, Any]:
    """Fresh `SCORES_FAILED` (`SCORES_ZERO` + `accuracy: 0.0`, in that order)."""
    scores = scores_zero()
    scores["accuracy"] = 0.0
    return scores


def vod(d: Mapping[str, Any], key: str, default: Any) -> Any:
    """Value-or-default: `default` when `key` is absent or null; `0`, `""`, `[]`… are kept.

    `d` must be an object: anything else raises (AttributeError), like the reference.
    """
    value = d.get(key)
    return default if value is None else value


def nested_vod(d: Mapping[str, Any], *keys: str, default: Any = None) -> Any:
    """Nested value-or-default: absent/null intermediates become `{}`.

    An intermediate that is present but not an object (string, list, number) raises
    AttributeError, as the reference does (§6.4 `test_gn`: `{x: []}`, x, y raises).
    """
    for key in keys[:-1]:
        d = d.get(key)
        if d is None:
            d = {}
        elif not isinstance(d, Mapping):
            raise AttributeError(f"{key!r} is not an object")
    return vod(d, keys[-1], default)


def detect_unknown_failure(tk: Mapping[str, Any]) -> bool:
    """True when any `*_failure` key of the test keys starts with `unknown_failure`.

    Such values come from probe crashes, so callers mark the measurement inaccurate.
    Quirk (reference): the value is read as `value or ""`, so null and any other falsy value
    (false, 0, []) count as "" while a truthy non-string (true, 1, a list) raises.
    """
    for key, value in tk.items():
        if key.endswith("_failure"):
            text = value or ""
            if not isinstance(text, str):
                raise TypeError(f"{key} is not a string")
            if text.startswith("unknown_failure"):
                return True
    return False


def count_tcp_connect(tk: Mapping[str, Any]) -> tuple[int, int]:
    """(accessible, unreachable) over `tk.tcp_connect` (VOD list) entries' `status.success`.

    Only exactly `true` / exactly `false` are counted; other values (null, strings) are
    ignored. An entry without `status.success` raises (KeyError/TypeError), as in the reference.
    """
    accessible = unreachable = 0
    for entry in vod(tk, "tcp_connect", []):
        success = entry["status"]["success"]
        if success is True:
            accessible += 1
        elif success is False:
            unreachable += 1
    return accessible, unreachable


