"""Log formats: text lines for people, JSON lines for machines, `auto` picking by terminal."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from oonibackend import logs

TEXT_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (?P<level>[A-Z]+) +"
                       r"(?P<logger>[\w.]+): (?P<rest>.*)")


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def emit(fmt: str, stream: io.StringIO | None = None, exc: bool = False, **extra: object
         ) -> str:
    stream = io.StringIO() if stream is None else stream
    logs.setup("DEBUG", fmt, stream=stream)
    log = logging.getLogger("oonibackend.supervisor")
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed to start", extra=extra)
    else:
        log.info("started %s", "child", extra=extra)
    return stream.getvalue()


def test_text_line_shape():
    out = emit("text")
    assert out.endswith("\n") and out.count("\n") == 1
    m = TEXT_LINE.fullmatch(out.rstrip("\n"))
    assert m, out
    assert (m["level"], m["logger"], m["rest"]) == ("INFO", "oonibackend.supervisor", "started child")
    # Levels are padded to one width so messages line up.
    assert " INFO  oonibackend.supervisor: " in out


def test_text_extras_as_key_values_quoted_when_needed():
    out = emit("text", child="fastpath", child_pid=1234, ok=True, path="/a b/c",
               said='he said "hi"', empty="", nested={"a": [1, 2]}, multi="x\ny")
    m = TEXT_LINE.fullmatch(out.rstrip("\n"))
    assert m, out
    assert m["rest"] == ('started child child=fastpath child_pid=1234 ok=True '
                         'path="/a b/c" said="he said \\"hi\\"" empty="" '
                         'nested="{\\"a\\":[1,2]}" multi="x\\ny"')


def test_text_traceback_as_real_lines():
    out = emit("text", exc=True, child="api")
    lines = out.rstrip("\n").split("\n")
    m = TEXT_LINE.fullmatch(lines[0])
    assert m and m["level"] == "ERROR" and m["rest"] == "failed to start child=api", lines[0]
    assert lines[1] == "Traceback (most recent call last):"
    assert any(line.strip() == 'raise ValueError("boom")' for line in lines)
    assert lines[-1] == "ValueError: boom"


def test_json_unchanged():
    out = emit("json", exc=True, child="api", child_pid=7)
    assert out.count("\n") == 1  # the traceback is escaped inside the one object
    d = json.loads(out)
    assert list(d)[:5] == ["ts", "level", "logger", "msg", "pid"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", d["ts"])
    assert (d["level"], d["logger"], d["msg"], d["pid"]) == \
        ("error", "oonibackend.supervisor", "failed to start", os.getpid())
    assert (d["child"], d["child_pid"]) == ("api", 7)
    assert d["exc"].startswith("Traceback (most recent call last):")
    assert d["exc"].endswith("ValueError: boom")


def test_auto_is_text_on_a_terminal_and_json_otherwise(monkeypatch):
    assert logs.resolve("auto", TTY()) == "text"
    assert logs.resolve("auto", io.StringIO()) == "json"
    assert logs.resolve("json", TTY()) == "json" and logs.resolve("text", io.StringIO()) == "text"
    assert TEXT_LINE.fullmatch(emit("auto", TTY()).rstrip("\n"))
    assert json.loads(emit("auto", io.StringIO()))["msg"] == "started child"
    # Without a stream, stderr decides (setup's default).
    monkeypatch.setattr(sys, "stderr", TTY())
    assert logs.setup("INFO", "auto") == "text"
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert logs.setup("INFO", "auto") == "json"


def test_auto_on_a_closed_stream_is_json():
    s = io.StringIO()
    s.close()
    assert logs.resolve("auto", s) == "json"


def test_spawned_worker_resolves_auto_like_its_parent(tmp_path):
    """The fastpath's scoring workers get `auto` and inherit stderr: a terminal gives text
    in the worker too, a pipe JSON."""
    import pty

    code = ("import multiprocessing as mp, sys\n"
            "from oonibackend import logs\n"
            "def child(q):\n"
            "    q.put(logs.resolve('auto'))\n"
            "if __name__ == '__main__':\n"
            "    ctx = mp.get_context('spawn'); q = ctx.Queue()\n"
            "    p = ctx.Process(target=child, args=(q,)); p.start()\n"
            "    print(logs.resolve('auto'), q.get(timeout=60)); p.join()\n")
    script = tmp_path / "spawn_check.py"  # spawn re-imports the main module from its file
    script.write_text(code)
    piped = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                           timeout=120)
    assert piped.stdout.split() == ["json", "json"], piped.stderr
    primary, secondary = pty.openpty()
    try:
        on_tty = subprocess.run([sys.executable, str(script)], stdout=subprocess.PIPE,
                                stderr=secondary, text=True, timeout=120)
    finally:
        os.close(secondary)
        os.close(primary)
    assert on_tty.stdout.split() == ["text", "text"]
