"""Writing objects: a local directory laid out like the bucket, or S3 through aiobotocore.

The S3 client (credentials, endpoint, retries) is the one of `workers.sources.store.S3Store`,
which reads the same bucket. Uploads: one PUT up to `MULTIPART_THRESHOLD`, multipart above;
each object carries the MD5 of its content in its metadata, so a re-run after a crash skips an
object that is already complete, and every upload is verified with a HEAD (size) before the
uploader goes on.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import logging
import os
import shutil
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oonibackend.fileutil import fsync_dir
from workers.sources.store import S3Store

if TYPE_CHECKING:
    from oonibackend.config import Config

log = logging.getLogger("oonibackend.upload")

MULTIPART_THRESHOLD = 16 * 1024 * 1024
PART_SIZE = 8 * 1024 * 1024
MIN_PART_SIZE = 5 * 1024 * 1024  # S3's smallest part but the last
READ_PIECE = 1024 * 1024
ATTEMPTS = 4
_PERMANENT = {"NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
              "AllAccessDisabled", "InvalidBucketName", "403", "404", "AuthorizationHeaderMalformed"}


class UploadError(Exception):
    """The object store refused or could not be reached; the message says why."""


def md5_file(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class Writer(abc.ABC):
    name: str

    @abc.abstractmethod
    async def check(self) -> None:
        """Raise UploadError unless the destination exists and is usable."""

    @abc.abstractmethod
    async def put(self, key: str, path: Path) -> bool:
        """Store `path` as `key`, verified; False when an identical object was already there."""

    @abc.abstractmethod
    async def get_range(self, key: str, start: int, length: int) -> bytes:
        """`length` bytes of an object from `start` (one ranged GET on S3)."""

    @abc.abstractmethod
    async def put_stream(self, key: str, chunks: AsyncIterable[bytes],
                         part_size: int = PART_SIZE) -> int:
        """Store the bytes of `chunks` as `key` without a temporary file; returns the size.
        The object appears whole or not at all: a failing source leaves nothing behind."""

    @abc.abstractmethod
    def get_stream(self, key: str) -> AsyncIterator[bytes]:
        """The bytes of an object, piece by piece (UploadError if it is missing)."""

    @abc.abstractmethod
    async def exists(self, key: str) -> bool:
        """Whether an object `key` exists."""

    @abc.abstractmethod
    async def list(self, prefix: str) -> list[str]:
        """Keys of the objects under `prefix`, sorted."""

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Remove an object (no error if it is missing)."""

    async def close(self) -> None:  # noqa: B027
        pass


class LocalWriter(Writer):
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.name = str(self.root)

    async def check(self) -> None:
        try:
            await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        except OSError as e:
            raise UploadError(f"local object store {self.root}: {e}") from e

    def _target(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"invalid object key {key!r}")
        return self.root.joinpath(*parts)

    def _put(self, key: str, path: Path) -> bool:
        target = self._target(key)
        size = path.stat().st_size
        if target.is_file() and target.stat().st_size == size and md5_file(target) == \
                md5_file(path):
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        with open(path, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, target)
        fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if target.stat().st_size != size:
            raise UploadError(f"{target}: size mismatch after copy")
        return True

    async def put(self, key: str, path: Path) -> bool:
        try:
            return await asyncio.to_thread(self._put, key, path)
        except OSError as e:
            raise UploadError(f"cannot write {key} to {self.root}: {e}") from e

    def _range(self, key: str, start: int, length: int) -> bytes:
        with open(self._target(key), "rb") as f:
            f.seek(start)
            return f.read(length)

    async def get_range(self, key: str, start: int, length: int) -> bytes:
        return await asyncio.to_thread(self._range, key, start, length)

    async def put_stream(self, key: str, chunks: AsyncIterable[bytes],
                         part_size: int = PART_SIZE) -> int:
        target = self._target(key)
        # A fixed name: a re-run after a crash truncates what the killed run left.
        tmp = target.with_name(f".{target.name}.stream.tmp")
        try:
            await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
            f = await asyncio.to_thread(open, tmp, "wb")
            size = 0
            try:
                async for data in chunks:
                    if data:
                        await asyncio.to_thread(f.write, data)
                        size += len(data)
                await asyncio.to_thread(_sync_close, f)
            except BaseException:
                f.close()
                tmp.unlink(missing_ok=True)
                raise
            await asyncio.to_thread(_replace, tmp, target)
        except OSError as e:
            raise UploadError(f"cannot write {key} to {self.root}: {e}") from e
        return size

    async def get_stream(self, key: str) -> AsyncIterator[bytes]:
        path = self._target(key)
        try:
            f = await asyncio.to_thread(open, path, "rb")
        except FileNotFoundError as e:
            raise UploadError(f"no object {key} in {self.root}") from e
        except OSError as e:
            raise UploadError(f"cannot read {key} from {self.root}: {e}") from e
        try:
            while data := await asyncio.to_thread(f.read, READ_PIECE):
                yield data
        finally:
            f.close()

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._target(key).is_file)

    def _list(self, prefix: str) -> list[str]:
        out = []
        # Walk only below the prefix's directory, not the whole store.
        base = self.root.joinpath(*[p for p in prefix.split("/")[:-1] if p not in ("", ".", "..")])
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if name.startswith("."):
                    continue  # a write in progress
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    out.append(key)
        return sorted(out)

    async def list(self, prefix: str) -> list[str]:
        return await asyncio.to_thread(self._list, prefix)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._target(key).unlink, missing_ok=True)


def _sync_close(f: Any) -> None:
    f.flush()
    os.fsync(f.fileno())
    f.close()


def _replace(tmp: Path, target: Path) -> None:
    os.replace(tmp, target)
    fsync_dir(target.parent)


def _code(e: BaseException) -> str:
    return str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))


class S3Writer(Writer):
    def __init__(self, cfg: Config, bucket: str) -> None:
        self.cfg = cfg
        self.bucket = bucket
        self.name = f"s3://{bucket}" + (f" at {cfg.s3.endpoint_url}" if cfg.s3.endpoint_url
                                        else "")
        self._store = S3Store(cfg, bucket)

    def _credentials_hint(self) -> str:
        s3 = self.cfg.s3
        has = (s3.access_key_id and s3.secret_access_key) or (
            os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"))
        return "" if has else " (no credentials configured: set [s3] access_key_id/" \
                              "secret_access_key or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"

    def _explain(self, e: BaseException, what: str) -> UploadError:
        code = _code(e)
        if code in ("NoSuchBucket", "404"):
            msg = f"bucket {self.name} does not exist"
        elif code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                      "AllAccessDisabled"):
            msg = (f"access to {self.name} denied ({code}): bad credentials or missing "
                   f"permissions{self._credentials_hint()}")
        elif code:
            msg = f"{what} on {self.name} failed: {code}: {e}"
        else:
            msg = f"{what} on {self.name} failed (endpoint unreachable?): {e}"
        return UploadError(msg)

    async def _client(self) -> Any:
        return await self._store._s3()

    async def check(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            client = await self._client()
            await client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError, OSError) as e:
            raise self._explain(e, "HEAD bucket") from e

    async def _head(self, key: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        client = await self._client()
        try:
            return await client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as e:
            if _code(e) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    async def put(self, key: str, path: Path) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        size = (await asyncio.to_thread(path.stat)).st_size
        md5 = await asyncio.to_thread(md5_file, path)
        delay = 0.5
        for attempt in range(1, ATTEMPTS + 1):
            try:
                head = await self._head(key)
                if head is not None and int(head.get("ContentLength", -1)) == size and \
                        head.get("Metadata", {}).get("md5") == md5:
                    return False
                if size > MULTIPART_THRESHOLD:
                    await self._multipart(key, path, md5)
                else:
                    data = await asyncio.to_thread(path.read_bytes)
                    client = await self._client()
                    await client.put_object(Bucket=self.bucket, Key=key, Body=data,
                                            Metadata={"md5": md5})
                head = await self._head(key)
                if head is None or int(head.get("ContentLength", -1)) != size:
                    raise UploadError(f"{key}: verification failed after upload")
                return True
            except (BotoCoreError, ClientError, OSError, TimeoutError, UploadError) as e:
                if attempt == ATTEMPTS or _code(e) in _PERMANENT:
                    if isinstance(e, UploadError):
                        raise
                    raise self._explain(e, f"upload of {key}") from e
                log.warning("upload of %s failed (%s), retrying in %.1f s", key, e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        raise AssertionError("unreachable")

    async def _multipart(self, key: str, path: Path, md5: str) -> None:
        client = await self._client()
        mpu = await client.create_multipart_upload(Bucket=self.bucket, Key=key,
                                                   Metadata={"md5": md5})
        upload_id = mpu["UploadId"]
        try:
            parts = []
            with open(path, "rb") as f:
                number = 1
                while chunk := await asyncio.to_thread(f.read, PART_SIZE):
                    r = await client.upload_part(Bucket=self.bucket, Key=key, PartNumber=number,
                                                 UploadId=upload_id, Body=chunk)
                    parts.append({"PartNumber": number, "ETag": r["ETag"]})
                    number += 1
            await client.complete_multipart_upload(Bucket=self.bucket, Key=key,
                                                   UploadId=upload_id,
                                                   MultipartUpload={"Parts": parts})
        except BaseException:
            try:
                await client.abort_multipart_upload(Bucket=self.bucket, Key=key,
                                                    UploadId=upload_id)
            except Exception:  # the bucket's lifecycle rule cleans up what is left
                pass
            raise

    async def get_range(self, key: str, start: int, length: int) -> bytes:
        client = await self._client()
        r = await client.get_object(Bucket=self.bucket, Key=key,
                                    Range=f"bytes={start}-{start + length - 1}")
        async with r["Body"] as body:
            return await body.read()

    async def put_stream(self, key: str, chunks: AsyncIterable[bytes],
                         part_size: int = PART_SIZE) -> int:
        """One PUT when everything fits in one part, else a multipart upload whose parts are
        all `part_size` (at least S3's 5 MiB) but the last; aborted on any failure."""
        from botocore.exceptions import BotoCoreError, ClientError

        part_size = max(part_size, MIN_PART_SIZE)
        buf = bytearray()
        parts: list[dict[str, Any]] = []
        upload_id: str | None = None
        size = 0
        try:
            client = await self._client()
            async for data in chunks:
                buf += data
                size += len(data)
                while len(buf) >= part_size:
                    if upload_id is None:
                        mpu = await client.create_multipart_upload(Bucket=self.bucket, Key=key)
                        upload_id = mpu["UploadId"]
                    body = bytes(buf[:part_size])
                    del buf[:part_size]
                    r = await client.upload_part(Bucket=self.bucket, Key=key, Body=body,
                                                 PartNumber=len(parts) + 1, UploadId=upload_id)
                    parts.append({"PartNumber": len(parts) + 1, "ETag": r["ETag"]})
            if upload_id is None:
                await client.put_object(Bucket=self.bucket, Key=key, Body=bytes(buf))
            else:
                if buf:
                    r = await client.upload_part(Bucket=self.bucket, Key=key, Body=bytes(buf),
                                                 PartNumber=len(parts) + 1, UploadId=upload_id)
                    parts.append({"PartNumber": len(parts) + 1, "ETag": r["ETag"]})
                await client.complete_multipart_upload(Bucket=self.bucket, Key=key,
                                                       UploadId=upload_id,
                                                       MultipartUpload={"Parts": parts})
                upload_id = None
            head = await self._head(key)
        except BaseException as e:
            if upload_id is not None:
                try:
                    await client.abort_multipart_upload(Bucket=self.bucket, Key=key,
                                                        UploadId=upload_id)
                except Exception:  # the bucket's lifecycle rule cleans up what is left
                    log.warning("cannot abort the multipart upload of %s", key)
            if isinstance(e, BotoCoreError | ClientError):
                raise self._explain(e, f"upload of {key}") from e
            raise
        if head is None or int(head.get("ContentLength", -1)) != size:
            raise UploadError(f"{key}: verification failed after upload")
        return size

    async def get_stream(self, key: str) -> AsyncIterator[bytes]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            client = await self._client()
            r = await client.get_object(Bucket=self.bucket, Key=key)
            async with r["Body"] as body:
                while data := await body.read(READ_PIECE):
                    yield data
        except ClientError as e:
            if _code(e) in ("NoSuchKey", "404"):
                raise UploadError(f"no object {key} in {self.name}") from e
            raise self._explain(e, f"download of {key}") from e
        except (BotoCoreError, OSError, TimeoutError) as e:
            raise self._explain(e, f"download of {key}") from e

    async def exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return await self._head(key) is not None
        except (BotoCoreError, ClientError) as e:
            raise self._explain(e, f"HEAD {key}") from e

    async def list(self, prefix: str) -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        keys: list[str] = []
        try:
            client = await self._client()
            paginator = client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                keys.extend(item["Key"] for item in page.get("Contents", []))
        except (BotoCoreError, ClientError) as e:
            raise self._explain(e, f"listing {prefix}") from e
        return sorted(keys)

    async def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            client = await self._client()
            await client.delete_object(Bucket=self.bucket, Key=key)
        except (BotoCoreError, ClientError) as e:
            raise self._explain(e, f"delete of {key}") from e

    async def close(self) -> None:
        await self._store.close()


def open_writer(cfg: Config) -> Writer:
    """The configured destination: the `[s3] bucket`, else the local `[s3] local_dir`."""
    if cfg.s3.bucket:
        return S3Writer(cfg, cfg.s3.bucket)
    return LocalWriter(cfg.path(cfg.s3.local_dir))
