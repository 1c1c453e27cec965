"""Timer jobs' metrics files for node_exporter's textfile collector."""

import argparse
import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from oonibackend.jobs import metrics as jobmetrics


def families(text: str) -> dict[str, tuple[str, str, float]]:
    return {f.name: (f.type, f.documentation, f.samples[0].value)
            for f in text_string_to_metric_families(text)}


def test_render_gauges_with_help():
    text = jobmetrics.render("upload", True, 1.23456, {"files": ("Objects uploaded", 3)},
                             now=1700000000.0)
    assert "# HELP oonibackend_upload_last_run_files Objects uploaded\n" \
           "# TYPE oonibackend_upload_last_run_files gauge\n" \
           "oonibackend_upload_last_run_files 3.0\n" in text
    assert families(text) == {
        "oonibackend_upload_last_run_timestamp_seconds":
            ("gauge", "End of the latest upload run", 1700000000.0),
        "oonibackend_upload_last_run_success":
            ("gauge", "1 when the latest upload run succeeded", 1.0),
        "oonibackend_upload_last_run_seconds":
            ("gauge", "Duration of the latest upload run", 1.235),
        "oonibackend_upload_last_run_files": ("gauge", "Objects uploaded", 3.0),
    }


def test_write_is_atomic_and_parseable(tmp_path):
    path = tmp_path / "metrics" / "rotate.prom"
    jobmetrics.write(path, "rotate", False, 2.0,
                     {"live": ("Live test helpers", float("nan")), "created": ("Created", 0)})
    got = families(path.read_text())
    assert got["oonibackend_rotate_last_run_success"][2] == 0
    assert got["oonibackend_rotate_last_run_created"][2] == 0
    assert math.isnan(got["oonibackend_rotate_last_run_live"][2])
    jobmetrics.write(path, "rotate", True, 1.0, {})
    assert families(path.read_text())["oonibackend_rotate_last_run_success"][2] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["rotate.prom"]  # no temp file


def test_a_failed_write_leaves_the_previous_file(tmp_path):
    path = tmp_path / "upload.prom"
    jobmetrics.write(path, "upload", True, 1.0, {})
    before = path.read_text()
    with pytest.raises(ValueError):
        jobmetrics.write(path, "upload", True, 1.0, {"files": ("Files", "not a number")})
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["upload.prom"]


def test_path_for_option_and_default(tmp_path):
    class Cfg:
        def path(self, p: str):
            return tmp_path / p

    parser = argparse.ArgumentParser()
    jobmetrics.add_option(parser, "detect")
    assert jobmetrics.path_for(parser.parse_args([]), Cfg(), "detect") == \
        tmp_path / "metrics" / "detect.prom"
    args = parser.parse_args(["--metrics-file", str(tmp_path / "x.prom")])
    assert jobmetrics.path_for(args, Cfg(), "detect") == tmp_path / "x.prom"
