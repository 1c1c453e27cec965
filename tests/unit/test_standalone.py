"""The repository stands alone: nothing refers to material outside it, and the test data it
ships is documented (tests/data/README.md)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
THIS = Path(__file__).resolve().relative_to(ROOT).as_posix()
# Paths of the reference material that sat beside the repository while it was written.
FORBIDDEN = ("../" + "shared", "/work/" + "shared", "shared/" + "reference", "shared/" + "samples")
# What the data README documents: backquoted paths relative to tests/data.
DOCUMENTED = re.compile(r"`((?:samples|fixtures)/[^`\s]+|apispec\.json)`")


def tracked_files() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    # Tracked files, plus new ones not yet committed (but not ignored ones such as .venv).
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, check=True)
    return [p for p in out.stdout.decode().split("\0") if p]


def test_no_reference_to_material_outside_the_repository():
    offenders = []
    for name in tracked_files():
        if name.startswith("tests/data/") or name == THIS:
            continue
        path = ROOT / name
        if not path.is_file():  # deleted in the work tree, not yet committed
            continue
        raw = path.read_bytes()
        if b"\0" in raw:  # binary
            continue
        text = raw.decode("utf-8", errors="replace")
        for lineno, line in enumerate(text.splitlines(), 1):
            offenders += [f"{name}:{lineno}: {bad}" for bad in FORBIDDEN if bad in line]
    assert offenders == []


def test_every_data_file_is_documented_and_every_documented_file_exists():
    documented = set(DOCUMENTED.findall((DATA / "README.md").read_text()))
    present = {p.relative_to(DATA).as_posix() for p in DATA.rglob("*")
               if p.is_file() and p.name != "README.md"}
    assert sorted(documented - present) == [], "documented but missing"
    assert sorted(present - documented) == [], "present but not documented in README.md"
