"""OONI Run descriptors: validation, normalisation and versioning rules (pure).

A change of `nettests`, `author` or `icon` makes a new descriptor version (a new revision);
any other change (names, descriptions and their translations, colour, expiry) updates the
current version in place. Nettests carry both `is_*_enabled` (older probes) and
`is_*_enabled_default` (newer ones) so every probe version understands them.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from oonibackend import jsonutil, validate
from oonibackend.errors import Invalid
from oonibackend.oonirun.engine import DYNAMIC_TARGETS

MAX_DESCRIPTOR_BYTES = 256 * 1024
MAX_NETTESTS = 100
MAX_INPUTS = 20_000
TEXTS = ("name", "short_description", "description")
VERSIONED = ("nettests", "author", "icon")
FLAGS = ("is_background_run_enabled", "is_manual_run_enabled")
_LANG = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*", re.ASCII)
_COLOR = re.compile(r"#[0-9A-Fa-f]{6}", re.ASCII)


def bad(message: str, code: str = "err_request_params") -> Invalid:
    return Invalid(message, err_str=code)


def _text(body: dict[str, Any], key: str, limit: int, required: bool = False) -> str:
    v = body.get(key)
    if v is None:
        v = ""
    if not isinstance(v, str) or len(v) > limit:
        raise bad(f"Invalid {key}")
    if required and not v.strip():
        raise bad(f"'{key}' field must not be empty")
    return v


def _intl(body: dict[str, Any], key: str, limit: int) -> dict[str, str]:
    v = body.get(key) or {}
    if not isinstance(v, dict) or len(v) > 200:
        raise bad(f"Invalid {key}")
    for lang, text in v.items():
        if not isinstance(lang, str) or not _LANG.fullmatch(lang):
            raise bad(f"Invalid language code in {key}")
        if not isinstance(text, str) or len(text) > limit:
            raise bad(f"Invalid {key}")
        if not text.strip():
            raise bad(f"Empty translation field in {key}", "err_empty_translation_field")
    return dict(v)


def _flag(test: dict[str, Any], name: str) -> bool:
    """Either spelling of a flag; the `_default` one wins when both are given."""
    for key in (name + "_default", name):
        if key in test:
            v = test[key]
            if not isinstance(v, bool):
                raise bad(f"Invalid {key}: a boolean")
            return v
    return False


def nettest(test: Any) -> dict[str, Any]:
    if not isinstance(test, dict):
        raise bad("Invalid nettests: a list of objects")
    name = test.get("test_name")
    if not validate.is_nettest_name(name):
        raise bad("Invalid test_name in nettests")
    inputs = test.get("inputs") or []
    if not isinstance(inputs, list) or len(inputs) > MAX_INPUTS or \
            not all(isinstance(i, str) and 0 < len(i) <= 2048 for i in inputs):
        raise bad("Invalid inputs in nettests")
    extra = test.get("inputs_extra")
    if extra is not None:
        if not isinstance(extra, list) or not all(isinstance(e, dict) for e in extra):
            raise bad("Invalid inputs_extra in nettests")
        # docs/current_services.md §7: one extra per input, or none at all.
        if len(extra) != len(inputs):
            raise bad("When provided, inputs_extra should be the same length as inputs")
    options = test.get("options") or {}
    backend_options = test.get("backend_options") or {}
    if not isinstance(options, dict) or not isinstance(backend_options, dict):
        raise bad("Invalid options in nettests")
    targets = test.get("targets_name")
    if targets is not None:
        if not isinstance(targets, str) or targets not in DYNAMIC_TARGETS:
            raise bad("Invalid targets_name in nettests: one of "
                      + ", ".join(sorted(DYNAMIC_TARGETS)))
        if inputs or extra:  # [] and null both mean none (a link re-sent as read)
            raise bad("When targets_name is provided, you can't provide inputs or inputs_extra")
    out: dict[str, Any] = {"test_name": name,
                           "inputs": None if targets is not None else inputs,
                           "inputs_extra": extra or None, "options": options,
                           "backend_options": backend_options, "targets_name": targets}
    for flag in FLAGS:
        out[flag] = out[flag + "_default"] = _flag(test, flag)
    return out


def _expiry(value: Any) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise bad("Invalid expiration_date")
    try:
        return jsonutil.rfc3339(validate.date_time(value, "expiration_date"))
    except validate.InvalidValue:
        raise bad("Invalid expiration_date") from None


def descriptor(body: Any) -> dict[str, Any]:
    """A validated, normalised descriptor from a create/edit body (either contract)."""
    if not isinstance(body, dict):
        raise bad("Invalid descriptor: a JSON object")
    d: dict[str, Any] = {
        "name": _text(body, "name", 200, required=True),
        "short_description": _text(body, "short_description", 1000),
        "description": _text(body, "description", 20_000),
        "author": _text(body, "author", 300, required=True),
        "icon": _text(body, "icon", 100),
        "name_intl": _intl(body, "name_intl", 200),
        "short_description_intl": _intl(body, "short_description_intl", 1000),
        "description_intl": _intl(body, "description_intl", 20_000),
    }
    color = body.get("color")
    if color not in (None, "") and (not isinstance(color, str) or not _COLOR.fullmatch(color)):
        raise bad("Invalid color: #RRGGBB")
    d["color"] = color or None
    d["expiration_date"] = _expiry(body.get("expiration_date"))
    tests = body.get("nettests")
    if not isinstance(tests, list) or not 0 < len(tests) <= MAX_NETTESTS:
        raise bad("Invalid nettests: a non-empty list")
    d["nettests"] = [nettest(t) for t in tests]
    if len(jsonutil.dumps(d)) > MAX_DESCRIPTOR_BYTES:
        raise bad("Descriptor too large")
    return d


def is_new_version(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Does `new` need a new descriptor version (revision) rather than a translation update?"""
    if engine_nettests(old) != engine_nettests(new):  # normalised: rows of older versions too
        return True
    return any(old.get(k) != new.get(k) for k in VERSIONED if k != "nettests")


def is_expired(d: dict[str, Any], archived: bool, now: dt.datetime) -> bool:
    exp = d.get("expiration_date")
    return archived or (exp is not None and exp <= jsonutil.rfc3339(now))


def engine_nettests(d: dict[str, Any]) -> list[dict[str, Any]]:
    """The nettests as links and probes get them, in the key order of OONI's service, with
    both flag spellings (also for rows stored by another backend, which may carry only one).

    A dynamic-list nettest has `inputs: null` until engine-descriptor fills it in;
    `inputs_extra` is null unless extras were given."""
    out = []
    for t in d.get("nettests") or []:
        if not isinstance(t, dict):
            continue
        targets = t.get("targets_name")
        item: dict[str, Any] = {"test_name": t.get("test_name"),
                                "inputs": None if targets is not None else t.get("inputs") or [],
                                "options": t.get("options") or {}}
        for flag in FLAGS:
            item[flag + "_default"] = t.get(flag + "_default", t.get(flag, False)) is True
        item["targets_name"] = targets
        item["inputs_extra"] = t.get("inputs_extra") or None
        item["backend_options"] = t.get("backend_options") or {}
        for flag in FLAGS:
            item[flag] = item[flag + "_default"]
        out.append(item)
    return out
