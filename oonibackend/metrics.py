"""Counters, gauges and latency histograms exposed in the Prometheus text format, on
prometheus-client.

A `Metrics` object lives on the app and owns its own `CollectorRegistry`: no module state, the
library's global REGISTRY is never used, so several objects can live in one process (tests do).

No multiprocess mode: the API is a single process, and the fastpath's scoring workers report to
the fastpath's main process, which alone owns its `Metrics`; no registry is ever shared across
processes.

Metrics are created on first use, with the label names of that first call (sorted). Counters are
exposed with a `_total` suffix (the library adds it when the name lacks it), and without the
`_created` samples the library would add to counters and histograms (filtered out per registry,
see `_Registry`, rather than with the process-global `disable_created_metrics()`).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.metrics_core import Metric

log = logging.getLogger(__name__)

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# The Content-Type of `render()`'s text: "text/plain; version=0.0.4; charset=utf-8". Not
# CONTENT_TYPE_LATEST, which in prometheus-client 0.26 names the 1.0.0 text format (UTF-8 metric
# names); the library's own handlers serve `generate_latest` with this one too.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

_LabelKey = tuple[str, tuple[tuple[str, Any], ...]]


class _Registry(CollectorRegistry):
    """A registry that leaves out `_created` samples, and the gauge samples whose callable failed
    (NaN, see `_safe`)."""

    def collect(self) -> Iterable[Metric]:
        for metric in super().collect():
            if metric.type in ("counter", "histogram"):
                created = metric.name + "_created"
                metric.samples = [s for s in metric.samples if s.name != created]
            elif metric.type == "gauge":
                metric.samples = [s for s in metric.samples if not math.isnan(s.value)]
            yield metric


def _safe(fn: Callable[[], float]) -> Callable[[], float]:
    """A gauge callable that never breaks the scrape: NaN (then left out) when it raises."""
    def read() -> float:
        try:
            return float(fn())
        except Exception:
            log.debug("gauge callable failed", exc_info=True)
            return math.nan
    return read


class Metrics:
    content_type = CONTENT_TYPE

    def __init__(self, prefix: str = "oonibackend") -> None:
        self.prefix = prefix
        self.registry: CollectorRegistry = _Registry()
        self._lock = threading.Lock()  # creation only; the library's values have their own
        self._metrics: dict[str, Counter | Gauge | Histogram | Info] = {}
        self._labelnames: dict[str, tuple[str, ...]] = {}
        # (name, label items as passed) -> labelled child: the hot path is one dict lookup.
        self._counters: dict[_LabelKey, Counter] = {}
        self._gauges: dict[_LabelKey, Gauge] = {}
        self._hists: dict[_LabelKey, Histogram] = {}
        self._functions: set[int] = set()  # id() of the gauge children that read a callable

    def _full(self, name: str) -> str:
        return f"{self.prefix}_{name}" if self.prefix else name

    def _child(self, kind: type, cache: dict, key: _LabelKey, help_: str,
               labels: dict[str, Any]) -> Any:
        """Create (first use) the metric and its child for these labels, and cache the child."""
        with self._lock:
            name = key[0]
            metric = self._metrics.get(name)
            if metric is None:
                extra = {"buckets": _BUCKETS} if kind is Histogram else {}
                self._labelnames[name] = tuple(sorted(labels))
                metric = self._metrics[name] = kind(
                    self._full(name), help_, labelnames=self._labelnames[name],
                    registry=self.registry, **extra)
            elif type(metric) is not kind:
                raise ValueError(f"metric {name!r} is a {type(metric).__name__.lower()}, "
                                 f"not a {kind.__name__.lower()}")
            names = self._labelnames[name]
            if set(labels) != set(names):  # a caller's bug, that must not fail a request
                log.warning("metric labels differ from its first use",
                            extra={"metric": name, "labels": sorted(labels),
                                   "expected": list(names)})
                labels = {k: labels.get(k, "") for k in names}
            child = metric.labels(**labels) if names else metric
            cache[key] = child
            return child

    def inc(self, name: str, value: float = 1, help: str = "", **labels: Any) -> None:
        key = (name, tuple(labels.items()))
        child = self._counters.get(key)
        if child is None:
            child = self._child(Counter, self._counters, key, help, labels)
        child.inc(value)

    def set(self, name: str, value: float | Callable[[], float], help: str = "",
            **labels: Any) -> None:
        """Set a gauge to a value, or to a callable read at scrape time (left out of the scrape
        when it raises)."""
        key = (name, tuple(labels.items()))
        child = self._gauges.get(key)
        if child is None:
            child = self._child(Gauge, self._gauges, key, help, labels)
        if callable(value):
            child.set_function(_safe(value))
            self._functions.add(id(child))
        elif id(child) in self._functions:
            # The library ignores set() once a gauge reads a function: replace the function.
            v = float(value)
            child.set_function(lambda: v)
        else:
            child.set(value)

    def observe(self, name: str, seconds: float, help: str = "", **labels: Any) -> None:
        key = (name, tuple(labels.items()))
        child = self._hists.get(key)
        if child is None:
            child = self._child(Histogram, self._hists, key, help, labels)
        child.observe(seconds)

    def info(self, name: str, values: dict[str, str], help: str = "") -> None:
        """Set an info metric (exposed as `<name>_info{...} 1`) to `values`, replacing the
        previous ones: one series whatever the values, so callers need not bound them."""
        with self._lock:
            metric = self._metrics.get(name)
            if metric is None:
                metric = self._metrics[name] = Info(self._full(name), help,
                                                    registry=self.registry)
            elif not isinstance(metric, Info):
                raise ValueError(f"metric {name!r} is a {type(metric).__name__.lower()}, "
                                 "not an info")
        metric.info(values)

    def value(self, name: str, **labels: Any) -> float:
        """A counter's (or gauge's) current value; 0 when it was never set."""
        metric = self._metrics.get(name)
        if metric is None or isinstance(metric, Histogram):
            return 0
        want = {k: str(v) for k, v in labels.items()}
        for family in metric.collect():
            sample = family.name + "_total" if family.type == "counter" else family.name
            for s in family.samples:
                if s.name == sample and s.labels == want:
                    return s.value
        return 0

    def render(self) -> str:
        return generate_latest(self.registry).decode()
