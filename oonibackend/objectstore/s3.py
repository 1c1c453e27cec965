"""An S3 bucket through one aiobotocore client (AWS, or any endpoint such as moto or minio).

Uploads: one PUT up to `MULTIPART_THRESHOLD`, multipart above; each object carries the MD5
of its content in its metadata, so a re-run after a crash skips an object that is already
complete, and every upload is verified with a HEAD (size) before the caller goes on.
Reprocessing fetches objects one at a time into a temporary file, streamed in pieces (never
held in memory) and checked against the listed size: a run over months of data needs neither
the bucket's size in RAM nor on disk.

Credentials: those of `[s3]` in the config, else AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY
from the environment, else unsigned (anonymous) requests. botocore's own credential chain
is never consulted: on a machine outside AWS it would probe the instance metadata address.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from oonibackend.objectstore import READ_PIECE, ObjectInfo, ObjectStore, StoreError, md5_file

if TYPE_CHECKING:
    from oonibackend.config import Config

log = logging.getLogger(__name__)

T = TypeVar("T")

MULTIPART_THRESHOLD = 16 * 1024 * 1024
PART_SIZE = 8 * 1024 * 1024
MIN_PART_SIZE = 5 * 1024 * 1024  # S3's smallest part but the last
PUT_ATTEMPTS = 4
FETCH_ATTEMPTS = 5
# Refusals and missing buckets or objects: retrying cannot help.
_PERMANENT = frozenset({"NoSuchBucket", "NoSuchKey", "AccessDenied", "InvalidAccessKeyId",
                        "SignatureDoesNotMatch", "AllAccessDisabled", "InvalidBucketName", "403",
                        "404", "AuthorizationHeaderMalformed"})


def _code(e: BaseException) -> str:
    return str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))


class S3Store(ObjectStore):
    def __init__(self, cfg: Config, bucket: str, tmp_dir: str | Path | None = None) -> None:
        self.cfg = cfg
        self.bucket = bucket
        self.name = f"s3://{bucket}" + (f" at {cfg.s3.endpoint_url}" if cfg.s3.endpoint_url
                                        else "")
        self.tmp_dir = Path(tmp_dir) if tmp_dir else None
        self._s3: Any = None
        self._ctx: Any = None

    async def _client(self) -> Any:
        if self._s3 is None:
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
            self._s3 = await self._ctx.__aenter__()
        return self._s3

    async def close(self) -> None:
        if self._ctx is not None:
            ctx, self._ctx, self._s3 = self._ctx, None, None
            await ctx.__aexit__(None, None, None)

    # -- errors and retries ------------------------------------------------------------------

    def _credentials_hint(self) -> str:
        s3 = self.cfg.s3
        has = (s3.access_key_id and s3.secret_access_key) or (
            os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"))
        return "" if has else " (no credentials configured: set [s3] access_key_id/" \
                              "secret_access_key or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"

    def _explain(self, e: BaseException, what: str) -> StoreError:
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
        return StoreError(msg)

    @staticmethod
    async def _retrying(what: str, op: Callable[[], Awaitable[T]], attempts: int,
                        max_delay: float) -> T:
        """`op()`, tried again with exponential back-off after a transient failure; the
        last failure, or a permanent one, propagates."""
        from botocore.exceptions import BotoCoreError, ClientError

        delay = 0.5
        for attempt in range(1, attempts + 1):
            try:
                return await op()
            except (BotoCoreError, ClientError, OSError, TimeoutError, StoreError) as e:
                if attempt == attempts or _code(e) in _PERMANENT:
                    raise
                log.warning("%s failed (%s), retrying in %.1f s", what, e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, max_delay)
        raise AssertionError("unreachable")

    # -- operations --------------------------------------------------------------------------

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
        try:
            return await self._retrying(f"upload of {key}",
                                        lambda: self._put_once(key, path, size, md5),
                                        PUT_ATTEMPTS, 10.0)
        except (BotoCoreError, ClientError, OSError, TimeoutError) as e:
            raise self._explain(e, f"upload of {key}") from e

    async def _put_once(self, key: str, path: Path, size: int, md5: str) -> bool:
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
            raise StoreError(f"{key}: verification failed after upload")
        return True

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

    async def put_stream(self, key: str, chunks: AsyncIterable[bytes],
                         part_size: int | None = None) -> int:
        """One PUT when everything fits in one part, else a multipart upload whose parts are
        all `part_size` (at least S3's 5 MiB) but the last; aborted on any failure."""
        from botocore.exceptions import BotoCoreError, ClientError

        part_size = max(part_size or PART_SIZE, MIN_PART_SIZE)
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
            raise StoreError(f"{key}: verification failed after upload")
        return size

    async def get_range(self, key: str, start: int, length: int) -> bytes:
        client = await self._client()
        r = await client.get_object(Bucket=self.bucket, Key=key,
                                    Range=f"bytes={start}-{start + length - 1}")
        async with r["Body"] as body:
            return await body.read()

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
                raise StoreError(f"no object {key} in {self.name}") from e
            raise self._explain(e, f"download of {key}") from e
        except (BotoCoreError, OSError, TimeoutError) as e:
            raise self._explain(e, f"download of {key}") from e

    async def fetch(self, obj: ObjectInfo) -> Path:
        """A temporary copy in `tmp_dir`, which `release` deletes."""
        from botocore.exceptions import BotoCoreError, ClientError

        if self.tmp_dir is not None:
            await asyncio.to_thread(self.tmp_dir.mkdir, parents=True, exist_ok=True)
        try:
            return await self._retrying(f"fetching {obj.key}", lambda: self._fetch_once(obj),
                                        FETCH_ATTEMPTS, 30.0)
        except (BotoCoreError, ClientError, OSError, TimeoutError, StoreError) as e:
            raise StoreError(f"cannot fetch {obj.key} from {self.name}: {e}") from e

    async def _fetch_once(self, obj: ObjectInfo) -> Path:
        client = await self._client()
        fd, name = tempfile.mkstemp(prefix="s3-", suffix=".part",
                                    dir=str(self.tmp_dir) if self.tmp_dir else None)
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                resp = await client.get_object(Bucket=self.bucket, Key=obj.key)
                async with resp["Body"] as body:
                    while chunk := await body.read(READ_PIECE):
                        await asyncio.to_thread(out.write, chunk)
            size = path.stat().st_size
            if size != obj.size:
                raise StoreError(f"{obj.key}: got {size} bytes, listed {obj.size}")
            return path
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    async def release(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    async def exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return await self._head(key) is not None
        except (BotoCoreError, ClientError) as e:
            raise self._explain(e, f"HEAD {key}") from e

    async def list(self, prefix: str) -> list[ObjectInfo]:
        from botocore.exceptions import BotoCoreError, ClientError

        out: list[ObjectInfo] = []
        try:
            client = await self._client()
            paginator = client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                out.extend(ObjectInfo(item["Key"], int(item.get("Size", 0)))
                           for item in page.get("Contents", []))
        except (BotoCoreError, ClientError) as e:
            raise self._explain(e, f"listing {prefix}") from e
        out.sort(key=lambda o: o.key)
        return out

    async def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            client = await self._client()
            await client.delete_object(Bucket=self.bucket, Key=key)
        except (BotoCoreError, ClientError) as e:
            raise self._explain(e, f"delete of {key}") from e
