"""The object store holding raw measurements: a local directory or an S3 bucket.

Both give the same two operations: list the objects under a prefix (sorted by key) and
fetch one object as a local file. S3 objects are streamed in chunks to a temporary file
(never held in memory), with retries, and deleted once read: a reprocessing run over
months of data must not need the bucket's size in RAM or on disk.

Credentials: those of `[s3]` in the config, else AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY
from the environment, else unsigned (anonymous) requests. botocore's own credential chain
is never consulted: on a machine outside AWS it would probe the instance metadata address.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workers.sources.layout import ObjectInfo

if TYPE_CHECKING:
    from oonibackend.config import Config

log = logging.getLogger("workers.sources.store")

CHUNK = 1024 * 1024
FETCH_ATTEMPTS = 5


class StoreError(Exception):
    """The store cannot be listed or an object cannot be fetched."""


class ObjectStore(abc.ABC):
    """A bucket-like tree of objects."""

    name: str

    @abc.abstractmethod
    def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """Objects whose key starts with `prefix`, in key order."""

    @abc.abstractmethod
    async def fetch(self, obj: ObjectInfo) -> Path:
        """A local file with the object's bytes; hand it back to `release` when done."""

    async def release(self, path: Path) -> None:  # noqa: B027 - nothing to free locally
        """Forget a fetched file (temporary copies are deleted)."""

    async def close(self) -> None:  # noqa: B027
        pass

    async def __aenter__(self) -> ObjectStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class LocalStore(ObjectStore):
    """A directory laid out like the bucket (the embedded default: data_dir/objects)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.name = str(self.root)

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        for info in await asyncio.to_thread(self._list, prefix):
            yield info

    def _list(self, prefix: str) -> list[ObjectInfo]:
        # Prefixes used here end at a directory boundary ("raw/20210709/").
        base = self.root / prefix.rstrip("/") if prefix.endswith("/") else self.root
        if not base.is_dir():
            return []
        out = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for f in filenames:
                p = Path(dirpath) / f
                key = p.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    out.append(ObjectInfo(key, p.stat().st_size))
        out.sort(key=lambda o: o.key)
        return out

    async def fetch(self, obj: ObjectInfo) -> Path:
        path = self.root / obj.key
        if not path.is_file():
            raise StoreError(f"{path}: no such object")
        return path


class S3Store(ObjectStore):
    """An S3 bucket through aiobotocore (AWS, or any endpoint such as moto or minio)."""

    def __init__(self, cfg: Config, bucket: str, tmp_dir: str | Path | None = None) -> None:
        self.cfg = cfg
        self.bucket = bucket
        self.name = f"s3://{bucket}"
        self.tmp_dir = Path(tmp_dir) if tmp_dir else None
        self._client: Any = None
        self._ctx: Any = None

    async def _s3(self) -> Any:
        if self._client is None:
            from aiobotocore.config import AioConfig
            from aiobotocore.session import get_session
            from botocore import UNSIGNED

            s3 = self.cfg.s3
            key = s3.access_key_id or os.environ.get("AWS_ACCESS_KEY_ID", "")
            secret = s3.secret_access_key or os.environ.get("AWS_SECRET_ACCESS_KEY", "")
            kw: dict[str, Any] = {"region_name": s3.region or None}
            if s3.endpoint_url:
                kw["endpoint_url"] = s3.endpoint_url
            if key and secret:
                kw["aws_access_key_id"], kw["aws_secret_access_key"] = key, secret
                conf = AioConfig(retries={"max_attempts": 5, "mode": "standard"})
            else:
                conf = AioConfig(signature_version=UNSIGNED,
                                 retries={"max_attempts": 5, "mode": "standard"})
            self._ctx = get_session().create_client("s3", config=conf, **kw)
            self._client = await self._ctx.__aenter__()
        return self._client

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        from botocore.exceptions import BotoCoreError, ClientError

        client = await self._s3()
        try:
            paginator = client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield ObjectInfo(item["Key"], int(item.get("Size", 0)))
        except (BotoCoreError, ClientError) as e:
            raise StoreError(f"cannot list {self.name}/{prefix}: {e}") from e

    async def fetch(self, obj: ObjectInfo) -> Path:
        from botocore.exceptions import BotoCoreError, ClientError

        client = await self._s3()
        if self.tmp_dir is not None:
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
        delay = 0.5
        for attempt in range(1, FETCH_ATTEMPTS + 1):
            fd, name = tempfile.mkstemp(prefix="s3-", suffix=".part",
                                        dir=str(self.tmp_dir) if self.tmp_dir else None)
            path = Path(name)
            try:
                with os.fdopen(fd, "wb") as out:
                    resp = await client.get_object(Bucket=self.bucket, Key=obj.key)
                    async with resp["Body"] as body:
                        while chunk := await body.read(CHUNK):
                            await asyncio.to_thread(out.write, chunk)
                size = path.stat().st_size
                if size != obj.size:
                    raise StoreError(f"{obj.key}: got {size} bytes, listed {obj.size}")
                return path
            except (TimeoutError, BotoCoreError, ClientError, OSError, StoreError) as e:
                path.unlink(missing_ok=True)
                if attempt == FETCH_ATTEMPTS or _permanent(e):
                    raise StoreError(f"cannot fetch {self.name}/{obj.key}: {e}") from e
                log.warning("fetching %s failed (%s), retrying in %.1f s", obj.key, e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable")

    async def release(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    async def close(self) -> None:
        if self._ctx is not None:
            ctx, self._ctx, self._client = self._ctx, None, None
            await ctx.__aexit__(None, None, None)


def _permanent(e: Exception) -> bool:
    """A missing object or a refusal: retrying cannot help."""
    code = getattr(e, "response", {}).get("Error", {}).get("Code", "")
    return str(code) in ("NoSuchKey", "NoSuchBucket", "AccessDenied", "403", "404")


def open_store(cfg: Config, source: str | None, tmp_dir: str | Path | None = None
               ) -> ObjectStore:
    """The store named by `source`: `s3://bucket`, a directory, or (None) the configured one:
    cfg.s3.bucket when set, else the local object directory cfg.s3.local_dir."""
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
