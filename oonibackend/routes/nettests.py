"""The nettest catalogue check-in hands out: test names and fixed targets.

v1 check-in returns a report_id for each of `CHECKIN_V1_TESTS`; the experimental v2
check-in returns `CHECKIN_V2_TESTS` as `nettests`, with fixed targets for dnscheck and
stunreachability (the defaults probes also carry built in).
"""

from __future__ import annotations

CHECKIN_V1_TESTS = (
    "bridge_reachability", "dash", "dns_consistency", "dnscheck", "facebook_messenger",
    "http_header_field_manipulation", "http_host", "http_invalid_request_line",
    "http_requests", "meek_fronted_requests_test", "multi_protocol_traceroute", "ndt",
    "psiphon", "riseupvpn", "tcp_connect", "telegram", "tor", "urlgetter", "vanilla_tor",
    "web_connectivity", "whatsapp",
)

CHECKIN_V2_TESTS = tuple(sorted(CHECKIN_V1_TESTS + (
    "dnsping", "echcheck", "portfiltering", "quicping", "signal", "simplequicping",
    "sniblocking", "stunreachability", "tcpping", "tlsmiddlebox", "tlsping", "torsf",
)))

# DoH / DoT resolvers measured by dnscheck (v2 check-in targets). Reconstructed from the
# legacy list's description (42 entries, dns.google first); not verified entry by entry.
DNSCHECK_TARGETS = (
    "https://dns.google/dns-query",
    "https://8.8.8.8/dns-query",
    "dot://8.8.8.8:853/",
    "dot://8.8.4.4:853/",
    "https://8.8.4.4/dns-query",
    "https://cloudflare-dns.com/dns-query",
    "https://1.1.1.1/dns-query",
    "https://1.0.0.1/dns-query",
    "dot://1.1.1.1:853/",
    "dot://1.0.0.1:853/",
    "https://dns.quad9.net/dns-query",
    "https://9.9.9.9/dns-query",
    "dot://9.9.9.9:853/",
    "dot://dns.quad9.net/",
    "https://family.cloudflare-dns.com/dns-query",
    "dot://family.cloudflare-dns.com/dns-query",
    "https://dns11.quad9.net/dns-query",
    "https://dns9.quad9.net/dns-query",
    "https://dns12.quad9.net/dns-query",
    "https://1dot1dot1dot1.cloudflare-dns.com/dns-query",
    "https://dns.adguard.com/dns-query",
    "dot://dns.adguard.com/",
    "https://dns-family.adguard.com/dns-query",
    "dot://dns-family.adguard.com/",
    "https://dns.cloudflare.com/dns-query",
    "https://adblock.doh.mullvad.net/dns-query",
    "dot://adblock.doh.mullvad.net/",
    "https://doh.mullvad.net/dns-query",
    "dot://doh.mullvad.net/",
    "https://dns.alidns.com/dns-query",
    "dot://dns.alidns.com/",
    "https://223.5.5.5/dns-query",
    "https://doh.opendns.com/dns-query",
    "https://doh.familyshield.opendns.com/dns-query",
    "https://dns.nextdns.io/dns-query",
    "dot://dns.nextdns.io/",
    "https://dns.switch.ch/dns-query",
    "dot://dns.switch.ch/",
    "https://doh.dns.sb/dns-query",
    "dot://dot.sb/",
    "https://dns.twnic.tw/dns-query",
    "https://doh.libredns.gr/dns-query",
)

STUN_TARGETS = (
    "stun://stun.voip.blackberry.com:3478",
    "stun://stun.altar.com.pl:3478",
    "stun://stun.antisip.com:3478",
    "stun://stun.bluesip.net:3478",
    "stun://stun.dus.net:3478",
    "stun://stun.epygi.com:3478",
    "stun://stun.sonetel.com:3478",
    "stun://stun.sonetel.net:3478",
    "stun://stun.stunprotocol.org:3478",
    "stun://stun.uls.co.za:3478",
)

FIXED_TARGETS = {"dnscheck": DNSCHECK_TARGETS, "stunreachability": STUN_TARGETS}
