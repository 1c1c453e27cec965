"""The detector's pure core: moving averages, hysteresis, change points, resumability."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random

import pytest

from oonibackend.jobs.detector import series
from oonibackend.jobs.detector.changepoint import (
    BLOCKED,
    OK,
    UNKNOWN,
    Bucket,
    Params,
    State,
    f32,
    run_series,
    update,
)

T0 = dt.datetime(2024, 3, 1)
P = Params()


def hour(i: int) -> dt.datetime:
    return T0 + dt.timedelta(hours=i)


def sampled(n_buckets: int, per_bucket: int, p_anomaly, seed: int = 0,
            p_confirmed: float = 0.0) -> list[Bucket]:
    """Buckets of `per_bucket` measurements each, anomalous with probability p_anomaly(i)
    (a share p_confirmed of the anomalies confirmed)."""
    rng = random.Random(seed)
    out = []
    for i in range(n_buckets):
        c = a = k = 0
        for _ in range(per_bucket):
            if rng.random() < p_anomaly(i):
                if rng.random() < p_confirmed:
                    c += 1
                else:
                    a += 1
            else:
                k += 1
        out.append(Bucket(hour(i), confirmed=c, pure_anomaly=a, accessible=k))
    return out


def fixed(n_buckets: int, start: int = 0, *, confirmed: int = 0, anomaly: int = 0,
          ok: int = 0) -> list[Bucket]:
    return [Bucket(hour(start + i), confirmed, anomaly, ok) for i in range(n_buckets)]


def test_clean_onset_is_found_at_the_onset_bucket():
    buckets = fixed(20, ok=8) + fixed(20, 20, anomaly=8)
    state, changes = run_series(State(), buckets, P)
    assert len(changes) == 1
    ch = changes[0]
    assert (ch.time, ch.old_status, ch.status) == (hour(20), OK, BLOCKED)
    # The average crossed the threshold later than the onset: the change point is not the
    # detection bucket.
    assert ch.detected > ch.time
    assert state.status == BLOCKED and state.old_status == OK


def test_stable_series_has_no_change_point():
    buckets = sampled(300, 8, lambda i: 0.1, seed=3)
    state, changes = run_series(State(), buckets, P)
    assert changes == []
    assert state.status == OK
    assert state.last_time == hour(299)


def test_noisy_onset_is_found_at_the_onset_bucket():
    onset, exact = 60, 0
    for seed in range(40):
        buckets = sampled(120, 8, lambda i: 0.1 if i < onset else 0.75, seed=seed,
                          p_confirmed=0.3)
        _, changes = run_series(State(), buckets, P)
        assert [c.status for c in changes] == [BLOCKED], seed
        # An onset bucket that happens to look ambiguous (e.g. 4 anomalies in 8) moves the
        # change point to the next bucket, never further and never before the onset.
        assert changes[0].time in (hour(onset), hour(onset + 1)), seed
        exact += changes[0].time == hour(onset)
    assert exact >= 32  # 34 of 40 with these seeds: the onset bucket abstains ~1 in 8


@pytest.mark.parametrize("seed", range(10))
def test_noise_alone_never_flaps(seed):
    # 25 % anomalies: well inside the dead band between OK and BLOCKED.
    buckets = fixed(10, ok=8) + sampled(400, 6, lambda i: 0.25, seed=seed)[10:]
    _, changes = run_series(State(), buckets, P)
    assert changes == []


def test_blocking_then_recovery_gives_two_events():
    buckets = fixed(10, ok=10) + fixed(10, 10, confirmed=10) + fixed(10, 20, ok=10)
    state, changes = run_series(State(), buckets, P)
    assert [(c.time, c.old_status, c.status) for c in changes] == [
        (hour(10), OK, BLOCKED), (hour(20), BLOCKED, OK)]
    assert state.status == OK and state.old_status == BLOCKED


def test_hysteresis_keeps_the_status_in_the_dead_band():
    # 70 % accessible is neither OK (>= 80 %) nor BLOCKED (>= 60 % anomalies).
    dead_band = dict(anomaly=3, ok=7)
    from_ok, ch1 = run_series(State(), fixed(10, ok=10) + fixed(50, 10, **dead_band), P)
    assert from_ok.status == OK and ch1 == []
    assert 0.69 < from_ok.accessible_perc < 0.71
    from_blocked, ch2 = run_series(
        State(), fixed(10, anomaly=10) + fixed(50, 10, **dead_band), P)
    assert from_blocked.status == BLOCKED and ch2 == []


def test_a_single_outlier_bucket_does_not_flip_the_status():
    buckets = fixed(10, ok=8) + fixed(1, 10, anomaly=8) + fixed(10, 11, ok=8)
    state, changes = run_series(State(), buckets, P)
    assert changes == [] and state.status == OK


def test_confirmed_blocking_needs_a_smaller_share():
    # 40 % confirmed, 60 % accessible: BLOCKED through confirmed_threshold (0.3).
    buckets = fixed(10, ok=10) + fixed(10, 10, confirmed=4, ok=6)
    _, changes = run_series(State(), buckets, P)
    assert [(c.time, c.status) for c in changes] == [(hour(10), BLOCKED)]


def test_no_status_before_min_count_and_no_event_for_the_first_status():
    p = dataclasses.replace(P, min_count=10)
    s1, _ = run_series(State(), fixed(3, anomaly=3), p)
    assert s1.status == UNKNOWN and s1.cnt == 9
    s2, changes = run_series(s1, fixed(1, 3, anomaly=1), p)
    assert s2.status == BLOCKED and s2.old_status == UNKNOWN
    assert changes == []  # observed blocked from the start: not a change point


def test_failures_and_empty_buckets_are_no_evidence():
    s1, _ = run_series(State(), fixed(10, ok=8), P)
    s2, changes = update(s1, Bucket(hour(10), failure=5), P)
    assert changes is None
    assert dataclasses.replace(s2, last_time=s1.last_time) == s1
    assert s2.last_time == hour(10)


def test_abstaining_buckets_do_not_break_the_streak():
    # Onset at 10, then one bucket in the dead band: the change point stays at 10.
    buckets = (fixed(10, ok=8) + fixed(1, 10, anomaly=8) + fixed(1, 11, anomaly=3, ok=5)
               + fixed(10, 12, anomaly=8))
    _, changes = run_series(State(), buckets, P)
    assert [c.time for c in changes] == [hour(10)]


def test_stability_is_lower_for_a_noisy_series():
    steady, _ = run_series(State(), fixed(100, ok=8), P)
    noisy, _ = run_series(State(), sampled(100, 8, lambda i: 0.3, seed=1), P)
    assert steady.stability == 1.0
    assert 0 < noisy.stability < 0.9


def test_averages_sum_to_one_and_are_float32():
    state, _ = run_series(State(), sampled(50, 7, lambda i: 0.4, seed=2, p_confirmed=0.5), P)
    total = state.confirmed_perc + state.pure_anomaly_perc + state.accessible_perc
    assert abs(total - 1) < 1e-5
    for v in (state.confirmed_perc, state.pure_anomaly_perc, state.accessible_perc,
              state.cnt, state.stability, state.change):
        assert f32(v) == v


def test_a_bucket_is_never_applied_twice():
    buckets = sampled(40, 8, lambda i: 0.1 if i < 20 else 0.9, seed=5)
    state, changes = run_series(State(), buckets, P)
    again, more = run_series(state, buckets, P)
    assert again == state and more == []
    assert len(changes) == 1


def _through_database(state: State) -> State:
    """What blocking_status gives back: Float32 columns read as their shortest decimal."""
    row = series.state_to_row(("t", "i", "IT", 1), state)
    for k, v in row.items():
        if isinstance(v, float):
            row[k] = float(f"{v:.9g}")
    return series.state_from_row(row)


@pytest.mark.parametrize("cut", [1, 17, 41, 42, 59])
def test_resumed_run_gives_exactly_the_same_result(cut):
    buckets = sampled(80, 5, lambda i: 0.1 if i < 30 or i >= 60 else 0.85, seed=9,
                      p_confirmed=0.2)
    whole, all_changes = run_series(State(), buckets, P)
    first, changes1 = run_series(State(), buckets[:cut], P)
    # A crash after the state was written but before the watermark: the batch is replayed.
    resumed, changes2 = run_series(_through_database(first), buckets[cut - 1:], P)
    assert changes1 + changes2 == all_changes
    assert resumed == whole
    assert [c.status for c in all_changes] == [BLOCKED, OK]


def test_params_must_leave_a_dead_band():
    Params().validate()
    with pytest.raises(ValueError, match="dead band"):
        Params(ok_threshold=0.5, blocked_threshold=0.5).validate()
    with pytest.raises(ValueError, match="alpha"):
        Params(alpha=0).validate()


def test_group_counts_orders_and_adds_up():
    rows = [
        {"test_name": "w", "input": "b", "probe_cc": "IT", "probe_asn": 2, "t": hour(1),
         "n_confirmed": 1, "n_pure_anomaly": 0, "n_accessible": 2, "n_failure": 0},
        {"test_name": "w", "input": "a", "probe_cc": "IT", "probe_asn": 2, "t": hour(2),
         "n_confirmed": 0, "n_pure_anomaly": 1, "n_accessible": 0, "n_failure": 1},
        {"test_name": "w", "input": "a", "probe_cc": "IT", "probe_asn": 2, "t": hour(0),
         "n_confirmed": 0, "n_pure_anomaly": 0, "n_accessible": 3, "n_failure": 0},
        {"test_name": "w", "input": "a", "probe_cc": "IT", "probe_asn": 2, "t": hour(2),
         "n_confirmed": 0, "n_pure_anomaly": 1, "n_accessible": 4, "n_failure": 0},
    ]
    got = series.group_counts(rows)
    assert list(got) == [("w", "a", "IT", 2), ("w", "b", "IT", 2)]
    assert got[("w", "a", "IT", 2)] == [Bucket(hour(0), 0, 0, 3, 0), Bucket(hour(2), 0, 2, 4, 1)]


def test_floor_time_is_epoch_aligned():
    t = dt.datetime(2024, 3, 1, 13, 47, 12)
    assert series.floor_time(t, 3600) == dt.datetime(2024, 3, 1, 13)
    assert series.floor_time(t, 600) == dt.datetime(2024, 3, 1, 13, 40)
    aware = dt.datetime(2024, 3, 1, 15, 47, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert series.floor_time(aware, 3600) == dt.datetime(2024, 3, 1, 13)


def test_state_row_round_trip_keeps_missing_times_missing():
    s = State()
    assert series.state_from_row(series.state_to_row(("t", "", "IR", 5), s)) == s


def test_plan_of_a_run():
    from oonibackend.config import DetectorConfig
    from oonibackend.jobs.detector.job import plan

    c = DetectorConfig()  # hourly, 48 h window, 20 min delay
    now = dt.datetime(2024, 3, 10, 12, 15)
    # Fresh: window_hours back from the last complete bucket (11:00 is not yet 20 min old).
    assert plan(c, now, None) == (dt.datetime(2024, 3, 8, 11), dt.datetime(2024, 3, 10, 11))
    # Resumed from the watermark, however old.
    assert plan(c, now, dt.datetime(2024, 1, 1, 5)) == (dt.datetime(2024, 1, 1, 5),
                                                        dt.datetime(2024, 3, 10, 11))
    # Backfill: --since/--until, floored to buckets; until never past complete buckets.
    assert plan(c, now, None, dt.datetime(2024, 2, 1, 3, 30), dt.datetime(2024, 2, 2)) == (
        dt.datetime(2024, 2, 1, 3), dt.datetime(2024, 2, 2))
    assert plan(c, now, None, dt.datetime(2024, 3, 10), dt.datetime(2024, 4, 1))[1] == (
        dt.datetime(2024, 3, 10, 11))
