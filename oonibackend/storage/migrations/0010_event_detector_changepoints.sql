-- Change points of OONI's analysis event detector (docs/current_services.md §5), served at
-- GET /api/v1/detector/changepoints. OONI's table exactly (names, types, engine, keys), so an
-- existing OONI database works unchanged; OONI's analysis pipeline fills it. One row per
-- change point of a (probe_asn, probe_cc, domain) series: the blocking probabilities per layer
-- (DNS through the ISP's resolver or another one, TCP, TLS), their CUSUM states, and the
-- overall change (change_dir +1 blocked / -1 unblocked, s_pos, s_neg, threshold h).
CREATE TABLE IF NOT EXISTS event_detector_changepoints
(
    `probe_asn` UInt32,
    `probe_cc` String,
    `domain` String,
    `ts` DateTime64(3, 'UTC'),
    `count_isp_resolver` Nullable(UInt32),
    `count_other_resolver` Nullable(UInt32),
    `count` Nullable(UInt32),
    `dns_isp_blocked` Nullable(Float32),
    `dns_other_blocked` Nullable(Float32),
    `tcp_blocked` Nullable(Float32),
    `tls_blocked` Nullable(Float32),
    `dns_isp_blocked_current_state` String DEFAULT 'ok',
    `dns_isp_blocked_s_pos` Nullable(Float32),
    `dns_isp_blocked_s_neg` Nullable(Float32),
    `dns_other_blocked_current_state` String DEFAULT 'ok',
    `dns_other_blocked_s_pos` Nullable(Float32),
    `dns_other_blocked_s_neg` Nullable(Float32),
    `tcp_blocked_current_state` String DEFAULT 'ok',
    `tcp_blocked_s_pos` Nullable(Float32),
    `tcp_blocked_s_neg` Nullable(Float32),
    `tls_blocked_current_state` String DEFAULT 'ok',
    `tls_blocked_s_pos` Nullable(Float32),
    `tls_blocked_s_neg` Nullable(Float32),
    `change_dir` Nullable(Int8),
    `current_state` String DEFAULT 'ok',
    `s_pos` Nullable(Float32),
    `s_neg` Nullable(Float32),
    `h` Nullable(Float32),
    `block_type` String
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (probe_asn, probe_cc, ts, domain);

-- OONI added block_type later with an ALTER: a table created before that gets it here.
ALTER TABLE event_detector_changepoints ADD COLUMN IF NOT EXISTS `block_type` String;
