"""Where the test lists come from: a local checkout, or a git URL cloned shallowly."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

GIT_PREFIXES = ("http://", "https://", "git://", "ssh://", "file://", "git@")
DEFAULT_CLONE_TIMEOUT = 300.0


class SourceError(Exception):
    """The source could not be read or cloned."""


def is_git_url(source: str) -> bool:
    return source.startswith(GIT_PREFIXES)


async def clone(url: str, dest: Path, timeout: float = DEFAULT_CLONE_TIMEOUT) -> None:
    """`git clone --depth 1`, bounded in time, never prompting for credentials."""
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="true")
    try:
        proc = await asyncio.create_subprocess_exec(
            "git", "clone", "--depth", "1", "--quiet", "--", url, str(dest),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, env=env)
    except FileNotFoundError as e:
        raise SourceError("git is not installed") from e
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError as e:
        proc.kill()
        await proc.wait()
        raise SourceError(f"git clone of {url} timed out after {timeout:g} s") from e
    if proc.returncode != 0:
        msg = err.decode("utf-8", "replace").strip().splitlines()
        raise SourceError(f"git clone of {url} failed: {msg[-1] if msg else proc.returncode}")


@contextlib.asynccontextmanager
async def checkout(source: str, timeout: float = DEFAULT_CLONE_TIMEOUT) -> AsyncIterator[Path]:
    """A directory holding the repository: `source` itself, or a temporary clone of it."""
    path = Path(source)
    if path.is_dir():
        yield path
        return
    if not is_git_url(source):
        raise SourceError(f"{source}: not a directory or a git URL")
    with tempfile.TemporaryDirectory(prefix="test-lists-") as tmp:
        dest = Path(tmp) / "repo"
        await clone(source, dest, timeout)
        yield dest
