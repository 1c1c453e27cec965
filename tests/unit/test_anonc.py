"""Anonymous credentials, the pure parts: policy matching, manifest validation and version,
the ordered verdict rules, the spooled envelope, and the key files."""

from __future__ import annotations

import datetime as dt
import json
import stat

import ooniauth_py
import pytest

from oonibackend import config
from oonibackend.anonc import envelope, keys
from oonibackend.anonc import manifest as mf
from oonibackend.anonc import verdict as vd
from oonibackend.anonc.policy import PolicyError, match, parse_rules

T0 = dt.datetime(2026, 1, 1)


def rule(cc: str, asn: str, lo: int = 0, hi: int = 10, n: int = 0) -> dict:
    return {"match": {"probe_cc": cc, "probe_asn": asn},
            "policy": {"age": [lo, hi], "min_measurement_count": n}}


# -- policy ------------------------------------------------------------------------------------

def test_first_matching_rule_wins_and_catch_all_is_last():
    rules = parse_rules([rule("IT", "AS1", n=5), rule("IT", "*", n=3), rule("*", "AS2", n=2),
                         rule("*", "*", n=1)])
    assert match(rules, "IT", "AS1").min_measurement_count == 5
    assert match(rules, "IT", "AS9").min_measurement_count == 3
    assert match(rules, "DE", "AS2").min_measurement_count == 2
    assert match(rules, "DE", "AS9").min_measurement_count == 1
    assert match(rules, "IT", "AS1").age == (0, 10)


@pytest.mark.parametrize("doc, why", [
    ([], "non-empty"),
    ("x", "non-empty"),
    ([rule("IT", "*")], "last"),
    ([rule("*", "*"), rule("IT", "*"), rule("*", "*")], "only the last"),
    ([{"match": {"probe_cc": "*"}, "policy": {"age": [0, 1]}}], "probe_asn"),
    ([rule("*", "*", lo=5, hi=5)], "lo < hi"),
    ([{"match": {"probe_cc": "*", "probe_asn": "*"}, "policy": {"age": [0]}}], "[lo, hi]"),
    ([rule("*", "*", n=-1)], "non-negative"),
    ([{"match": {"probe_cc": "*", "probe_asn": "*"}, "policy": {"age": [0, True]}}],
     "non-negative"),
])
def test_bad_policies_are_refused_on_load(doc, why):
    with pytest.raises(PolicyError, match=why):
        parse_rules(doc)


# -- manifest ----------------------------------------------------------------------------------

PP = ooniauth_py.ServerState().get_public_parameters()


def test_manifest_round_trip_and_version_follows_content():
    data = mf.render(PP, [rule("*", "*")])
    m = mf.parse(data, T0)
    assert m.document == {"nym_scope": "ooni.org/{probe_cc}/{probe_asn}",
                          "submission_policy": [rule("*", "*")], "public_parameters": PP}
    assert m.version == mf.version_of(data) and len(m.version) == 32
    assert mf.parse(data, T0).version == m.version  # same bytes, same version
    other = mf.parse(mf.render(PP, [rule("IT", "*"), rule("*", "*")]), T0)
    assert other.version != m.version
    assert mf.parse(mf.render(ooniauth_py.ServerState().get_public_parameters(),
                              [rule("*", "*")]), T0).version != m.version


@pytest.mark.parametrize("doc, why", [
    (b"nope", "not valid JSON"),
    (b"[]", "JSON object"),
    (json.dumps({"nym_scope": "x", "submission_policy": [rule("*", "*")]}).encode(),
     "lacks public_parameters"),
    (json.dumps({"nym_scope": "x", "submission_policy": [rule("*", "*")],
                 "public_parameters": "!!"}).encode(), "base64"),
    (json.dumps({"nym_scope": "x", "submission_policy": [rule("IT", "*")],
                 "public_parameters": PP}).encode(), "catch-all"),
])
def test_bad_manifests_are_refused(doc, why):
    with pytest.raises(mf.ManifestError, match=why):
        mf.parse(doc, T0)


def test_render_refuses_a_bad_policy():
    with pytest.raises(PolicyError):
        mf.render(PP, [rule("IT", "*")])


# -- verdict rules -----------------------------------------------------------------------------

RULES = parse_rules([rule("IT", "*", 1, 9, 4), rule("*", "*", 0, 99)])
CONTENT = {"probe_cc": "IT", "probe_asn": "AS12874", "test_name": "web_connectivity"}
FULL = {"nym": "n", "zkp_request": "z", "manifest_version": "v1", "protocol_version": "0.1.0"}


def pre(req: dict, content: dict = CONTENT, current: str | None = "v1",
        minimum: tuple[int, ...] = (0, 1, 0)) -> vd.Verdict | vd.Check:
    return vd.precheck(req, content, "TEXT", current, RULES, minimum)


def test_no_credential_fields_is_unverified_without_error():
    assert pre({}) == vd.Verdict("unverified")
    assert pre(dict.fromkeys(FULL)) == vd.Verdict("unverified")
    assert pre({}).code == "u"


@pytest.mark.parametrize("req, error", [
    (dict(FULL, manifest_version="old"), "manifest_not_found"),
    (dict(FULL, manifest_version=None), "manifest_not_found"),  # missing, others present
    ({"nym": "n"}, "manifest_not_found"),  # checked first
    (dict(FULL, nym=None), "incomplete_anonc_fields"),
    (dict(FULL, zkp_request=""), "incomplete_anonc_fields"),
    (dict(FULL, protocol_version=None), "incomplete_anonc_fields"),
    (dict(FULL, zkp_request=5), "incomplete_anonc_fields"),
    (dict(FULL, protocol_version="banana"), "invalid_protocol_version"),
    (dict(FULL, protocol_version="0.0.9"), "protocol_version_too_old"),
])
def test_ordered_rules_give_unverified_with_the_documented_error(req, error):
    assert pre(req) == vd.Verdict("unverified", error)


def test_manifest_checked_before_missing_content_fields():
    assert pre(dict(FULL, manifest_version="x"), {"test_name": "x"}).error == \
        "manifest_not_found"
    assert pre(FULL, {"test_name": "x", "probe_cc": "IT"}).error == "incomplete_anonc_fields"


def test_no_manifest_served_means_manifest_not_found():
    assert pre(FULL, current=None) == vd.Verdict("unverified", "manifest_not_found")


@pytest.mark.parametrize("cc, asn", [("it", "AS1"), ("ITA", "AS1"), ("IT", "AS01"),
                                     ("IT", "1"), ("IT", "AS12345678901"), ("IT", "as1")])
def test_metadata_the_library_cannot_take_is_never_passed_to_it(cc, asn):
    assert pre(FULL, dict(CONTENT, probe_cc=cc, probe_asn=asn)) == \
        vd.Verdict("unverified", "bad_metadata")


def test_policy_of_the_measurements_own_network_is_applied():
    check = pre(FULL)
    assert check == vd.Check("n", "z", "IT", "AS12874", "TEXT", (1, 9), 4)
    check = pre(FULL, dict(CONTENT, probe_cc="DE"))
    assert isinstance(check, vd.Check) and check.age == (0, 99)
    assert isinstance(pre(dict(FULL, protocol_version="v0.2"), minimum=(0, 1, 0)), vd.Check)


def test_versions():
    assert vd.parse_version("0.1.0") == (0, 1, 0)
    assert vd.parse_version("v1.2") == (1, 2)
    assert vd.parse_version("1.x") is None and vd.parse_version("") is None


def test_library_errors_map_to_the_documented_strings():
    assert vd.library_error(ooniauth_py.DeserializationFailed()) == "deserialization_failed"
    assert vd.library_error(ooniauth_py.ProtocolError()) == "protocol_error"
    assert vd.library_error(ooniauth_py.CredentialError()) == "credential_error"
    assert vd.library_error(RuntimeError()) == "unknown_error"
    assert vd.Verdict("verified").code == "t" and vd.Verdict("failed").code == "f"


# -- envelope ----------------------------------------------------------------------------------

def test_envelope_keeps_content_bytes_and_drops_identifying_fields():
    content = b'{"b": 1,  "a":"\\u00e9"}'
    req = dict(FULL, extra="x")
    body = envelope.build(content, req, "t")
    assert body.startswith(b'{"format":"json","content":' + content + b",")
    assert json.loads(body) == {"format": "json", "content": json.loads(content),
                                "manifest_version": "v1", "protocol_version": "0.1.0",
                                "is_verified": "t"}
    assert json.loads(envelope.build(b"{}", {}, "u")) == {
        "format": "json", "content": {}, "is_verified": "u"}


# -- key files ---------------------------------------------------------------------------------

def test_keys_generated_once_private_and_rotated(tmp_path):
    cfg = config.load(None, data_dir=str(tmp_path))
    first = keys.ensure(cfg)
    m_path, k_path = keys.paths(cfg)
    for p in (m_path, k_path):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert keys.ensure(cfg).manifest.version == first.manifest.version  # not regenerated
    rotated = keys.publish(cfg)
    assert rotated.manifest.version != first.manifest.version
    assert rotated.manifest.public_parameters != first.manifest.public_parameters
    same_keys = keys.publish(cfg, new_keys=False,
                             policy=[rule("IT", "*", 0, 10**7), rule("*", "*", 0, 10**7)])
    assert same_keys.manifest.public_parameters == rotated.manifest.public_parameters
    assert same_keys.manifest.version != rotated.manifest.version


def test_a_key_that_does_not_match_the_manifest_is_refused(tmp_path):
    cfg = config.load(None, data_dir=str(tmp_path))
    keys.ensure(cfg)
    m_path, k_path = keys.paths(cfg)
    old_manifest = m_path.read_bytes()
    keys.publish(cfg)
    m_path.write_bytes(old_manifest)  # a rotation half done: new key, old manifest
    with pytest.raises(keys.KeyFileError, match="does not belong"):
        keys.load(cfg)


def test_no_generation_in_production(tmp_path):
    cfg = config.load(None, data_dir=str(tmp_path), **{"anonc.generate": False})
    with pytest.raises(keys.KeyFileError, match="cannot read"):
        keys.ensure(cfg)


def test_a_bad_configured_policy_writes_nothing(tmp_path):
    cfg = config.load(None, data_dir=str(tmp_path))
    cfg.anonc.policy = [rule("IT", "*")]
    with pytest.raises(keys.KeyFileError, match="catch-all"):
        keys.ensure(cfg)
    assert not any(p.exists() for p in keys.paths(cfg))


# -- the service (library off the event loop, bounded, reload) --------------------------------

async def test_service_verifies_off_the_loop_bounds_waiting_and_reloads(tmp_path):
    from oonibackend.anonc.service import AnoncService, Busy
    from oonibackend.metrics import Metrics

    cfg = config.load(None, data_dir=str(tmp_path), **{"anonc.reload_interval": 0.0})
    svc = AnoncService(cfg, Metrics())
    await svc.start()
    try:
        creds = svc.current
        user = ooniauth_py.UserState(creds.manifest.public_parameters)
        user.handle_registration_response(
            await svc.sign(creds, user.make_registration_request()))
        age = creds.manifest.rules[-1].policy.age
        req = user.make_submit_request_with_hash("IT", "AS1", "{}", age, 0)
        check = vd.Check(req.nym, req.request, "IT", "AS1", "{}", age, 0)
        verdict = await svc.verify(creds, check)
        assert verdict.status == "verified" and verdict.submit_response
        assert await svc.verify(creds, vd.Check(**{**check.__dict__, "content": "{ }"})) == \
            vd.Verdict("failed", "protocol_error")
        assert await svc.verify(creds, vd.Check(**{**check.__dict__, "nym": "%%"})) == \
            vd.Verdict("failed", "deserialization_failed")
        cfg.anonc.max_pending = 0
        with pytest.raises(Busy):
            await svc.verify(creds, check)
        assert not await svc.reload()  # files unchanged
        keys.publish(cfg)
        assert await svc.reload() and svc.current.manifest.version != creds.manifest.version
    finally:
        await svc.close()
