-- Pre-aggregated rollups of fastpath for the read side (issue 15): the five measures of
-- /api/v1/aggregation (queries/aggregation.py `_MEASURES_SQL`, the legacy definitions) per
-- day and per the dimensions Explorer's charts and the MAT group and filter on. The planner
-- in queries/aggregation.py reads them when a request's axes, filters and time grain allow
-- (whole days from the rollup, the partial days at the window's edges from fastpath) and
-- fastpath otherwise; `[aggregation] rollups = false` always reads fastpath.
--
-- Kept by materialized views: every block inserted into fastpath adds its counts. A batch
-- the fastpath inserts again after a crash (same insert_deduplication_token, migration 0007)
-- is dropped by fastpath and, through the rollup's own deduplication window (the block id
-- ClickHouse derives from the source block's), by the rollups too; blocks of different
-- inserts never collide, even with equal counts (tests/integration/test_rollups.py). So the
-- rollups are exact for inserts of new measurements. A re-processed measurement is a second
-- fastpath row for the same uid: fastpath counts both until its background merge, the
-- rollups count both for good; `oonibackend db rebuild-rollups --start-day D --end-day D`
-- (storage/rollups.py) recounts those days from fastpath FINAL, and `fastpath reprocess`
-- does it for its days when it ends.
--
-- `fastpath_daily`: per day, country, network and test (calendars, per-day-by-country
-- charts, apps charts, a network's all-time pages, thematic pages, the MAT's common charts).
-- Column names differ from the measures' names (n_*) so that `sum(n_x) AS x_count` never
-- refers to itself.
CREATE TABLE IF NOT EXISTS fastpath_daily
(
    `day` Date,
    `probe_cc` String,
    `probe_asn` UInt32,
    `test_name` String,
    `n_anomaly` UInt64,
    `n_confirmed` UInt64,
    `n_failure` UInt64,
    `n_ok` UInt64,
    `n_measurement` UInt64,
    INDEX fastpath_daily_probe_asn probe_asn TYPE bloom_filter GRANULARITY 1
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (day, probe_cc, test_name, probe_asn)
SETTINGS non_replicated_deduplication_window = 1000;

-- `fastpath_daily_domain`: the same with the domain (a country's websites grid, the domain
-- page's chart, a network's per-domain charts, the domain list's counts).
CREATE TABLE IF NOT EXISTS fastpath_daily_domain
(
    `day` Date,
    `probe_cc` String,
    `probe_asn` UInt32,
    `test_name` String,
    `domain` String,
    `n_anomaly` UInt64,
    `n_confirmed` UInt64,
    `n_failure` UInt64,
    `n_ok` UInt64,
    `n_measurement` UInt64,
    INDEX fastpath_daily_domain_probe_asn probe_asn TYPE bloom_filter GRANULARITY 1,
    INDEX fastpath_daily_domain_domain domain TYPE bloom_filter GRANULARITY 1
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (day, probe_cc, test_name, domain, probe_asn)
SETTINGS non_replicated_deduplication_window = 1000;

-- The rows fastpath holds already, once: only into an empty rollup, and before its view
-- exists (migrations run before the API and the fastpath start), so a migration interrupted
-- after the backfill and run again neither adds them twice nor misses any.
INSERT INTO fastpath_daily
SELECT toDate(measurement_start_time) AS day, probe_cc, probe_asn, test_name,
    countIf(anomaly = 't' AND confirmed = 'f' AND msm_failure = 'f') AS n_anomaly,
    countIf(confirmed = 't' AND msm_failure = 'f') AS n_confirmed,
    countIf(msm_failure = 't') AS n_failure,
    countIf(anomaly = 'f' AND confirmed = 'f' AND msm_failure = 'f') AS n_ok,
    count() AS n_measurement
FROM fastpath
WHERE (SELECT count() FROM fastpath_daily) = 0
GROUP BY day, probe_cc, probe_asn, test_name;

INSERT INTO fastpath_daily_domain
SELECT toDate(measurement_start_time) AS day, probe_cc, probe_asn, test_name, domain,
    countIf(anomaly = 't' AND confirmed = 'f' AND msm_failure = 'f') AS n_anomaly,
    countIf(confirmed = 't' AND msm_failure = 'f') AS n_confirmed,
    countIf(msm_failure = 't') AS n_failure,
    countIf(anomaly = 'f' AND confirmed = 'f' AND msm_failure = 'f') AS n_ok,
    count() AS n_measurement
FROM fastpath
WHERE (SELECT count() FROM fastpath_daily_domain) = 0
GROUP BY day, probe_cc, probe_asn, test_name, domain;

CREATE MATERIALIZED VIEW IF NOT EXISTS fastpath_daily_mv TO fastpath_daily
AS SELECT toDate(measurement_start_time) AS day, probe_cc, probe_asn, test_name,
    countIf(anomaly = 't' AND confirmed = 'f' AND msm_failure = 'f') AS n_anomaly,
    countIf(confirmed = 't' AND msm_failure = 'f') AS n_confirmed,
    countIf(msm_failure = 't') AS n_failure,
    countIf(anomaly = 'f' AND confirmed = 'f' AND msm_failure = 'f') AS n_ok,
    count() AS n_measurement
FROM fastpath
GROUP BY day, probe_cc, probe_asn, test_name;

CREATE MATERIALIZED VIEW IF NOT EXISTS fastpath_daily_domain_mv TO fastpath_daily_domain
AS SELECT toDate(measurement_start_time) AS day, probe_cc, probe_asn, test_name, domain,
    countIf(anomaly = 't' AND confirmed = 'f' AND msm_failure = 'f') AS n_anomaly,
    countIf(confirmed = 't' AND msm_failure = 'f') AS n_confirmed,
    countIf(msm_failure = 't') AS n_failure,
    countIf(anomaly = 'f' AND confirmed = 'f' AND msm_failure = 'f') AS n_ok,
    count() AS n_measurement
FROM fastpath
GROUP BY day, probe_cc, probe_asn, test_name, domain;
