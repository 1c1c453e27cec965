-- The VPN configuration cache of GET /api/v2/ooniprobe/vpn-config/{provider}
-- (docs/current_services.md §3): the credentials and endpoints last fetched from each
-- provider's public API. OONI keeps them in two Postgres tables (ooniprobe_vpn_provider and
-- ooniprobe_vpn_provider_endpoint); here one ClickHouse table of the same name holds both, the
-- endpoints as parallel arrays. Every refresh inserts a row; readers take the newest
-- (ORDER BY date_updated DESC LIMIT 1) and merges keep only it.
CREATE TABLE IF NOT EXISTS ooniprobe_vpn_provider
(
    `provider_name` String,
    `date_updated` DateTime64(6, 'UTC'),
    `date_created` DateTime64(6, 'UTC'),
    `openvpn_ca` String,
    `openvpn_cert` String,
    `openvpn_key` String,
    `endpoint_address` Array(String),
    `endpoint_protocol` Array(String),
    `endpoint_transport` Array(String)
)
ENGINE = ReplacingMergeTree(date_updated)
ORDER BY provider_name;
