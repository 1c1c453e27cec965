"""GET /version's build label and who may read /metrics (routes/pages.py)."""

from __future__ import annotations

from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from oonibackend.appkeys import CONFIG
from oonibackend.config import Config
from oonibackend.routes import pages


def app_with(allow: list[str], setup: bool = True) -> web.Application:
    cfg = Config()
    cfg.server.metrics_allow = allow
    app = web.Application()
    app[CONFIG] = cfg
    if setup:
        pages.setup(app)
    return app


def req(app: web.Application, peer: str | None, headers: dict[str, str] | None = None):
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        (peer, 12345) if name == "peername" and peer is not None else default
    )
    return make_mocked_request("GET", "/metrics", headers=headers or {}, transport=transport,
                               app=app)


def test_metrics_open_to_anyone_by_default():
    app = app_with([])
    assert pages.metrics_allowed(req(app, "5.6.7.8"))
    assert pages.metrics_allowed(req(app, None))


@pytest.mark.parametrize("setup", [True, False])
def test_metrics_restricted_to_the_tcp_peer(setup):
    app = app_with(["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"], setup)
    for peer in ("127.0.0.1", "::ffff:127.0.0.1", "10.20.30.40", "2001:db8::5"):
        assert pages.metrics_allowed(req(app, peer)), peer
    for peer in ("127.0.0.2", "11.0.0.1", "2001:db9::1", "::1", None):
        assert not pages.metrics_allowed(req(app, peer)), peer
    # forwarded addresses are not believed, whatever the peer
    spoof = {"X-Forwarded-For": "127.0.0.1", "X-Real-IP": "127.0.0.1"}
    assert not pages.metrics_allowed(req(app, "5.6.7.8", spoof))


def test_invalid_metrics_allow_stops_the_setup():
    with pytest.raises(ValueError):
        app_with(["10.0.0.300"])


async def test_metrics_refused_is_a_json_403():
    from oonibackend.errors import APIError

    app = app_with(["10.9.9.9/32"])
    with pytest.raises(APIError) as e:
        await pages.metrics(req(app, "127.0.0.1"))
    assert e.value.status == 403


def test_build_label(tmp_path, monkeypatch):
    label = tmp_path / "BUILD_LABEL"
    monkeypatch.setattr(pages, "BUILD_LABEL", label)
    pages.build_label.cache_clear()
    try:
        assert pages.build_label() is None
        label.write_text("v0.1.0-42-gabcdef\n")
        pages.build_label.cache_clear()
        assert pages.build_label() == "v0.1.0-42-gabcdef"
    finally:
        pages.build_label.cache_clear()


async def test_version_shape(tmp_path, monkeypatch):
    import json

    from oonibackend import __version__

    monkeypatch.setattr(pages, "BUILD_LABEL", tmp_path / "missing")
    pages.build_label.cache_clear()
    try:
        resp = await pages.version(req(app_with([]), "5.6.7.8"))
    finally:
        pages.build_label.cache_clear()
    assert resp.headers["Cache-Control"] == "no-cache"
    assert json.loads(resp.body) == {"version": __version__, "build_label": None,
                                     "package_name": "oonibackend"}
