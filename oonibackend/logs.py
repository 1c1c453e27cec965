"""Logging to stderr: one JSON object per line for machines, or one text line for people.

`[logging] format`:

* `json`: `{"ts": ..., "level": ..., "logger": ..., "msg": ..., "pid": ..., <extras>,
  "exc": "<traceback>"}`, one object per line;
* `text`: `2026-12-06 12:00:00.123 INFO  oonibackend.supervisor: message key=value key2="a b"`
  (local time), the traceback below it as real lines;
* `auto` (the default): text when stderr is a terminal, JSON otherwise. Child processes
  (`oonibackend run`'s children, the fastpath's scoring workers) inherit stderr, so they
  resolve `auto` the same way as their parent.

Extras are the `extra={...}` fields of a record: every attribute that is not a standard
LogRecord one.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import IO, Any

import orjson

FORMATS = ("auto", "text", "json")
_STD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
# A value that can be written bare after `key=`: no space, quote, `=` or control character.
_BARE = re.compile(r"[^\s\"'=\\\x00-\x1f\x7f]+")


def extras(record: logging.LogRecord) -> dict[str, Any]:
    """The `extra={...}` fields of a record, in the order they were given."""
    return {k: v for k, v in record.__dict__.items()
            if k not in _STD and not k.startswith("_")}


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        d = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        d.update(extras(record))
        if record.exc_info:
            d["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(d, default=str).decode()


def _value(v: Any) -> str:
    """A value after `key=`: bare, or double-quoted (JSON escapes) when it holds a space, a
    quote, `=`, a backslash or a control character (or is empty)."""
    if isinstance(v, str):
        s = v
    elif isinstance(v, (dict, list, tuple)):
        s = orjson.dumps(v, default=str).decode()
    else:
        s = str(v)
    return s if _BARE.fullmatch(s) else orjson.dumps(s).decode()


class TextFormatter(logging.Formatter):
    """`<local time>.<ms> LEVEL logger: message key=value ...`, then the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        line = f"{ts}.{int(record.msecs):03d} {record.levelname:<5} {record.name}: " \
               f"{record.getMessage()}"
        fields = " ".join(f"{k}={_value(v)}" for k, v in extras(record).items())
        if fields:
            line += " " + fields
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def resolve(fmt: str, stream: IO[str] | None = None) -> str:
    """`text` or `json`: `auto` is text when `stream` (default stderr) is a terminal."""
    if fmt != "auto":
        return fmt
    stream = sys.stderr if stream is None else stream
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return "json"


def setup(level: str = "INFO", fmt: str = "auto", stream: IO[str] | None = None) -> str:
    """Send every log record to `stream` (default stderr) in format `fmt` (auto, text or
    json); returns the format used."""
    stream = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(stream)
    used = resolve(fmt, stream)
    handler.setFormatter(TextFormatter() if used == "text" else JSONFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access logger, by aiohttp's name for it: no line per request (our servers
    # also pass access_log=None).
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return used
