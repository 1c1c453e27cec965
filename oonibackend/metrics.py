"""Prometheus text exposition without a dependency: counters, gauges and a latency histogram.

A `Metrics` object lives on the app (no module state); each process exposes its own.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(
        f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in sorted(labels.items())
    )
    return "{" + inner + "}"


class Metrics:
    def __init__(self, prefix: str = "oonibackend") -> None:
        self.prefix = prefix
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, str], float] = {}
        self._gauges: dict[tuple[str, str], Callable[[], float] | float] = {}
        self._hist: dict[tuple[str, str], list[float]] = {}
        self._help: dict[str, tuple[str, str]] = {}
        # (name, label items) -> (full name, rendered labels): the hot path renders once.
        self._keys: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[str, str]] = {}

    def _key(self, name: str, kind: str, help_: str, labels: dict[str, str]) -> tuple[str, str]:
        k = (name, tuple(labels.items()))
        key = self._keys.get(k)
        if key is None:
            full = f"{self.prefix}_{name}"
            self._help.setdefault(full, (kind, help_))
            key = self._keys[k] = (full, _labels(labels))
        return key

    def inc(self, name: str, value: float = 1, help: str = "", **labels: str) -> None:
        key = self._key(name, "counter", help, labels)
        with self._lock:
            self._counters[key] = self._counters.get(key, 0) + value

    def set(self, name: str, value: float | Callable[[], float], help: str = "",
            **labels: str) -> None:
        """Set a gauge to a value, or to a callable read at scrape time."""
        key = self._key(name, "gauge", help, labels)
        with self._lock:
            self._gauges[key] = value

    def observe(self, name: str, seconds: float, help: str = "", **labels: str) -> None:
        key = self._key(name, "histogram", help, labels)
        i = bisect_left(_BUCKETS, seconds)  # per-bucket counts; cumulated when rendered
        with self._lock:
            h = self._hist.get(key)
            if h is None:
                h = self._hist[key] = [0.0] * (len(_BUCKETS) + 2)
            if i < len(_BUCKETS):
                h[i] += 1
            h[-2] += 1
            h[-1] += seconds

    def value(self, name: str, **labels: str) -> float:
        return self._counters.get((f"{self.prefix}_{name}", _labels(labels)), 0)

    def render(self) -> str:
        out: list[str] = []
        with self._lock:
            counters = dict(self._counters)
            gauges = dict(self._gauges)
            hist = {k: list(v) for k, v in self._hist.items()}
        seen: set[str] = set()

        def header(name: str) -> None:
            if name not in seen:
                seen.add(name)
                kind, help_ = self._help.get(name, ("untyped", ""))
                if help_:
                    out.append(f"# HELP {name} {help_}")
                out.append(f"# TYPE {name} {kind}")

        for (name, lab), v in sorted(counters.items()):
            header(name)
            out.append(f"{name}{lab} {v:g}")
        for (name, lab), v in sorted(gauges.items(), key=lambda kv: kv[0]):
            header(name)
            try:
                val = v() if callable(v) else v
            except Exception:
                continue
            out.append(f"{name}{lab} {val:g}")
        for (name, lab), h in sorted(hist.items()):
            header(name)
            base = lab[1:-1] if lab else ""
            sep = "," if base else ""
            cumulative = 0.0
            for i, b in enumerate(_BUCKETS):
                cumulative += h[i]
                out.append(f'{name}_bucket{{{base}{sep}le="{b}"}} {cumulative:g}')
            out.append(f'{name}_bucket{{{base}{sep}le="+Inf"}} {h[-2]:g}')
            out.append(f"{name}_count{lab} {h[-2]:g}")
            out.append(f"{name}_sum{lab} {h[-1]:g}")
        return "\n".join(out) + "\n"
