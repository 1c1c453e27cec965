"""A directory laid out like the bucket (the embedded default: `<data_dir>/objects`).

Writes go to a hidden temporary file in the target's directory, are fsynced and renamed into
place, and the directory is fsynced: an object is whole or absent after a crash. Listings
skip those hidden files, so a write in progress is never seen.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import IO

from oonibackend.fileutil import fsync_dir
from oonibackend.objectstore import READ_PIECE, ObjectInfo, ObjectStore, StoreError, md5_file


class LocalStore(ObjectStore):
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.name = str(self.root)

    async def check(self) -> None:
        try:
            await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"local object store {self.root}: {e}") from e

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
        _replace(tmp, target)
        if target.stat().st_size != size:
            raise StoreError(f"{target}: size mismatch after copy")
        return True

    async def put(self, key: str, path: Path) -> bool:
        try:
            return await asyncio.to_thread(self._put, key, path)
        except OSError as e:
            raise StoreError(f"cannot write {key} to {self.root}: {e}") from e

    async def put_stream(self, key: str, chunks: AsyncIterable[bytes],
                         part_size: int | None = None) -> int:
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
            raise StoreError(f"cannot write {key} to {self.root}: {e}") from e
        return size

    def _range(self, key: str, start: int, length: int) -> bytes:
        with open(self._target(key), "rb") as f:
            f.seek(start)
            return f.read(length)

    async def get_range(self, key: str, start: int, length: int) -> bytes:
        return await asyncio.to_thread(self._range, key, start, length)

    async def get_stream(self, key: str) -> AsyncIterator[bytes]:
        path = self._target(key)
        try:
            f = await asyncio.to_thread(open, path, "rb")
        except FileNotFoundError as e:
            raise StoreError(f"no object {key} in {self.root}") from e
        except OSError as e:
            raise StoreError(f"cannot read {key} from {self.root}: {e}") from e
        try:
            while data := await asyncio.to_thread(f.read, READ_PIECE):
                yield data
        finally:
            f.close()

    async def fetch(self, obj: ObjectInfo) -> Path:
        """The object's own file: nothing is copied."""
        path = self._target(obj.key)
        if not await asyncio.to_thread(path.is_file):
            raise StoreError(f"{path}: no such object")
        return path

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._target(key).is_file)

    def _list(self, prefix: str) -> list[ObjectInfo]:
        out = []
        # Walk only below the prefix's directory, not the whole store.
        base = self.root.joinpath(*[p for p in prefix.split("/")[:-1] if p not in ("", ".", "..")])
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if name.startswith("."):
                    continue  # a write in progress
                path = Path(dirpath, name)
                key = path.relative_to(self.root).as_posix()
                if not key.startswith(prefix):
                    continue
                try:
                    out.append(ObjectInfo(key, path.stat().st_size))
                except FileNotFoundError:  # deleted meanwhile
                    continue
        out.sort(key=lambda o: o.key)
        return out

    async def list(self, prefix: str) -> list[ObjectInfo]:
        return await asyncio.to_thread(self._list, prefix)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._target(key).unlink, missing_ok=True)


def _sync_close(f: IO[bytes]) -> None:
    f.flush()
    os.fsync(f.fileno())
    f.close()


def _replace(tmp: Path, target: Path) -> None:
    os.replace(tmp, target)
    fsync_dir(target.parent)
