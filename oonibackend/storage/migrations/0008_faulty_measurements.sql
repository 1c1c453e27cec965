-- Measurements whose declared location disagrees with where they came from
-- (docs/current_services.md §2). OONI's own table, written by its ooniprobe service: same
-- name, columns, types, engine and sort key, so an existing OONI database works unchanged.
-- Only `type = 'geoip'` rows so far; `probe_cc` / `probe_asn` are the looked-up values
-- (ZZ / 0 when the address cannot be placed), `details` is the JSON of what was submitted.
CREATE TABLE IF NOT EXISTS faulty_measurements
(
    `ts` DateTime64(3, 'UTC') DEFAULT now64(),
    `type` String,
    `uid` UUID DEFAULT generateUUIDv4(),
    `probe_cc` String,
    `probe_asn` UInt32,
    `details` String
)
ENGINE = ReplacingMergeTree
ORDER BY (ts, type, probe_cc, probe_asn, uid);
