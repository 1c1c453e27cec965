"""Planning and building the upload files of one spool hour directory (blocking I/O).

Everything here is deterministic: the same `.post` files give byte-identical postcans and
jsonl.gz files (sorted members, fixed tar and gzip timestamps, fixed owners), so a can rebuilt
after a crash is the very same object. Postcan members are named as OONI's uploader names them
(`member_name`), because OONI's data tools take the uid from that name.

jsonl.gz files are *multi-member* gzip files: every line is compressed as its own gzip member.
`zcat` and Python's `gzip` read them as one stream; a reader that knows a line's byte offset
and length (recorded in the `jsonl` table) gunzips that one member alone after a ranged GET.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import tarfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from oonibackend import ids
from oonibackend.fileutil import write_atomic
from oonibackend.spool.post import measurement_of, published_line

log = logging.getLogger(__name__)

POST = ".post"
# Directory of every postcan member: the spool path of OONI's API hosts as Python's tarfile
# stores it (leading `/` dropped). OONI's data tool (oonidata) takes the uid from the member
# name after its last `/`, so a member without a directory is unreadable to it
# (docs/current_services.md §8).
MEMBER_PREFIX = "var/lib/ooniapi/measurements/incoming/"
# Postcans close once their .post files exceed this many bytes (the legacy uploader's ~20 MB).
CAN_MAX_BYTES = 20 * 1024 * 1024
GZIP_LEVEL = 6


@dataclass(frozen=True)
class Line:
    """One jsonl.gz line and its `jsonl` row (without s3path/date/source)."""

    linenum: int
    measurement_uid: str
    report_id: str
    input: str
    byte_offset: int
    byte_length: int


@dataclass
class BuildResult:
    lines: list[Line]
    posts: int          # .post files put in the postcan
    skipped: int        # .post files without a JSON measurement (postcan only, no jsonl line)
    missing: int        # planned .post files that no longer exist


def list_posts(directory: Path) -> list[tuple[str, int]]:
    """(uid, size) of the complete `.post` files of a directory, sorted by uid. In-progress
    `.post.tmp` files, `.delivered` and anything not named like a uid are ignored."""
    out = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    for e in entries:
        if not e.name.endswith(POST):
            continue
        uid = e.name[: -len(POST)]
        if not ids.is_valid_uid(uid):
            log.warning("ignoring unexpected spool file", extra={"path": e.path})
            continue
        try:
            out.append((uid, e.stat().st_size))
        except FileNotFoundError:
            continue
    out.sort()
    return out


def plan_cans(posts: Iterable[tuple[str, int]], max_bytes: int = CAN_MAX_BYTES
              ) -> list[list[str]]:
    """Split sorted (uid, size) into cans of at most `max_bytes` (at least one file each)."""
    cans: list[list[str]] = []
    cur: list[str] = []
    size = 0
    for uid, n in posts:
        if cur and size + n > max_bytes:
            cans.append(cur)
            cur, size = [], 0
        cur.append(uid)
        size += n
    if cur:
        cans.append(cur)
    return cans


def input_of(value: Any) -> str:
    """The `input` column: a string as is; a list (e.g. meek_fronted_requests_test) as
    `{a,b}` like the fastpath's `input` column; anything else (None, numbers) empty."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "{" + ",".join(str(v) for v in value) + "}"
    return ""


def member_name(hour_dir: str, uid: str) -> str:
    """`var/lib/ooniapi/measurements/incoming/<YYYYmmddHH_CC_testname>/<uid>.post`, the name
    OONI's uploader gives a `.post` file in a postcan; ValueError unless both parts are valid
    (they become a path inside the tar)."""
    if not ids.is_valid_hour_dir(hour_dir):
        raise ValueError(f"invalid hour directory {hour_dir!r}")
    if not ids.is_valid_uid(uid):
        raise ValueError(f"invalid uid {uid!r}")
    return f"{MEMBER_PREFIX}{hour_dir}/{uid}{POST}"


def gzip_member(data: bytes) -> bytes:
    """One self-contained gzip member (fixed mtime, no name: deterministic)."""
    return gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)


def _fsync_rename(tmp: Path, final: Path) -> None:
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)



def build_can(hour_dir: Path, uids: list[str], tar_path: Path, jsonl_path: Path,
              rows_path: Path, mtime: int) -> BuildResult:
    """Write the postcan, the jsonl.gz and the rows sidecar of one can, each atomically
    (temporary file, fsync, rename); returns what was written."""
    tar_tmp = tar_path.with_name(tar_path.name + ".tmp")
    jsonl_tmp = jsonl_path.with_name(jsonl_path.name + ".tmp")
    lines: list[Line] = []
    posts = skipped = missing = 0
    offset = 0
    with open(tar_tmp, "wb") as raw_tar, open(jsonl_tmp, "wb") as out_jsonl, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw_tar, mtime=0,
                          compresslevel=GZIP_LEVEL) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for uid in uids:
            name = member_name(hour_dir.name, uid)  # validates both
            try:
                body = (hour_dir / (uid + POST)).read_bytes()
            except FileNotFoundError:
                log.warning("planned spool file vanished", extra={"uid": uid})
                missing += 1
                continue
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(body), mtime, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(body))
            posts += 1
            msm = measurement_of(body)
            if msm is None:
                log.warning("spool file is not a JSON measurement; postcan only",
                            extra={"uid": uid})
                skipped += 1
                continue
            member = gzip_member(published_line(msm, uid) + b"\n")
            out_jsonl.write(member)
            rid = msm.get("report_id")
            lines.append(Line(len(lines), uid, rid if isinstance(rid, str) else "",
                              input_of(msm.get("input")), offset, len(member)))
            offset += len(member)
    _fsync_rename(tar_tmp, tar_path)
    _fsync_rename(jsonl_tmp, jsonl_path)
    write_atomic(rows_path, orjson.dumps([asdict(x) for x in lines]))
    return BuildResult(lines, posts, skipped, missing)


def load_rows(rows_path: Path) -> list[Line]:
    return [Line(**x) for x in orjson.loads(rows_path.read_bytes())]
