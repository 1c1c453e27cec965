-- The blocking-event detector (`oonibackend detect`, oonibackend/jobs/detector/): OONI's analysis
-- detector tables, same names, columns and types, plus what makes the job resumable.
--
-- blocking_status: the latest state of each series (test_name, input, probe_cc, probe_asn):
-- the moving averages, the status (OK / BLOCKED / UNKNOWN) and its stability. One row per
-- series after merges; read it with FINAL. Extra columns (not in OONI's table): `last_time`,
-- the last time bucket applied to the series (a re-run never applies a bucket twice), and
-- `streak_status` / `streak_start`, the run of buckets voting for one status, whose start is
-- the change point of the next event.
CREATE TABLE IF NOT EXISTS blocking_status
(
    `test_name` String,
    `input` String,
    `probe_cc` String,
    `probe_asn` Int32,
    `confirmed_perc` Float32,
    `pure_anomaly_perc` Float32,
    `accessible_perc` Float32,
    `cnt` Float32,
    `status` String,
    `old_status` String,
    `change` Float32,
    `stability` Float32,
    `update_time` DateTime64(0) MATERIALIZED now64(),
    `last_time` DateTime64(0) DEFAULT 0,
    `streak_status` String DEFAULT '',
    `streak_start` DateTime64(0) DEFAULT 0
)
ENGINE = ReplacingMergeTree(update_time)
ORDER BY (test_name, input, probe_cc, probe_asn);

-- blocking_events: one row per status change, `time` being the change point (the first time
-- bucket of the run that led to the change). A re-run writes the same rows again, merged
-- away by the sort key; read with FINAL.
CREATE TABLE IF NOT EXISTS blocking_events
(
    `test_name` String,
    `input` String,
    `probe_cc` String,
    `probe_asn` Int32,
    `status` String,
    `time` DateTime64(3),
    `detection_time` DateTime64(0) MATERIALIZED now64()
)
ENGINE = ReplacingMergeTree
ORDER BY (test_name, input, probe_cc, probe_asn, time);

-- The detector's watermark: every time bucket before `value` has been processed. It only
-- moves forward; read max(value).
CREATE TABLE IF NOT EXISTS detector_state
(
    `name` String,
    `value` DateTime64(0),
    `update_time` DateTime64(3) MATERIALIZED now64()
)
ENGINE = ReplacingMergeTree(update_time)
ORDER BY name;
