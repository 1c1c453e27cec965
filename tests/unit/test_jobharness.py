"""The jobs' shared frame: progress on stdout, one failure line on stderr, exit codes, a
metrics file that cannot be written is not the job's failure."""

from __future__ import annotations

import argparse
import logging

import pytest

from oonibackend import config, exitcodes
from oonibackend.jobs.harness import Job
from oonibackend.storage import DatabaseError, DatabaseUnavailable

JOB = Job("oonibackend thing")


def test_say_and_failures(capsys: pytest.CaptureFixture[str]):
    JOB.say("step 1")
    assert JOB.fail("broken") == exitcodes.EXIT_FAILED
    assert JOB.usage("--x must be positive") == exitcodes.EXIT_USAGE
    assert JOB.fail("another run", exitcodes.EXIT_LOCKED) == 3
    out, err = capsys.readouterr()
    assert out == "step 1\n"
    assert err.splitlines() == ["oonibackend thing: broken",
                                "oonibackend thing: --x must be positive",
                                "oonibackend thing: another run"]


def test_error_names_an_unavailable_database(capsys: pytest.CaptureFixture[str]):
    assert JOB.error(DatabaseUnavailable("no answer")) == 1
    assert JOB.error(DatabaseError("syntax")) == 1
    assert capsys.readouterr().err.splitlines() == [
        "oonibackend thing: database unavailable: no answer",
        "oonibackend thing: error: syntax"]


def test_write_metrics(tmp_path, caplog: pytest.LogCaptureFixture):
    cfg = config.load(None, data_dir=str(tmp_path))
    args = argparse.Namespace(metrics_file=None)
    JOB.write_metrics(args, cfg, "thing", True, 1.5, {"rows": ("Rows", 7)})
    text = (tmp_path / "metrics" / "thing.prom").read_text()
    assert "oonibackend_thing_last_run_rows 7.0" in text
    # A path that cannot be written: a warning, no exception.
    args.metrics_file = str(tmp_path / "metrics" / "thing.prom" / "below-a-file.prom")
    with caplog.at_level(logging.WARNING):
        JOB.write_metrics(args, cfg, "thing", False, 1.5, {})
    assert "cannot write the metrics file" in caplog.text
