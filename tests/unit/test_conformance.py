"""Conformance with the reference fastpath on every sample of docs/fastpath.md §6
(§6.1, §6.2, §6.6).

For each sample file: the `scores` column byte for byte, the derived flags
(anomaly / confirmed / msm_failure) and `blocking_type`, exactly as the reference stores them.
The runs use uid "bogus_uid" like the reference's (so the date check of §2.4 never applies),
with the sample fingerprints loaded ("FP" in §6.1; results are identical without them except
for the fingerprinted web_connectivity samples). Expected strings not quoted verbatim in §6.6
are the §6.2 dicts in the key order the rules of §2.7 produce.
"""

from __future__ import annotations

import io

import pytest

from tests.conftest import SAMPLES
from workers.fingerprints import Fingerprints
from workers.process import process, process_msm

Z = ('"blocking_general":{g},"blocking_global":0.0,"blocking_country":{c},'
     '"blocking_isp":0.0,"blocking_local":0.0')


def zeros(g: str = "0.0", c: str = "0.0") -> str:
    return Z.format(g=g, c=c)


ZERO = "{" + zeros() + "}"
FAILED = "{" + zeros() + ',"accuracy":0.0}'
GENERAL_1 = "{" + zeros("1.0") + "}"

# file -> (scores column, "anomaly/confirmed/msm_failure", blocking_type)
CASES: dict[str, tuple[str, str, str]] = {
    "20250527233111.802678_ID_webconnectivity_5a37ec909dbf14e3.json": (
        "{" + zeros("1.0", "1.0") + ',"fingerprints":[{"confidence_no_fp":5,'
        '"expected_countries":["ID"],"location_found":"header.location",'
        '"name":"ooni.id_lamanlabuh_kominfo","scope":"nat"}],"confirmed":true}', "t/t/f", ""),
    "browser_web.json": (
        "{" + zeros() + ',"extra":{"browser_name":"chrome","load_time_ms":357.40000000037253}}',
        "f/f/f", ""),
    "bug_351.json": (
        "{" + zeros("1.0") + ',"analysis":{"blocking_type":"http-failure"},"accuracy":0.0}',
        "t/f/t", "http-failure"),
    "http_header_field_manipulation_1.json": (FAILED, "f/f/t", ""),
    "http_requests_1.json": (FAILED, "f/f/t", ""),
    "mbx-2.json": (GENERAL_1, "t/f/f", ""),
    "meek.json": (GENERAL_1, "t/f/f", ""),
    "openvpn.json": ("{" + zeros() + ',"extra":{"test_runtime":37.975210163}}', "f/f/f", ""),
    "report1.json": (ZERO, "f/f/f", ""),
    "report2.json": (ZERO, "f/f/f", ""),
    "requests_none.json": ("{" + zeros("1.0") + ',"analysis":{"blocking_type":"dns"}}',
                           "t/f/f", "dns"),
    "riseupvpn.json": ("{}", "f/f/f", ""),
    "signal_022.json": (ZERO, "f/f/f", ""),
    "telegram_nourl.json": (FAILED, "f/f/t", ""),
    "tor.json": ("{" + zeros() + ',"extra":{"test_runtime":0.767114298}}', "f/f/f", ""),
    "torsf_1.json": (GENERAL_1, "t/f/f", ""),
    "vanilla_tor.json": ("{" + zeros("0.98") + "}", "t/f/f", ""),
    # §6.6 says "same [as bug_351] with http-failure"; §6.1 gives t/f/f: no unknown_failure here,
    # so no accuracy key.
    "web_connectivity_b64_hdr.json": (
        "{" + zeros("1.0") + ',"analysis":{"blocking_type":"http-failure"}}', "t/f/f",
        "http-failure"),
    "web_connectivity_ir_fp.json": (
        "{" + zeros("2.0", "1.0") + ',"fingerprints":[{"confidence_no_fp":10,'
        '"expected_countries":["IR"],"location_found":"dns","name":"ooni.ir_10dot10_ipv4_1",'
        '"scope":"nat"}],"confirmed":true,"analysis":{"blocking_type":"dns"}}', "t/t/f", "dns"),
    "web_connectivity_no_body.json": (ZERO, "f/f/f", ""),
    "web_connectivity_null.json": (FAILED, "f/f/t", ""),
    "whatsapp.json": (
        "{" + zeros() + ',"analysis":{"registration_server_accessible":true,'
        '"whatsapp_web_accessible":true,"whatsapp_endpoints_accessible":true}}', "f/f/f", ""),
}

# Legacy YAML reports (§6.1): normalised (§5, workers.sources.legacy_yaml), then scored.
YAML_CASES = {
    "binary_city.yaml": ("2015-11-05", "0120151105e6e97af9dabb462dc4066ae2fd58a5", ZERO, "f/f/f"),
    "http_invalid_request_line.yaml": ("2018-07-26", "012018072655bdb2c4f8c648f4ef622490136d32",
                                       GENERAL_1, "t/f/f"),
}


@pytest.fixture(scope="module")
def fps() -> Fingerprints:
    return Fingerprints.from_json_files(SAMPLES / "fingerprints_dns.json",
                                        SAMPLES / "fingerprints_http.json")


def _flags(row: dict) -> str:
    return f"{row['anomaly']}/{row['confirmed']}/{row['msm_failure']}"


def test_every_sample_is_covered():
    files = {p.name for p in SAMPLES.iterdir()} - {"fingerprints_dns.json",
                                                   "fingerprints_http.json"}
    assert files == set(CASES) | set(YAML_CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_sample(fps, name):
    scores, flags, blocking_type = CASES[name]
    out = process((SAMPLES / name).read_bytes(), "bogus_uid", fps)
    (row,) = out["fastpath"]
    assert row["scores"] == scores
    assert _flags(row) == flags
    assert row["blocking_type"] == blocking_type
    assert list(out) == (["fastpath", "obs_openvpn"] if name == "openvpn.json" else ["fastpath"])


def test_id_sample_with_its_real_uid(fps):
    """The ID sample is named after its API uid: the date check applies and passes."""
    name = "20250527233111.802678_ID_webconnectivity_5a37ec909dbf14e3.json"
    row = process((SAMPLES / name).read_bytes(), name[:-5], fps)["fastpath"][0]
    assert row["scores"] == CASES[name][0] and row["measurement_uid"] == name[:-5]


@pytest.mark.parametrize("name", sorted(YAML_CASES))
def test_yaml_sample(fps, name):
    legacy_yaml = pytest.importorskip("workers.sources.legacy_yaml")
    day, uid, scores, flags = YAML_CASES[name]
    with open(SAMPLES / name, "rb") as f:
        msms = list(legacy_yaml.iter_yaml_msmt_normalized(io.BytesIO(f.read()), day,
                                                          f"{day}/{name}"))
    assert len(msms) == 1
    assert msms[0]["measurement_uid"] == uid
    row = process_msm(msms[0], uid, Fingerprints.empty())["fastpath"][0]
    assert row["scores"] == scores and _flags(row) == flags
