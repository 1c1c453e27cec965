"""Where fingerprint files come from: a local directory, an http(s) URL of a directory
holding the two CSV files, or a git URL (ending in `.git`, or git://, ssh://, file://,
git@...) cloned with --depth 1."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from oonibackend.jobs.fingerprints.parse import KINDS, FingerprintError

MAX_DOWNLOAD = 64 * 1024 * 1024
DEFAULT_TIMEOUT = 300.0


def is_git_url(source: str) -> bool:
    if source.startswith(("git://", "ssh://", "file://", "git@")):
        return True
    return source.startswith(("http://", "https://")) and source.rstrip("/").endswith(".git")


async def download_dir(url: str, dest: Path, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Fetch the two CSV files of an http(s) directory URL into `dest`."""
    import aiohttp

    base = url if url.endswith("/") else url + "/"
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(timeout=client_timeout) as session:
        for kind in KINDS:
            name = f"fingerprints_{kind}.csv"
            try:
                async with session.get(base + name) as resp:
                    if resp.status != 200:
                        raise FingerprintError(f"{base}{name}: HTTP {resp.status} (for a git "
                                               f"repository use its .git URL)")
                    data = await resp.content.read(MAX_DOWNLOAD + 1)
            except (aiohttp.ClientError, TimeoutError) as e:
                raise FingerprintError(f"{base}{name}: {e or type(e).__name__}") from e
            if len(data) > MAX_DOWNLOAD:
                raise FingerprintError(f"{base}{name}: larger than {MAX_DOWNLOAD} bytes")
            (dest / name).write_bytes(data)


@contextlib.asynccontextmanager
async def open_source(source: str, timeout: float = DEFAULT_TIMEOUT) -> AsyncIterator[Path]:
    """A local directory with the files: `source` itself, a download or a shallow clone."""
    from oonibackend.jobs.citizenlab.source import SourceError, clone

    path = Path(source)
    if path.is_dir():
        yield path
        return
    if not (is_git_url(source) or source.startswith(("http://", "https://"))):
        raise FingerprintError(f"{source}: not a directory, an http(s) URL or a git URL")
    with tempfile.TemporaryDirectory(prefix="fingerprints-") as tmp:
        dest = Path(tmp) / "src"
        if is_git_url(source):
            try:
                await clone(source, dest, timeout)
            except SourceError as e:
                raise FingerprintError(str(e)) from e
        else:
            dest.mkdir()
            await download_dir(source, dest, timeout)
        yield dest
