"""Trivial ids: deterministic uids for measurements that never got one from the API.

Legacy cans and jsonl.gz lines without a `jsonl` table entry carry no measurement_uid. The
fastpath table needs one, and reprocessing the same data twice must give the same uid (so
ClickHouse deduplicates instead of doubling rows): hence a hash of the raw bytes. The
leading "01" can never be the start of an API uid (`YYYYmmdd...` from 2012 on), which also
keeps the receipt-date sanity check away from them (docs/fastpath.md §1.10, §2.4).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from typing import Any


def _day(msm: Mapping[str, Any]) -> str:
    value = msm.get("measurement_start_time") if isinstance(msm, Mapping) else None
    if not isinstance(value, str):
        return "00000000"
    try:
        return dt.datetime.strptime(value, "%Y-%m-%d %H:%M:%S").strftime("%Y%m%d")
    except ValueError:
        return "00000000"


def trivial_id(raw: bytes, msm: Mapping[str, Any]) -> str:
    """`01` + YYYYMMDD of measurement_start_time (00000000 if unusable) + 30 hex of SHAKE-128.

    `raw` is exactly what was hashed by the reference: a JSON line including its trailing
    newline, or the YAML entry blob from `---` to `...`.
    """
    return "01" + _day(msm) + hashlib.shake_128(raw).hexdigest(15)
