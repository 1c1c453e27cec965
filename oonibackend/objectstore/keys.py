"""Where measurements sit in the bucket: keys built by the uploader, parsed by reprocessing.

Two key families (docs/fastpath.md §1.10):
  canned/<YYYY-MM-DD>/<file>                          legacy cans (until 2020-10-21)
  raw/<YYYYMMDD>/<HH>/<CC>/<testname>/<file>          postcans and jsonl.gz (from 2020-10-20)

The uploader turns each spool hour directory `<YYYYMMDDHH>_<CC>_<testname>` into
`raw/.../<stem>.tar.gz` (the postcan: the .post bodies with their API uids) and
`raw/.../<stem>.jsonl.gz` (the same measurements' content, one per line), where
`<stem> = <YYYYMMDDHH>_<CC>_<testname>.<host_id>.<n>`. Reading both would score every
measurement twice, so a jsonl.gz whose postcan twin exists is not read (`postcan_twin`).
"""

from __future__ import annotations

import datetime as dt
import posixpath

from oonibackend import ids

RAW = "raw"
CANNED = "canned"
POSTCAN = ".tar.gz"
JSONL = ".jsonl.gz"
LEGACY_CAN = ".tar.lz4"


# -- built by the uploader ---------------------------------------------------------------------

def hour_of(hour_dir: str) -> dt.datetime:
    """Start of the hour of `YYYYmmddHH_CC_testname` (UTC); ValueError for a bad name."""
    if not ids.is_valid_hour_dir(hour_dir):
        raise ValueError(f"invalid hour directory {hour_dir!r}")
    return dt.datetime.strptime(hour_dir[:10], "%Y%m%d%H").replace(tzinfo=dt.UTC)


def raw_prefix(hour_dir: str) -> str:
    """`raw/<YYYYMMDD>/<HH>/<CC>/<testname>/` of an hour directory."""
    hour_of(hour_dir)  # validates
    ts, cc, testname = hour_dir.split("_")
    return f"{RAW}/{ts[:8]}/{ts[8:10]}/{cc}/{testname}/"


def stem(hour_dir: str, host_id: str, n: int) -> str:
    """`<YYYYMMDDHH>_<CC>_<testname>.<host_id>.<n>` (validated)."""
    hour_of(hour_dir)
    if not host_id.isascii() or not host_id.isalnum() or not 1 <= len(host_id) <= 40:
        raise ValueError(f"invalid host id {host_id!r}")
    return f"{hour_dir}.{host_id}.{int(n)}"


# -- parsed by reprocessing --------------------------------------------------------------------

def day_prefixes(day: dt.date) -> list[str]:
    """Prefixes listed for one day, in processing order (canned/ sorts before raw/)."""
    return [f"{CANNED}/{day:%Y-%m-%d}/", f"{RAW}/{day:%Y%m%d}/"]


def is_legacy(key: str) -> bool:
    """A legacy can (`canned/`), whose key says neither the country nor always the test."""
    return key.startswith(CANNED + "/")


def raw_cc_testname(key: str) -> tuple[str, str] | None:
    """(CC, testname) of a `raw/` key as written (testname without underscores), else None."""
    parts = key.split("/")
    if parts[0] == RAW and len(parts) == 6:
        return parts[3], parts[4]
    return None


def canned_test_name(key: str) -> str | None:
    """The test name of a `canned/` key named `<test_name>.<n>.tar.lz4`, else None."""
    if not is_legacy(key):
        return None
    name = posixpath.basename(key)
    if name.endswith(LEGACY_CAN) and name.count(".") == 3:
        return name.split(".")[0]
    return None


def day_dir(path: str) -> str | None:
    """The `YYYY-MM-DD` directory holding `path` (`canned/2019-10-30/x.tar.lz4`, or a legacy
    can's member `2014-05-13/report.yaml`), None when its parent is no day."""
    parent = posixpath.basename(posixpath.dirname(path))
    return parent if len(parent) == 10 and parent.startswith("20") else None


def postcan_twin(key: str) -> str | None:
    """The postcan written with a jsonl.gz key (same stem), None for any other key."""
    return key[:-len(JSONL)] + POSTCAN if key.endswith(JSONL) else None
