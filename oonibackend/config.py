"""Configuration: one TOML file over documented defaults.

Every key lives in a dataclass below with its default; `etc/oonibackend.toml` documents the
same keys. Relative paths are resolved against `data_dir`, so the defaults work on a fresh
machine under `./var/`.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Longest Unix socket path Linux accepts (sun_path is 108 bytes with the final NUL).
MAX_SOCKET_PATH = 107


class ConfigError(Exception):
    """Raised for an unreadable config file or an unknown / mistyped key."""


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    # Public base URL, used in links the API hands out (next_url, measurement_url). Empty:
    # taken from each request (Host, or X-Forwarded-Host/-Proto from a trusted proxy).
    base_url: str = ""
    # Collector id: the `n<id>` part of report ids; one character in production.
    collector_id: str = "1"
    # Name of this host in `other_collectors` (defaults to the machine's FQDN).
    hostname: str = ""
    # Sibling API hosts that may hold fresh measurements in their spool (read side): host
    # names (asked over https) or base URLs such as http://10.0.0.2:8000.
    other_collectors: list[str] = field(default_factory=list)
    # Key of the instance's internal channels (database owner, fastpath feeder). Empty:
    # generated once into data_dir/internal_key. Hosts of one deployment share it.
    internal_key: str = ""
    # X-Real-IP / X-Forwarded-For are trusted only when the TCP peer is one of these.
    trusted_proxies: list[str] = field(default_factory=lambda: ["127.0.0.1", "::1"])
    # Addresses / networks allowed to GET /metrics, matched against the TCP peer (never
    # X-Forwarded-For). Empty: anyone.
    metrics_allow: list[str] = field(default_factory=list)
    # Largest accepted request body, in bytes (after decompression for measurements).
    max_body_size: int = 16 * 1024 * 1024
    # Seconds a connection may take to send a request line and headers: from its opening,
    # or on a kept-alive connection from the first byte of the next request (0: no limit).
    header_timeout: float = 10.0
    # Seconds a request body may take from the end of its headers, plus one second per
    # body_min_rate bytes received (0: no limit); past it the reader gets a 408.
    body_timeout: float = 30.0
    body_min_rate: int = 500
    # Seconds an idle kept-alive connection stays open (aiohttp's keepalive_timeout).
    keepalive_timeout: float = 75.0
    # Origins allowed for credentialed CORS (regular expressions).
    cors_origins: list[str] = field(
        default_factory=lambda: [
            r"^https://[-A-Za-z0-9]+\.ooni\.org$",
            r"^https://[-A-Za-z0-9]+\.test\.ooni\.org$",
            r"^https://[-A-Za-z0-9]+\.ooni\.io$",
            r"^https://[-A-Za-z0-9]+\.test\.ooni\.io$",
        ]
    )


@dataclass
class DatabaseConfig:
    # "embedded": chdb in one owner process, reached through ClickHouse's HTTP interface.
    # "http": a ClickHouse server's HTTP interface at `url`.
    # "native": a ClickHouse server over the native protocol (asynch) at `url`.
    driver: str = "embedded"
    # http(s)://host:8123 for "http"; clickhouse://user:pass@host:9000/db for "native".
    url: str = ""
    database: str = "default"
    user: str = "default"
    password: str = ""
    # Embedded owner: chdb directory and the Unix socket of its HTTP interface (both under
    # data_dir, so every instance has its own and jobs find it from --data-dir alone).
    path: str = "db"
    owner_socket: str = "run/db.sock"
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    # The API's database probe (health monitor and circuit breaker, storage.breaker): no
    # answer within this many seconds and reads are refused at once until it answers again.
    probe_timeout: float = 1.0
    # Sent as the ClickHouse setting `max_execution_time` on reads (seconds).
    max_execution_time: int = 28
    pool_size: int = 8
    # A ClickHouse cluster (servers only): every DDL statement runs ON CLUSTER, tables are
    # created with replicated engines (storage/cluster.py). Empty: one server.
    cluster: str = ""


@dataclass
class SpoolConfig:
    # Root of the measurement spool (incoming/<hour>_<cc>_<test>/<uid>.post).
    dir: str = "spool"
    # fsync the write-ahead log before acknowledging (only ever disable in benchmarks).
    fsync: bool = True
    # Largest number of measurements committed by one fdatasync (group commit).
    max_batch: int = 512
    # Seconds between checkpoints (fsync of .post files, then WAL truncation).
    checkpoint_interval: float = 10.0
    # Threads creating .post files (creation waits on the filesystem journal, not the CPU).
    file_threads: int = 2
    # /health fails (503) when the spool's filesystem has less free space than this (MiB).
    min_free_mb: int = 100


@dataclass
class FastpathConfig:
    # Feeders that accept POST /<measurement_uid>, tried in order. Empty: this instance's
    # own fastpath at host:port below (the one source of the wiring; --fastpath-port).
    urls: list[str] = field(default_factory=list)
    # Simultaneous deliveries in flight.
    concurrency: int = 8
    timeout: float = 10.0
    # Back-off between retries while the fastpath is down (seconds, doubles up to max).
    retry_min: float = 0.5
    retry_max: float = 30.0
    # Pending uids kept in memory; beyond this the spool is rescanned when the queue drains.
    max_pending_in_memory: int = 200_000
    # Whether `oonibackend run` starts the local fastpath.
    enabled: bool = True
    # The fastpath's own feeder (POST /<uid>) listens here.
    host: str = "127.0.0.1"
    port: int = 8472
    # Scoring worker processes (0: one per core).
    workers: int = 0
    # Durable intake queue and quarantine of measurements that crashed a scorer.
    dir: str = "fastpath"
    # Measurements queued on disk before the feeder answers 503 (backpressure).
    max_queue: int = 50000
    # Rows per ClickHouse insert, and the longest a row waits for its batch (seconds).
    batch_size: int = 5000
    batch_interval: float = 1.0
    # Longest back-off between retries of a failed insert (seconds; never dropped).
    insert_retry_max: float = 30.0
    # Seconds between reloads of the fingerprint tables.
    fingerprint_refresh: float = 3600.0
    # Seconds between polls of the fingerprints dataset version: a finished
    # update-fingerprints is in use within about this long (0: periodic reloads only).
    fingerprint_poll: float = 1.0


@dataclass
class QuotasConfig:
    enabled: bool = True
    dir: str = "quotas"
    # Budgets in seconds of wall-clock request time.
    daily: int = 4000
    weekly: int = 20000
    monthly: int = 60000
    # Budgets for requests carrying a valid account token.
    token_daily: int = 500
    token_weekly: int = 2000
    token_monthly: int = 6000
    # Addresses never metered.
    whitelist: list[str] = field(default_factory=lambda: ["37.218.245.43", "37.218.242.149"])
    # Exact paths and path prefixes (ending in "*") that are never metered. Submissions
    # (/report, /report/{id}, submit_measurement) are unmetered by design, as in the legacy
    # API: probes behind CGNAT share a /24, and a refused measurement is lost for good.
    unmetered: list[str] = field(
        default_factory=lambda: ["/", "/health", "/metrics", "/version", "/report*",
                                 "/api/v1/submit_measurement"]
    )
    # How often pending charges are written to LMDB (seconds).
    flush_interval: float = 1.0


@dataclass
class GeoIPConfig:
    # MaxMind-format country and ASN files (db-ip lite or GeoLite2). Missing: ZZ / AS0.
    cc_db: str = "geoip/cc.mmdb"
    asn_db: str = "geoip/asn.mmdb"
    # `download-geoip` source: http(s) or file:// URL template, or a directory, with {kind}
    # (country / asn) and {month} (YYYY-MM) placeholders.
    download_url: str = "https://download.db-ip.com/free/dbip-{kind}-lite-{month}.mmdb.gz"
    # Seconds between checks of the files by the API (reopened when replaced; 0: never).
    reload_interval: float = 60.0
    # Record accepted measurements whose probe_cc / probe_asn differ from a lookup of the
    # submitting address in `faulty_measurements` (docs/current_services.md §2), in one
    # insert every anomalies_flush_interval seconds; past anomalies_queue pending records
    # (or while the database is down) they are dropped and counted.
    anomalies: bool = True
    anomalies_queue: int = 10000
    anomalies_flush_interval: float = 1.0


@dataclass
class AsnmetaConfig:
    # `update-asnmeta` source: OONI's AS-to-organisation history (URL or file, may be .gz).
    source: str = ("https://github.com/ooni/historical-geoip/releases/download/latest/"
                   "all_as_org_map.json")
    # Largest accepted document, in bytes (downloaded and uncompressed).
    max_bytes: int = 512 * 1024 * 1024


@dataclass
class ProbeConfig:
    # HS256 key for probe and account tokens; empty: generated once into data_dir/jwt_secret.
    jwt_secret: str = ""
    token_expiry_days: int = 7
    psiphon_config_file: str = "psiphon_config.json"
    tor_targets_file: str = "tor_targets.json"
    # Seconds between refreshes of the in-memory URL-list snapshot used by check-in.
    test_list_refresh: float = 60.0
    # Seconds between polls of the dataset versions: a finished update-citizenlab or a
    # URL-priority edit reaches check-in within about this long (0: periodic refresh only).
    version_poll: float = 1.0
    # Web-connectivity helpers in OONI's canary rotation (the first one is the canary, first
    # for 10 % of clients), e.g. ["https://0.th.ooni.org", ..., "https://3.th.ooni.org"].
    # Empty: the two legacy helpers in a random order per request.
    th_canary_helpers: list[str] = field(default_factory=list)
    # Feature flags returned by check-in under conf.features, to every probe; the defaults
    # are OONI's current ones (docs/current_services.md §7): Web Connectivity 0.5 (LTE) on,
    # vanilla_tor off.
    features: dict[str, bool] = field(
        default_factory=lambda: {
            "torsf_enabled": False,
            "vanilla_tor_enabled": False,
            "openvpn_enabled": False,
            "webconnectivity_0.5": True,
        }
    )


@dataclass
class S3Config:
    # Bucket of the raw measurements (postcans, jsonl.gz). Empty: the local object store.
    bucket: str = ""
    # Local object store (embedded default): a directory laid out like the bucket.
    local_dir: str = "objects"
    # S3 endpoint (empty: AWS), region and credentials (empty: anonymous / environment).
    endpoint_url: str = ""
    region: str = "eu-central-1"
    access_key_id: str = ""
    secret_access_key: str = ""


@dataclass
class AccountsConfig:
    # Key of the account-id hash (blake2b of the email). Empty: generated once into
    # data_dir/account_hashing_key. OONI's key gives OONI's account ids.
    hashing_key: str = ""
    # A session token lives this long and is refreshed by Explorer while in use...
    session_expiry_days: float = 7.0
    # ...until this long after the email login; then a new login link is needed.
    login_expiry_days: float = 90.0
    # Hosts a login link may lead back to (https only), for both logins (legacy and v2).
    redirect_hosts: list[str] = field(default_factory=lambda: [
        "explorer.ooni.org", "explorer.test.ooni.org", "explorer.dev.ooni.org", "run.ooni.io",
        "run.ooni.org",
        "run.test.ooni.org", "run-v2.ooni.org", "test-lists.ooni.org",
        "test-lists.test.ooni.org"])
    # Seconds between reloads of the session_expunge table (forced re-logins).
    expunge_refresh: float = 10.0


@dataclass
class SmtpConfig:
    # The mail server that sends login links.
    host: str = "127.0.0.1"
    port: int = 25
    # Implicit TLS (SMTPS, usually port 465); or STARTTLS on a plain connection.
    ssl: bool = False
    starttls: bool = False
    # Empty username: no AUTH.
    username: str = ""
    password: str = ""
    source_address: str = "contact@example.org"
    timeout: float = 10.0


@dataclass
class BackupConfig:
    # `oonibackend backup`: tables copied to the object store, zstd-compressed TSV chunks.
    tables: list[str] = field(default_factory=lambda: [
        "fastpath", "jsonl", "citizenlab", "url_priorities", "fingerprints_dns",
        "fingerprints_http", "asnmeta", "incidents", "oonirun", "accounts", "session_expunge",
        "msmt_feedback", "obs_openvpn", "test_helper_instances"])
    # Tables cut per month on a time column (table = column), then into chunks of at most
    # chunk_rows rows (on hour, then second, boundaries); the others are one chunk each.
    monthly: dict[str, str] = field(default_factory=lambda: {
        "fastpath": "measurement_start_time", "obs_openvpn": "measurement_start_time"})
    chunk_rows: int = 500_000
    # Keys: <prefix>/<run id>/<table>/<chunk>.tsv.zst, plus <table>/manifest.json per table.
    prefix: str = "backup"
    # Complete backup runs kept in the object store (0: all; older ones are deleted).
    keep_runs: int = 0
    # `oonibackend export`: public CSV exports under <export_prefix>/.
    public_tables: list[str] = field(default_factory=lambda: ["fastpath", "citizenlab",
                                                              "asnmeta"])
    export_prefix: str = "exports"
    # The live workload keeps priority: every read runs with these ClickHouse settings,
    # the job sleeps `pause` seconds between chunks and reads at most max_bytes_per_second
    # (uncompressed, 0: unlimited).
    priority: int = 10
    max_threads: int = 1
    max_execution_time: int = 3600
    pause: float = 1.0
    max_bytes_per_second: int = 50_000_000
    compression_level: int = 3
    # Resume state and lock of the backup job (under data_dir).
    dir: str = "backup"
    # The database's HTTP interface for these jobs when database.driver is "native" (whose
    # protocol cannot carry raw formatted data), e.g. http://db:8123.
    http_url: str = ""


@dataclass
class AggregationConfig:
    # Per-query cost cap of /api/v1/aggregation (ClickHouse settings max_execution_time and
    # max_rows_to_read): a query past either is stopped and answered 504.
    max_execution_time: int = 20
    max_rows_to_read: int = 1_000_000_000
    # Seconds an answer is reused by the API process, and the Cache-Control max-age sent
    # for Nginx and browsers (0: neither).
    cache_seconds: int = 300
    # Answer from the pre-aggregated rollups (migration 0012) when a request allows; false:
    # always from fastpath (the same answers, slower; tests compare the two).
    rollups: bool = True


@dataclass
class DetectorConfig:
    # `oonibackend detect` (timer): per-series (test_name, input, probe_cc, probe_asn) moving
    # averages of fastpath outcomes in time buckets, a status with hysteresis, and an event in
    # blocking_events at each OK <-> BLOCKED change (see oonibackend/jobs/detector/changepoint.py).
    # Tests analysed (empty: every test).
    test_names: list[str] = field(default_factory=lambda: [
        "web_connectivity", "facebook_messenger", "signal", "telegram", "whatsapp", "psiphon",
        "tor", "torsf", "vanilla_tor", "riseupvpn"])
    bucket_minutes: int = 60
    # A fresh detector (no watermark yet) starts this many hours back; later runs resume
    # from the watermark, however old.
    window_hours: int = 48
    # Only buckets that ended at least this long ago are processed (late uploads).
    delay_minutes: int = 20
    # Weight of one measurement in the moving averages.
    alpha: float = 0.05
    # BLOCKED when confirmed + pure anomaly share >= blocked_threshold or confirmed share >=
    # confirmed_threshold; OK when the accessible share >= ok_threshold; else unchanged.
    blocked_threshold: float = 0.6
    confirmed_threshold: float = 0.3
    ok_threshold: float = 0.8
    # Measurements a series needs before it gets a status.
    min_count: int = 10
    # Buckets read and written per batch; the ClickHouse time limit of each read (seconds).
    batch_buckets: int = 6
    max_execution_time: int = 600


@dataclass
class RotationConfig:
    # `oonibackend rotate` (timer, daily): keeps `count` web-connectivity test helpers on a
    # cloud provider, each replaced after max_age_days; a replaced host drains (no DNS, not
    # served) for drain_hours before it is destroyed. Hosts: test_helper_instances.
    provider: str = "digitalocean"
    api_url: str = "https://api.digitalocean.com/v2"
    # API token, or a file holding it (relative: under data_dir), to keep it out of here.
    token: str = ""
    token_file: str = ""
    count: int = 2
    max_age_days: float = 7.0
    drain_hours: float = 24.0
    # The droplets: region, size and image slugs, SSH key ids or fingerprints, tags, and a
    # cloud-init script that installs the test helper (relative path: under data_dir).
    region: str = "ams3"
    size: str = "s-1vcpu-1gb"
    image: str = "debian-12-x64"
    ssh_keys: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=lambda: ["oonith"])
    user_data_file: str = ""
    # Droplet names are <name_prefix>-<rdn>-<UTC time>; droplets with the prefix that are in
    # no table row are reported as orphans (never touched).
    name_prefix: str = "oonith"
    # A host is published as <n>.<dns_zone> (A and AAAA records, this TTL in seconds), n the
    # lowest number in no row and no existing record of the zone.
    dns_zone: str = "th.ooni.org"
    dns_ttl: int = 60
    # Readiness: a web_connectivity control request to <check_scheme>://<IPv4>:<check_port>/
    # sent as <check_hostname> (TLS name and Host; empty: the host's own name), verified
    # against check_ca_file (empty: the system CAs), each try limited to check_timeout s.
    check_scheme: str = "https"
    check_port: int = 443
    check_hostname: str = ""
    check_ca_file: str = ""
    check_timeout: float = 10.0
    # Longest wait for a new droplet to be active and pass the check (seconds), polled
    # every poll_interval seconds; then it is destroyed and the run fails.
    ready_timeout: float = 900.0
    poll_interval: float = 10.0
    # The API reloads the live hosts it serves every refresh_interval seconds (0: never).
    refresh_interval: float = 60.0


@dataclass
class GithubConfig:
    # Test List Editor (/api/_/url-submission/..., /api/v1/url-submission/...): a user's edits
    # of the CitizenLab test lists go to a branch of push_repo, proposed to origin_repo as a
    # pull request. Empty token and token_file: those routes answer 503.
    api_url: str = "https://api.github.com"
    origin_repo: str = "citizenlab/test-lists"
    push_repo: str = "ooni-bot/test-lists"
    # Account owning the token (git push user, commit author); empty: push_repo's owner.
    user: str = ""
    # API token, or a file holding it (relative: under data_dir), read at start.
    token: str = ""
    token_file: str = ""
    # git remote URLs; empty: https://github.com/<repo>.git. Push credentials are added at
    # push time only (never written into a git config).
    origin_url: str = ""
    push_url: str = ""
    # Shared clone and per-user worktrees (relative: under data_dir).
    workdir: str = "testlists"
    base_branch: str = "master"
    # Seconds allowed to each git command and GitHub call (a first clone gets ten times this).
    timeout: float = 30.0
    # The shared clone is pulled before reads and edits at most this often (seconds).
    pull_interval: float = 60.0


@dataclass
class VPNConfig:
    # GET /api/v2/ooniprobe/vpn-config/riseupvpn (docs/current_services.md §3): the base URL
    # of RiseupVPN's public API (/ca.crt, /3/cert, /3/config/eip-service.json).
    riseupvpn_api_url: str = "https://api.black.riseup.net"
    # Hours a fetched configuration is served before it is fetched again (OONI's setting of
    # the same name); a stale one is still served while the provider cannot be reached.
    vpn_credential_refresh_hours: float = 24.0
    # Seconds one fetch from the provider may take, and seconds between attempts while it
    # fails (requests meanwhile get the stale entry, or a 503 when there is none).
    fetch_timeout: float = 10.0
    retry_interval: float = 60.0


@dataclass
class AnoncConfig:
    # Anonymous credentials (docs/current_services.md §1): GET /api/v1/manifest,
    # POST /api/v1/sign_credential and the proof check of submit_measurement.
    enabled: bool = True
    # The manifest served and the secret key of its public parameters (relative: under
    # data_dir; both 0600). Several API hosts share the same two files.
    manifest_file: str = "anonc/manifest.json"
    secret_key_file: str = "anonc/secret_key.json"
    # Generate keys and manifest on first start when both files are missing (embedded
    # default); set false in production so that a host never makes keys of its own.
    generate: bool = True
    # manifest_url in the manifest's meta; empty: this API's /api/v1/manifest.
    manifest_url: str = ""
    # Proofs from probes whose protocol_version is older are stored unverified.
    min_protocol_version: str = "0.1.0"
    # Submission policy written into new manifests (`oonibackend anonc-rotate`): a list of
    # {match = {probe_cc, probe_asn}, policy = {age = [lo, hi], min_measurement_count}}, "*"
    # matching anything, the last the catch-all. Empty: one catch-all, age [0, today+3650].
    policy: list[dict] = field(default_factory=list)
    # Seconds between checks of the two files; a rotation is served within about this long
    # (0: only at start).
    reload_interval: float = 5.0
    # Threads checking proofs (0: one less than the cores, at least one), and proofs that
    # may wait for them before submissions with a proof are answered 503.
    verify_threads: int = 0
    max_pending: int = 256


@dataclass
class LoggingConfig:
    level: str = "INFO"
    # "auto" (text when stderr is a terminal, else JSON), "text" or "json" (one object per line).
    format: str = "auto"


@dataclass
class Config:
    data_dir: str = "var"
    server: ServerConfig = field(default_factory=ServerConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    fastpath: FastpathConfig = field(default_factory=FastpathConfig)
    quotas: QuotasConfig = field(default_factory=QuotasConfig)
    geoip: GeoIPConfig = field(default_factory=GeoIPConfig)
    asnmeta: AsnmetaConfig = field(default_factory=AsnmetaConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    s3: S3Config = field(default_factory=S3Config)
    backup: BackupConfig = field(default_factory=BackupConfig)
    accounts: AccountsConfig = field(default_factory=AccountsConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    aggregation: AggregationConfig = field(default_factory=AggregationConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    rotation: RotationConfig = field(default_factory=RotationConfig)
    github: GithubConfig = field(default_factory=GithubConfig)
    vpn: VPNConfig = field(default_factory=VPNConfig)
    anonc: AnoncConfig = field(default_factory=AnoncConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    # Where the config was read from (not a key).
    source: str = ""

    def path(self, value: str) -> Path:
        """Resolve a configured path: absolute as is, relative under data_dir."""
        p = Path(value)
        return p if p.is_absolute() else Path(self.data_dir) / p

    def jwt_secret(self) -> str:
        """The key of probe and account tokens: configured, or generated under data_dir."""
        return self.secret("jwt_secret", self.probe.jwt_secret)

    def account_hashing_key(self) -> str:
        return self.secret("account_hashing_key", self.accounts.hashing_key)

    def secret(self, name: str, configured: str) -> str:
        """`configured` if set, else a random key generated once into data_dir/<name> (0600;
        the first of two racing processes wins)."""
        if configured:
            return configured
        f = self.path(name)
        try:
            return f.read_text().strip()
        except FileNotFoundError:
            f.parent.mkdir(parents=True, exist_ok=True)
            key = secrets.token_hex(32)
            tmp = f.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(key)
            try:
                os.link(tmp, f)
            except FileExistsError:
                pass
            os.unlink(tmp)
            return f.read_text().strip()

    def internal_key(self) -> str:
        """The key the instance's own processes present to its database owner and feeder."""
        return self.secret("internal_key", self.server.internal_key)

    def db_password(self) -> str:
        """The database password; the embedded owner's defaults to the internal key."""
        d = self.database
        if d.driver == "embedded" and not d.password:
            return self.internal_key()
        return d.password

    def owner_socket(self) -> Path:
        return self.path(self.database.owner_socket)

    def db_url(self) -> str:
        """URL of the database for clients (the owner's socket, in a URL, when embedded)."""
        if self.database.driver == "embedded":
            return f"http+unix://{self.owner_socket()}"
        return self.database.url

    def fastpath_urls(self) -> list[str]:
        """Where the API delivers measurements: `fastpath.urls`, else this instance's own
        fastpath at fastpath.host:port (a wildcard listen address is reached on loopback)."""
        fp = self.fastpath
        if fp.urls:
            return [u.rstrip("/") + "/" for u in fp.urls]
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(fp.host, fp.host)
        if ":" in host:
            host = f"[{host}]"
        return [f"http://{host}:{fp.port}/"]


def _merge(obj: Any, values: dict[str, Any], where: str) -> None:
    fields = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in values.items():
        if key not in fields or (key == "source" and isinstance(obj, Config)):
            raise ConfigError(f"unknown config key {where}{key}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}{key} must be a table")
            _merge(current, value, f"{where}{key}.")
            continue
        expected = type(current)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(
                f"{where}{key} must be {expected.__name__}, got {type(value).__name__}"
            )
        setattr(obj, key, value)


def load(path: str | None = None, **overrides: Any) -> Config:
    """Read `path` (TOML) over the defaults, then apply non-None command-line overrides.

    Overrides use dotted names: load(None, **{"server.port": 9000}).
    """
    cfg = Config()
    if path:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as e:
            raise ConfigError(f"cannot read config {path}: {e.strerror}") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"invalid TOML in {path}: {e}") from e
        _merge(cfg, data, "")
        cfg.source = path
    for dotted, value in overrides.items():
        if value is None:
            continue
        *parents, leaf = dotted.split(".")
        node: dict[str, Any] = {leaf: value}
        for p in reversed(parents):
            node = {p: node}
        _merge(cfg, node, "")
    cfg.data_dir = os.path.abspath(cfg.data_dir)
    if cfg.database.driver not in ("embedded", "http", "native"):
        raise ConfigError("database.driver must be embedded, http or native")
    if cfg.logging.format not in ("auto", "text", "json"):
        raise ConfigError("logging.format must be auto, text or json")
    for key in ("header_timeout", "body_timeout", "body_min_rate", "keepalive_timeout"):
        if getattr(cfg.server, key) < 0:
            raise ConfigError(f"server.{key} must not be negative")
    if cfg.database.driver != "embedded" and not cfg.database.url:
        raise ConfigError(f"database.url is required with driver {cfg.database.driver}")
    if cfg.database.cluster:
        from oonibackend.storage.cluster import valid_name

        if cfg.database.driver == "embedded":
            raise ConfigError("database.cluster needs a ClickHouse server (driver http or "
                              "native): the embedded chdb is one process, not a cluster")
        if not valid_name(cfg.database.cluster):
            raise ConfigError(f"database.cluster {cfg.database.cluster!r} is not a cluster "
                              "name (letters, digits, _ and -, or a {macro})")
    sock = os.fsencode(cfg.owner_socket())
    if cfg.database.driver == "embedded" and len(sock) > MAX_SOCKET_PATH:
        raise ConfigError(f"database.owner_socket {cfg.owner_socket()} is {len(sock)} bytes, "
                          f"longer than a Unix socket path may be ({MAX_SOCKET_PATH}): "
                          "set it to a shorter absolute path")
    return cfg
