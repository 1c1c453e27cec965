"""Parsers of the files found in the bucket, all streaming (a file is never read whole).

| suffix       | content                                        | uid                            |
|--------------|------------------------------------------------|--------------------------------|
| .jsonl.gz    | gzip, one measurement (`content`) per line     | `jsonl` table, else trivial id |
| .tar.gz      | postcan: tar of `<uid>.post` API bodies        | member name after its last `/` |
| .tar.lz4     | legacy can: lz4 frame of a tar of .json/.yaml  | trivial id                     |
| .json.lz4    | legacy can: lz4 frame of JSON lines            | trivial id                     |
| .yaml.lz4    | legacy can: lz4 frame of one YAML report       | trivial id                     |

Everything yields `Record`s; a bad line or member yields a Record with `error` set instead of
stopping the file, so the caller can count and report it and go on.
"""

from __future__ import annotations

import gzip
import logging
import posixpath
import tarfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import ujson

from oonibackend.objectstore import keys
from workers.sources.ids import trivial_id

log = logging.getLogger(__name__)

# ujson, not orjson: orjson turns integers above 64 bits into floats, and the reference
# parsed measurements with ujson.
_loads: Callable[[bytes | str], Any] = ujson.loads


@dataclass(slots=True)
class Record:
    """One measurement read from a file.

    Exactly one of `post` (a .post body as the API received it, `{"format":..,"content":..}`)
    or `msm` (the measurement itself) is set, unless `error` says why the item is unusable.
    `where` locates it for messages (`key:line` or `key:member`).
    """

    uid: str
    where: str
    msm: dict[str, Any] | None = None
    post: bytes | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def kind_of(name: str) -> str | None:
    """The format of a file from its name, or None for files that hold no measurements."""
    if name.endswith(keys.JSONL):
        return "jsonl"
    if name.endswith("/index.json.gz") or name == "index.json.gz":
        return None
    if name.endswith(keys.POSTCAN):
        return "postcan"
    if name.endswith(keys.LEGACY_CAN):
        return "tar_lz4"
    if name.endswith(".json.lz4"):
        return "json_lz4"
    if name.endswith(".yaml.lz4"):
        return "yaml_lz4"
    return None


def _lz4_open(f: IO[bytes]) -> IO[bytes]:
    try:
        import lz4.frame
    except ModuleNotFoundError as e:  # pragma: no cover - lz4 is a declared dependency
        raise RuntimeError("reading legacy .lz4 cans needs the `lz4` package") from e
    return lz4.frame.open(f, "rb")  # type: ignore[return-value]


def iter_json_lines(stream: IO[bytes], where: str,
                    uid_of: Callable[[int, bytes, dict[str, Any]], str] | None = None
                    ) -> Iterator[Record]:
    """One measurement per line; uid from `uid_of(linenum, raw, msm)` (0-based line numbers,
    like the `jsonl` table) or the trivial id of the raw line including its newline."""
    for linenum, raw in enumerate(stream):
        if not raw.strip():
            continue
        here = f"{where}:{linenum + 1}"
        try:
            msm = _loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            yield Record(uid="", where=here, error=f"unparsable JSON line: {e}")
            continue
        if not isinstance(msm, dict):
            yield Record(uid="", where=here, error="line is not a JSON object")
            continue
        uid = uid_of(linenum, raw, msm) if uid_of else trivial_id(raw, msm)
        yield Record(uid=uid, where=here, msm=msm)


def iter_jsonl_gz(f: IO[bytes], key: str, uids: Mapping[int, str] | None = None
                  ) -> Iterator[Record]:
    """An uploader jsonl.gz: uids from `uids` (linenum -> uid, from the jsonl table) with the
    trivial id as fallback."""
    known = uids or {}

    def uid_of(linenum: int, raw: bytes, msm: dict[str, Any]) -> str:
        return known.get(linenum) or trivial_id(raw, msm)

    with gzip.open(f, "rb") as stream:
        yield from iter_json_lines(stream, key, uid_of)


def iter_postcan(f: IO[bytes], key: str) -> Iterator[Record]:
    """A postcan: `.post` members, each the raw body received by the API. The uid is the
    member name after its last `/`, so both forms read the same: OONI's (and ours since
    docs/current_services.md §8) `var/lib/ooniapi/measurements/incoming/<hour>/<uid>.post`,
    and our older cans' bare `<uid>.post`."""
    with tarfile.open(fileobj=f, mode="r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            name = posixpath.basename(member.name)
            if not name.endswith(".post"):
                log.info("skipping %s in %s: not a .post file", member.name, key)
                continue
            fh = tar.extractfile(member)
            body = fh.read() if fh is not None else b""
            yield Record(uid=name[:-len(".post")], where=f"{key}:{member.name}", post=body)


def _yaml_records(stream: IO[bytes], where: str, bucket_date: str, report_filename: str
                  ) -> Iterator[Record]:
    from workers.sources.legacy_yaml import iter_yaml_msmt_normalized

    for msm in iter_yaml_msmt_normalized(stream, bucket_date, report_filename):
        yield Record(uid=msm["measurement_uid"], where=where, msm=msm)


def _bucket_date(key: str) -> str:
    """The day directory of a canned/ key (`canned/2019-10-30/x.tar.lz4` -> 2019-10-30)."""
    return keys.day_dir(key) or "2000-01-01"


def iter_tar_lz4(f: IO[bytes], key: str) -> Iterator[Record]:
    """A legacy can: .json members are JSON lines, .yaml members legacy YAML reports."""
    with _lz4_open(f) as plain, tarfile.open(fileobj=plain, mode="r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            fh = tar.extractfile(member)
            if fh is None:
                continue
            where = f"{key}:{member.name}"
            if member.name.endswith(".json"):
                yield from iter_json_lines(fh, where)
            elif member.name.endswith(".yaml"):
                day = keys.day_dir(member.name) or _bucket_date(key)
                yield from _yaml_records(fh, where, day,
                                         f"{day}/{posixpath.basename(member.name)}")


def iter_json_lz4(f: IO[bytes], key: str) -> Iterator[Record]:
    with _lz4_open(f) as plain:
        yield from iter_json_lines(plain, key)


def iter_yaml_lz4(f: IO[bytes], key: str) -> Iterator[Record]:
    day = _bucket_date(key)
    name = posixpath.basename(key)[:-len(".lz4")]
    with _lz4_open(f) as plain:
        yield from _yaml_records(plain, key, day, f"{day}/{name}")


def iter_object(key: str, f: IO[bytes], jsonl_uids: Mapping[int, str] | None = None
                ) -> Iterator[Record]:
    """Records of one object, dispatched on its name; ValueError for an unknown kind."""
    kind = kind_of(key)
    if kind == "jsonl":
        return iter_jsonl_gz(f, key, jsonl_uids)
    if kind == "postcan":
        return iter_postcan(f, key)
    if kind == "tar_lz4":
        return iter_tar_lz4(f, key)
    if kind == "json_lz4":
        return iter_json_lz4(f, key)
    if kind == "yaml_lz4":
        return iter_yaml_lz4(f, key)
    raise ValueError(f"unexpected can filename {key!r}")
