"""Aggregated fastpath counts to per-series time series, and series state to and from
blocking_status rows (pure).

A series key is (test_name, input, probe_cc, probe_asn). Buckets are epoch-aligned: a bucket
of `seconds` starts at a multiple of `seconds` since 1970-01-01 UTC, which is what the
aggregation query computes too (intDiv(toUInt32(t), seconds) * seconds).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from oonibackend.jobs.detector.changepoint import Bucket, State, f32

SeriesKey = tuple[str, str, str, int]
EPOCH = dt.datetime(1970, 1, 1)


def floor_time(t: dt.datetime, seconds: int) -> dt.datetime:
    """The start of the bucket holding `t` (naive UTC)."""
    if t.tzinfo is not None:
        t = t.astimezone(dt.UTC).replace(tzinfo=None)
    s = int((t - EPOCH).total_seconds())
    return EPOCH + dt.timedelta(seconds=s - s % seconds)


def key_of(row: Mapping[str, Any]) -> SeriesKey:
    return (row["test_name"], row["input"], row["probe_cc"], int(row["probe_asn"]))


def group_counts(rows: Iterable[Mapping[str, Any]]) -> dict[SeriesKey, list[Bucket]]:
    """Rows of (test_name, input, probe_cc, probe_asn, t, n_confirmed, n_pure_anomaly,
    n_accessible, n_failure) to buckets per series, in time order; rows of one series and bucket
    are added up. Series come out in key order, so processing is deterministic."""
    acc: dict[SeriesKey, dict[dt.datetime, list[int]]] = {}
    for r in rows:
        counts = acc.setdefault(key_of(r), {}).setdefault(r["t"], [0, 0, 0, 0])
        counts[0] += int(r["n_confirmed"])
        counts[1] += int(r["n_pure_anomaly"])
        counts[2] += int(r["n_accessible"])
        counts[3] += int(r["n_failure"])
    return {key: [Bucket(t, *by_time[t]) for t in sorted(by_time)]
            for key, by_time in sorted(acc.items())}


def _time_or_none(v: Any) -> dt.datetime | None:
    if v is None:
        return None
    if v.tzinfo is not None:
        v = v.astimezone(dt.UTC).replace(tzinfo=None)
    return None if v <= EPOCH else v


def state_from_row(row: Mapping[str, Any]) -> State:
    """A blocking_status row to a State; numbers re-rounded to float32 (the driver may hand
    back the shortest decimal of a Float32, e.g. 0.7 for 0.699999988)."""
    return State(
        confirmed_perc=f32(row["confirmed_perc"]), pure_anomaly_perc=f32(row["pure_anomaly_perc"]),
        accessible_perc=f32(row["accessible_perc"]), cnt=f32(row["cnt"]),
        status=row["status"], old_status=row["old_status"], change=f32(row["change"]),
        stability=f32(row["stability"]), last_time=_time_or_none(row.get("last_time")),
        streak_status=row.get("streak_status") or "",
        streak_start=_time_or_none(row.get("streak_start")))


STATUS_COLUMNS = ("test_name", "input", "probe_cc", "probe_asn", "confirmed_perc",
                  "pure_anomaly_perc", "accessible_perc", "cnt", "status", "old_status",
                  "change", "stability", "last_time", "streak_status", "streak_start")


def state_to_row(key: SeriesKey, s: State) -> dict[str, Any]:
    test_name, input_, cc, asn = key
    return {"test_name": test_name, "input": input_, "probe_cc": cc, "probe_asn": asn,
            "confirmed_perc": s.confirmed_perc, "pure_anomaly_perc": s.pure_anomaly_perc,
            "accessible_perc": s.accessible_perc, "cnt": s.cnt, "status": s.status,
            "old_status": s.old_status, "change": s.change, "stability": s.stability,
            "last_time": s.last_time or EPOCH, "streak_status": s.streak_status,
            "streak_start": s.streak_start or EPOCH}
