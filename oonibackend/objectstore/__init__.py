"""The object store: one interface to the bucket for every job that writes or reads it.

    store = open_store(cfg)                 # [s3] bucket when set, else [s3] local_dir
    await store.put("raw/.../x.tar.gz", path)
    data = await store.get_range(key, offset, length)
    for obj in await store.list("raw/20210709/"): ...

Users: the uploader (`put`), backup/export/restore (`put_stream`, `get_stream`, `list`,
`exists`, `delete`), the read API's archived bodies (`get_range`) and reprocessing (`list`,
`fetch`). Implementations: `local` (a directory laid out like the bucket, the embedded
default) and `s3` (one aiobotocore client for reads and writes). Where measurements sit in
the bucket is `keys`.

Every failure of the store itself is a `StoreError` whose message says what to fix.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from oonibackend.config import Config

READ_PIECE = 1024 * 1024  # bytes per read when streaming an object out


class StoreError(Exception):
    """The store refused or could not be reached, or an object is missing or incomplete."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One object of the store: its key and size in bytes."""

    key: str
    size: int


class ObjectStore(abc.ABC):
    """A bucket-like tree of objects; keys are `/`-separated paths."""

    name: str  # for messages: the directory, or s3://bucket (at its endpoint)

    @abc.abstractmethod
    async def check(self) -> None:
        """Raise StoreError unless the store exists and is usable."""

    @abc.abstractmethod
    async def put(self, key: str, path: Path) -> bool:
        """Store `path` as `key`, verified; False when an identical object was already there."""

    @abc.abstractmethod
    async def put_stream(self, key: str, chunks: AsyncIterable[bytes],
                         part_size: int | None = None) -> int:
        """Store the bytes of `chunks` as `key` without a temporary file; returns the size.
        The object appears whole or not at all: a failing source leaves nothing behind.
        `part_size`: bytes per part of an S3 multipart upload (the store's default if None)."""

    @abc.abstractmethod
    async def get_range(self, key: str, start: int, length: int) -> bytes:
        """`length` bytes of an object from `start` (one ranged GET on S3)."""

    @abc.abstractmethod
    def get_stream(self, key: str) -> AsyncIterator[bytes]:
        """The bytes of an object, piece by piece (StoreError if it is missing)."""

    @abc.abstractmethod
    async def fetch(self, obj: ObjectInfo) -> Path:
        """A local file with the object's bytes; hand it back to `release` when done."""

    async def release(self, path: Path) -> None:  # noqa: B027 - nothing to free locally
        """Forget a fetched file (temporary copies are deleted)."""

    @abc.abstractmethod
    async def exists(self, key: str) -> bool:
        """Whether an object `key` exists."""

    @abc.abstractmethod
    async def list(self, prefix: str) -> list[ObjectInfo]:
        """The objects whose key starts with `prefix`, sorted by key."""

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Remove an object (no error if it is missing)."""

    async def close(self) -> None:  # noqa: B027
        pass

    async def __aenter__(self) -> ObjectStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def md5_file(path: Path) -> str:
    """The MD5 of a file's content, which `put` compares to skip an identical object."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def open_store(cfg: Config, source: str | None = None, *,
               tmp_dir: str | Path | None = None) -> ObjectStore:
    """The store named by `source`: `s3://BUCKET`, a directory, or (None) the configured one:
    `[s3] bucket` when set, else the local directory `[s3] local_dir`. `tmp_dir`: where S3
    objects are `fetch`ed to (default: the system's temporary directory)."""
    from oonibackend.objectstore.local import LocalStore
    from oonibackend.objectstore.s3 import S3Store

    if source is None:
        if cfg.s3.bucket:
            return S3Store(cfg, cfg.s3.bucket, tmp_dir)
        return LocalStore(cfg.path(cfg.s3.local_dir))
    if source.startswith("s3://"):
        bucket = source[len("s3://"):].strip("/")
        if not bucket or "/" in bucket:
            raise StoreError(f"{source}: expected s3://BUCKET")
        return S3Store(cfg, bucket, tmp_dir)
    if not Path(source).is_dir():
        raise StoreError(f"{source}: not a directory or an s3://BUCKET")
    return LocalStore(source)
