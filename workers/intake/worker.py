"""The scoring worker process: messages in, rows out, no shared state.

Started by `Pool` with the spawn context, so it imports only what it needs and inherits
nothing but its arguments. It reads from its own task queue:

    ("tasks", [(uid, body), ...])   score these measurements, in order
    ("task", uid, body)             score one measurement
    ("fingerprints", dns, http)     rows of the fingerprint tables, loaded by the main process
    None                            stop

and answers on its own pipe:

    ("ready", pid)
    ("ok", uid, rows, seconds)      rows per table, e.g. {"fastpath": [...]}
    ("error", uid, kind, message)   kind: "invalid" (MeasurementError), "crash" (ScorerCrash),
                                    "unexpected" (any other exception: a bug in process())

Own queue and pipe per worker: a process killed mid-write can only corrupt its own channel,
which the pool throws away with it. The worker ignores SIGINT/SIGTERM (the main process
decides when it stops) and exits by itself when its parent is gone.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import queue
import signal
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

log = logging.getLogger(__name__)

# Seconds between checks that the parent process still exists.
PARENT_CHECK = 1.0
MAX_MESSAGE = 2000


def resolve(ref: str) -> Any:
    """`package.module:attr` -> the object."""
    module, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


def error_kind(e: BaseException) -> str:
    """Classify by class name so the worker does not depend on which module defines them."""
    names = {c.__name__ for c in type(e).__mro__}
    if "ScorerCrash" in names:
        return "crash"
    if "MeasurementError" in names:
        return "invalid"
    return "unexpected"


def _load_fingerprints(factory: Any, dns: list[dict], http: list[dict]) -> Any:
    if factory is None:
        return {"dns": dns, "http": http}
    return factory.from_rows(dns, http)


def _die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this worker when the main process dies, even while it
    is stuck in a scorer (the getppid check only runs between items)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main(index: int, process_ref: str, fingerprints_ref: str | None, tasks: Any,
         results: Connection, log_level: str = "INFO", log_format: str = "json") -> None:
    """Entry point of a worker process (a module-level function: spawn pickles a reference)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent()
    from oonibackend import logs

    logs.setup(log_level, log_format)
    main_process = multiprocessing.parent_process()  # its pid, even if it is dead already
    parent = main_process.pid if main_process is not None else os.getppid()
    process: Callable[..., dict[str, list[dict]]] = resolve(process_ref)
    factory = resolve(fingerprints_ref) if fingerprints_ref else None
    fingerprints = factory.empty() if factory is not None else None
    results.send(("ready", os.getpid()))
    while True:
        try:
            msg = tasks.get(timeout=PARENT_CHECK)
        except queue.Empty:
            if os.getppid() != parent:
                return  # orphaned: the main process was killed
            continue
        if msg is None:
            return
        kind = msg[0]
        if kind == "fingerprints":
            try:
                fingerprints = _load_fingerprints(factory, msg[1], msg[2])
            except Exception:
                log.exception("cannot prepare fingerprints; keeping the previous ones",
                              extra={"worker": index})
            continue
        batch = msg[1] if kind == "tasks" else [msg[1:]]
        try:
            for uid, body in batch:
                _answer(results, uid, _score(process, uid, body, fingerprints))
        except (BrokenPipeError, EOFError):
            return  # the main process is gone


def _score(process: Callable[..., Any], uid: str, body: bytes, fingerprints: Any) -> tuple:
    t0 = time.perf_counter()
    try:
        rows = process(body, uid, fingerprints)
    except Exception as e:
        k = error_kind(e)
        text = f"{type(e).__name__}: {e}"[:MAX_MESSAGE]
        if k != "invalid":
            text += "\n" + traceback.format_exc()[-8000:]
        return ("error", uid, k, text)
    if not isinstance(rows, dict):
        return ("error", uid, "unexpected", f"process() returned {type(rows).__name__}")
    return ("ok", uid, rows, time.perf_counter() - t0)


def _answer(results: Connection, uid: str, msg: tuple) -> None:
    try:
        results.send(msg)
    except (BrokenPipeError, EOFError):
        raise
    except Exception as e:  # unpicklable rows: nothing was written, report instead
        results.send(("error", uid, "unexpected", f"cannot send rows: {e!r}"[:MAX_MESSAGE]))
