"""A virtualenv holding OONI's data tool, oonidata, for the tests that run the real thing.

oonidata pulls boto3 with a newer botocore than aiobotocore's pin, so it cannot share our
virtualenv. It is created once (`python -m venv` + `pip install oonidata==<VERSION>`, about
10-60 s depending on the pip cache) under `$OONIBACKEND_OONIDATA_VENV`, else
`~/.cache/oonibackend-test/oonidata-venv`, and reused while it imports the pinned version. An
flock keeps two test processes from building it at once.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

VERSION = "0.3.0"
ENV_VAR = "OONIBACKEND_OONIDATA_VENV"
PIP_TIMEOUT = 900


class VenvError(RuntimeError):
    """The virtualenv could not be created (no network, no PyPI, a failed build)."""


def venv_dir() -> Path:
    default = Path.home() / ".cache" / "oonibackend-test" / "oonidata-venv"
    return Path(os.environ.get(ENV_VAR) or default)


def python_of(venv: Path) -> Path:
    return venv / "bin" / "python"


def installed_version(venv: Path) -> str | None:
    """oonidata's version importable by the venv's interpreter, None if there is none."""
    py = python_of(venv)
    if not py.exists():
        return None
    r = subprocess.run([str(py), "-c", "from oonidata.__about__ import VERSION; print(VERSION)"],
                       capture_output=True, text=True, timeout=120)
    return r.stdout.strip() if r.returncode == 0 else None


def _run(cmd: list[str], what: str) -> None:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        raise VenvError(f"{what} took more than {PIP_TIMEOUT} s") from e
    if r.returncode != 0:
        tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-8:])
        raise VenvError(f"{what} failed (exit {r.returncode}):\n{tail}")


def ensure() -> tuple[Path, float | None]:
    """(the venv's python, seconds spent creating it now or None when reused); VenvError when
    it cannot be created."""
    venv = venv_dir()
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / (venv.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if installed_version(venv) == VERSION:
            return python_of(venv), None
        t0 = time.monotonic()
        shutil.rmtree(venv, ignore_errors=True)  # half-built or another version
        _run([sys.executable, "-m", "venv", str(venv)], "python -m venv")
        _run([str(python_of(venv)), "-m", "pip", "install", "--disable-pip-version-check",
              "-q", "--retries", "2", "--timeout", "30", f"oonidata=={VERSION}"],
             f"pip install oonidata=={VERSION}")
        if installed_version(venv) != VERSION:
            raise VenvError(f"oonidata {VERSION} is not importable in {venv} after install")
        return python_of(venv), time.monotonic() - t0
