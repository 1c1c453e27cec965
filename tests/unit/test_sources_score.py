"""`fastpath score`: every accepted file kind, uid handling, per-file errors."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

from tests.conftest import SAMPLES
from workers.score_cli import load_fingerprints, score_files
from workers.sources.ids import trivial_id

UID = "20220815190100.000000_IR_webconnectivity_0123456789abcdef"


def run(files: list[str], fps=None, uid: str | None = None) -> tuple[int, list[dict], str]:
    out, err = io.StringIO(), io.StringIO()
    failures = score_files(files, fps if fps is not None else load_fingerprints(None), uid,
                           out=out, err=err)
    return failures, [json.loads(x) for x in out.getvalue().splitlines()], err.getvalue()


def test_raw_measurement_with_fingerprints():
    f = str(SAMPLES / "web_connectivity_ir_fp.json")
    failures, rows, _ = run([f], load_fingerprints(SAMPLES))
    assert failures == 0 and len(rows) == 1
    row = rows[0]["row"]
    assert rows[0]["table"] == "fastpath" and rows[0]["file"] == f
    raw = (SAMPLES / "web_connectivity_ir_fp.json").read_bytes()
    assert row["measurement_uid"] == trivial_id(raw, json.loads(raw))
    assert json.loads(row["scores"])["fingerprints"] and row["confirmed"] == "t"
    assert row["measurement_start_time"] == "2022-08-15T19:01:30Z"  # ISO strings
    # without fingerprints nothing is confirmed
    assert run([f])[1][0]["row"]["confirmed"] == "f"


def test_post_body_jsonl_and_uid(tmp_path: Path):
    msm = json.loads((SAMPLES / "web_connectivity_ir_fp.json").read_bytes())
    post = tmp_path / f"{UID}.post"
    post.write_text(json.dumps({"format": "json", "content": msm, "is_verified": "t"}))
    lines = tmp_path / "x.jsonl.gz"
    lines.write_bytes(gzip.compress(b"".join(
        json.dumps(json.loads((SAMPLES / n).read_bytes())).encode() + b"\n"
        for n in ("whatsapp.json", "tor.json"))))
    failures, rows, err = run([str(post), str(lines)], uid=UID)
    assert failures == 0, err
    assert [r["row"]["measurement_uid"] for r in rows] == [UID] * 3
    assert rows[0]["row"]["is_verified"] == "t"
    assert [r["row"]["test_name"] for r in rows[1:]] == ["whatsapp", "tor"]


def test_openvpn_gives_two_tables():
    _, rows, _ = run([str(SAMPLES / "openvpn.json")])
    assert {r["table"] for r in rows} == {"fastpath", "obs_openvpn"}


def test_yaml_report():
    _, rows, _ = run([str(SAMPLES / "binary_city.yaml")])
    assert rows[0]["row"]["measurement_uid"] == "0120151105e6e97af9dabb462dc4066ae2fd58a5"


def test_errors_per_file(tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    lines = tmp_path / "some.jsonl"
    lines.write_text('{"test_name": "x"}\nnot json\n'
                     + json.dumps(json.loads((SAMPLES / "tor.json").read_bytes())) + "\n")
    failures, rows, err = run([str(bad), str(tmp_path / "missing.json"), str(lines)])
    assert failures == 3
    assert f"{lines}:1: discarded, no rows" in err  # reported, not a failure
    assert f"{bad}: not a JSON object" in err
    assert "missing.json: FileNotFoundError" in err
    assert f"{lines}:2: unparsable JSON line" in err
    assert len(rows) == 1 and rows[0]["row"]["test_name"] == "tor"
