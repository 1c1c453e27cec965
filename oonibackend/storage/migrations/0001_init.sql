-- OONI's production ClickHouse schema (api/tests/integ/clickhouse_1_schema.sql and
-- fastpath/clickhouse_init.sql): same table names, column names and types, so an existing
-- OONI database works unchanged. Every statement is idempotent.

CREATE TABLE IF NOT EXISTS fastpath
(
    `measurement_uid` String,
    `report_id` String,
    `input` String,
    `probe_cc` String,
    `probe_asn` UInt32,
    `test_name` String,
    `test_start_time` DateTime,
    `measurement_start_time` DateTime,
    `filename` String,
    `scores` String,
    `platform` String,
    `anomaly` String,
    `confirmed` String,
    `msm_failure` String,
    `domain` String,
    `software_name` String,
    `software_version` String,
    `control_failure` String,
    `blocking_general` Float32,
    `is_ssl_expected` Int8,
    `page_len` Int32,
    `page_len_ratio` Float32,
    `server_cc` String,
    `server_asn` Int8,
    `server_as_name` String,
    `update_time` DateTime64(3) MATERIALIZED now64(),
    `test_version` String,
    `architecture` String,
    `engine_name` String,
    `engine_version` String,
    `test_runtime` Float32,
    `blocking_type` String,
    `test_helper_address` LowCardinality(String),
    `test_helper_type` LowCardinality(String),
    `ooni_run_link_id` Nullable(UInt64),
    `is_verified` LowCardinality(String) DEFAULT 'u'
)
ENGINE = ReplacingMergeTree(update_time)
ORDER BY (measurement_start_time, report_id, input, measurement_uid)
SETTINGS index_granularity = 8192;

CREATE TABLE IF NOT EXISTS jsonl
(
    `report_id` String,
    `input` String,
    `s3path` String,
    `linenum` Int32,
    `measurement_uid` String,
    `date` Date,
    `source` String,
    `update_time` DateTime64(3) MATERIALIZED now64()
)
ENGINE = ReplacingMergeTree(update_time)
ORDER BY (report_id, input, measurement_uid)
SETTINGS index_granularity = 8192;

CREATE TABLE IF NOT EXISTS url_priorities
(
    `sign` Int8,
    `category_code` String,
    `cc` String,
    `domain` String,
    `url` String,
    `priority` Int32
)
ENGINE = CollapsingMergeTree(sign)
ORDER BY (category_code, cc, domain, url, priority)
SETTINGS index_granularity = 1024;

CREATE TABLE IF NOT EXISTS citizenlab
(
    `domain` String,
    `url` String,
    `cc` FixedString(32),
    `category_code` String
)
ENGINE = ReplacingMergeTree
ORDER BY (domain, url, cc, category_code)
SETTINGS index_granularity = 4;

-- Same structure and engine as citizenlab: loaded, then swapped in atomically.
CREATE TABLE IF NOT EXISTS citizenlab_flip AS citizenlab;

CREATE TABLE IF NOT EXISTS test_groups
(
    `test_name` String,
    `test_group` String
)
ENGINE = Join(ANY, LEFT, test_name);

-- Seeded once: only while the table is empty.
INSERT INTO test_groups (test_name, test_group)
SELECT test_name, test_group
FROM values('test_name String, test_group String',
    ('bridge_reachability', 'circumvention'),
    ('meek_fronted_requests_test', 'circumvention'),
    ('psiphon', 'circumvention'),
    ('riseupvpn', 'circumvention'),
    ('tcp_connect', 'circumvention'),
    ('tor', 'circumvention'),
    ('torsf', 'circumvention'),
    ('vanilla_tor', 'circumvention'),
    ('dnscheck', 'experimental'),
    ('urlgetter', 'experimental'),
    ('facebook_messenger', 'im'),
    ('signal', 'im'),
    ('telegram', 'im'),
    ('whatsapp', 'im'),
    ('dns_consistency', 'legacy'),
    ('http_host', 'legacy'),
    ('http_requests', 'legacy'),
    ('multi_protocol_traceroute', 'legacy'),
    ('http_header_field_manipulation', 'middlebox'),
    ('http_invalid_request_line', 'middlebox'),
    ('dash', 'performance'),
    ('ndt', 'performance'),
    ('web_connectivity', 'websites'))
WHERE (SELECT count() FROM test_groups) = 0;

CREATE TABLE IF NOT EXISTS accounts
(
    `account_id` FixedString(32),
    `role` String
)
ENGINE = EmbeddedRocksDB
PRIMARY KEY account_id;

CREATE TABLE IF NOT EXISTS session_expunge
(
    `account_id` FixedString(32),
    `threshold` DateTime DEFAULT now()
)
ENGINE = EmbeddedRocksDB
PRIMARY KEY account_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS counters_test_list
(
    `day` DateTime,
    `probe_cc` String,
    `input` String,
    `msmt_cnt` UInt64
)
ENGINE = SummingMergeTree
ORDER BY (probe_cc, input)
SETTINGS index_granularity = 8
AS SELECT
    toDate(measurement_start_time) AS day,
    probe_cc,
    input,
    count() AS msmt_cnt
FROM fastpath
INNER JOIN citizenlab ON fastpath.input = citizenlab.url
WHERE (measurement_start_time < now()) AND (measurement_start_time > (now() - toIntervalDay(8))) AND (test_name = 'web_connectivity')
GROUP BY day, probe_cc, input;

CREATE MATERIALIZED VIEW IF NOT EXISTS counters_asn_test_list
(
    `week` DateTime,
    `probe_cc` String,
    `probe_asn` UInt32,
    `input` String,
    `msmt_cnt` UInt64
)
ENGINE = SummingMergeTree
ORDER BY (probe_cc, probe_asn, input)
SETTINGS index_granularity = 8
AS SELECT
    toStartOfWeek(measurement_start_time) AS week,
    probe_cc,
    probe_asn,
    input,
    count() AS msmt_cnt
FROM fastpath
INNER JOIN citizenlab ON fastpath.input = citizenlab.url
WHERE (measurement_start_time < now()) AND (measurement_start_time > (now() - toIntervalDay(8))) AND (test_name = 'web_connectivity')
GROUP BY week, probe_cc, probe_asn, input;

CREATE TABLE IF NOT EXISTS msmt_feedback
(
    `measurement_uid` String,
    `account_id` String,
    `status` String,
    `update_time` DateTime64(3) MATERIALIZED now64()
)
ENGINE = ReplacingMergeTree
ORDER BY (measurement_uid, account_id)
SETTINGS index_granularity = 4;

CREATE TABLE IF NOT EXISTS fingerprints_dns
(
    `name` String,
    `scope` Enum8('nat' = 1, 'isp' = 2, 'prod' = 3, 'inst' = 4, 'vbw' = 5, 'fp' = 6),
    `other_names` String,
    `location_found` String,
    `pattern_type` Enum8('full' = 1, 'prefix' = 2, 'contains' = 3, 'regexp' = 4),
    `pattern` String,
    `confidence_no_fp` UInt8,
    `expected_countries` String,
    `source` String,
    `exp_url` String,
    `notes` String
)
ENGINE = EmbeddedRocksDB
PRIMARY KEY name;

-- Same structure and engine as fingerprints_dns: loaded, then swapped in atomically.
CREATE TABLE IF NOT EXISTS fingerprints_dns_tmp AS fingerprints_dns;

CREATE TABLE IF NOT EXISTS fingerprints_http
(
    `name` String,
    `scope` Enum8('nat' = 1, 'isp' = 2, 'prod' = 3, 'inst' = 4, 'vbw' = 5, 'fp' = 6, 'injb' = 7, 'prov' = 8),
    `other_names` String,
    `location_found` String,
    `pattern_type` Enum8('full' = 1, 'prefix' = 2, 'contains' = 3, 'regexp' = 4),
    `pattern` String,
    `confidence_no_fp` UInt8,
    `expected_countries` String,
    `source` String,
    `exp_url` String,
    `notes` String
)
ENGINE = EmbeddedRocksDB
PRIMARY KEY name;

-- Same structure and engine as fingerprints_http: loaded, then swapped in atomically.
CREATE TABLE IF NOT EXISTS fingerprints_http_tmp AS fingerprints_http;

CREATE TABLE IF NOT EXISTS asnmeta
(
    `asn` UInt32,
    `org_name` String,
    `cc` String,
    `changed` Date,
    `aut_name` String,
    `source` String
)
ENGINE = MergeTree
ORDER BY (asn, changed);

-- Same structure and engine as asnmeta: loaded, then swapped in atomically.
CREATE TABLE IF NOT EXISTS asnmeta_tmp AS asnmeta;

CREATE TABLE IF NOT EXISTS incidents
(
    `update_time` DateTime DEFAULT now(),
    `start_time` DateTime DEFAULT now(),
    `end_time` Nullable(DateTime),
    `creator_account_id` FixedString(32),
    `reported_by` String,
    `id` String,
    `title` String,
    `text` String,
    `event_type` LowCardinality(String),
    `published` UInt8,
    `deleted` UInt8 DEFAULT 0,
    `CCs` Array(FixedString(2)),
    `ASNs` Array(UInt32),
    `domains` Array(String),
    `tags` Array(String),
    `links` Array(String),
    `test_names` Array(String),
    `short_description` String,
    `email_address` String,
    `create_time` DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree(update_time)
ORDER BY (id)
SETTINGS index_granularity = 1;

CREATE TABLE IF NOT EXISTS oonirun
(
    `ooni_run_link_id` UInt64,
    `descriptor_creation_time` DateTime64(3),
    `translation_creation_time` DateTime64(3),
    `creator_account_id` FixedString(32),
    `archived` UInt8 DEFAULT 0,
    `descriptor` String,
    `author` String,
    `name` String,
    `short_description` String,
    `icon` String
)
ENGINE = ReplacingMergeTree(translation_creation_time)
ORDER BY (ooni_run_link_id, descriptor_creation_time)
SETTINGS index_granularity = 1;

CREATE TABLE IF NOT EXISTS obs_openvpn
(
    `anomaly` Int8,
    `bootstrap_time` Float32,
    `confirmed` Int8,
    `error` String,
    `failure` String,
    `input` String,
    `last_handshake_transaction_id` Int32,
    `measurement_start_time` DateTime,
    `measurement_uid` String,
    `minivpn_version` String,
    `obfs4_version` String,
    `obfuscation` String,
    `platform` String,
    `probe_asn` Int32,
    `probe_cc` String,
    `probe_network_name` String,
    `provider` String,
    `remote` String,
    `report_id` String,
    `resolver_asn` Int32,
    `resolver_ip` String,
    `resolver_network_name` String,
    `software_name` String,
    `software_version` String,
    `success` Int8,
    `success_handshake` Int8,
    `success_icmp` Int8,
    `success_urlgrab` Int8,
    `tcp_connect_status_success` Int8,
    `test_runtime` Float32,
    `test_start_time` DateTime,
    `transport` String
)
ENGINE = ReplacingMergeTree(measurement_start_time)
ORDER BY (measurement_start_time, report_id, input)
SETTINGS index_granularity = 8;

CREATE TABLE IF NOT EXISTS test_helper_instances
(
    `rdn` String,
    `dns_zone` String,
    `name` String,
    `provider` String,
    `region` String,
    `ipaddr` IPv4,
    `ipv6addr` IPv6,
    `draining_at` Nullable(DateTime('UTC')),
    `sign` Int8
)
ENGINE = CollapsingMergeTree(sign)
ORDER BY name
SETTINGS index_granularity = 8;
