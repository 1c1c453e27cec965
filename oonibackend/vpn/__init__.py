"""VPN configurations for probes: GET /api/v2/ooniprobe/vpn-config/{provider}.

* `provider` - the interface a VPN provider implements (fetch credentials and endpoints).
* `riseup`   - RiseupVPN, from its public API.
* `store`    - the database cache (table ooniprobe_vpn_provider, migration 0009).
* `service`  - what a request gets: cached, refreshed in the background, stale when needed.

See docs/current_services.md §3.
"""
