"""The example Nginx site (etc/nginx-oonibackend.conf) in front of the real API: it caches
exactly what the API's Cache-Control allows, and never a credentialed request.

The example is used as shipped, with only its addresses, paths and TLS swapped for loopback
ones, so a change of the example that breaks caching fails here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port

EXAMPLE = Path(__file__).resolve().parents[2] / "etc" / "nginx-oonibackend.conf"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)

pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx not installed (make test-servers)")


def site_for_test(api_port: int, port: int, tmp: Path) -> str:
    text = EXAMPLE.read_text()
    text = text[:text.index("server {\n    listen 80;")]  # the plain-HTTP redirect block
    text = text.replace("/var/cache/nginx/oonibackend", str(tmp / "cache"))
    text = text.replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{api_port};")
    text = re.sub(r"    listen 443 ssl http2;\n    listen \[::\]:443 ssl http2;\n",
                  f"    listen 127.0.0.1:{port};\n", text)
    return re.sub(r"    ssl_certificate(_key)? .*\n", "", text)


@pytest.fixture(scope="module")
def nginx(read_backend, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nginx")
    port = free_port()
    (tmp / "site.conf").write_text(site_for_test(read_backend.port, port, tmp))
    # As root, workers would switch to nobody, who cannot enter pytest's 0700 directories.
    user = "user root root;" if os.geteuid() == 0 else ""
    (tmp / "nginx.conf").write_text(f"""
{user}
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{}}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {tmp}/site.conf;
}}
""")
    proc = subprocess.Popen([NGINX, "-c", str(tmp / "nginx.conf"), "-p", str(tmp)],
                            stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/health", timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode()) from None
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)


def cache_status(url: str, **headers: str) -> str:
    req = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()
        return r.headers.get("X-Cache-Status", "")


def test_cacheable_answers_are_served_from_the_cache(nginx):
    url = nginx + "/api/_/test_names"
    assert cache_status(url) == "MISS"
    assert cache_status(url) == "HIT"


def test_no_cache_answers_are_never_reused(nginx):
    url = nginx + "/api/_/account_metadata"
    assert cache_status(url) != "HIT"
    assert cache_status(url) != "HIT"


def test_answers_without_cache_control_are_not_cached(nginx):
    url = nginx + "/health"
    assert cache_status(url) != "HIT"
    assert cache_status(url) != "HIT"


def test_credentialed_requests_bypass_the_cache(nginx):
    url = nginx + "/api/_/countries"
    cache_status(url)
    assert cache_status(url) == "HIT"
    assert cache_status(url, Authorization="Bearer x") == "BYPASS"
