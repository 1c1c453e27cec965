"""Which objects a reprocessing run reads: its days, its cc/testname filters, the files.

The keys are parsed by `oonibackend.objectstore.keys` (docs/fastpath.md §1.10). The uploader
writes every hour both a postcan and a jsonl.gz of the same measurements: a jsonl.gz is read
only when its postcan twin is missing, since the postcan always carries the real uids.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from oonibackend.objectstore import ObjectInfo, keys


def parse_day(value: str | dt.date) -> dt.date:
    """`YYYY-MM-DD` (or `YYYYMMDD`, or a date already) to a date; ValueError otherwise."""
    if isinstance(value, dt.date):
        return value
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return dt.datetime.strptime(value, fmt).date()
        except ValueError:
            pass
    raise ValueError(f"invalid day {value!r} (expected YYYY-MM-DD)")


def days(start: dt.date, end: dt.date) -> list[dt.date]:
    """start .. end-1: the end day is exclusive, like the reference."""
    return [start + dt.timedelta(days=i) for i in range((end - start).days)]


def split_list(value: str | Iterable[str] | None) -> frozenset[str] | None:
    """A comma list (or list) of filter values; None when absent or empty."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    out = frozenset(i.strip() for i in items if i.strip())
    return out or None


def norm_testname(name: str) -> str:
    """`web_connectivity` and `webconnectivity` both become `webconnectivity` (key layout)."""
    return name.replace("_", "").lower()


@dataclass(frozen=True)
class Filters:
    """cc / testname restrictions; None means everything."""

    ccs: frozenset[str] | None = None
    testnames: frozenset[str] | None = None

    @classmethod
    def make(cls, cc: str | Iterable[str] | None, testname: str | Iterable[str] | None
             ) -> Filters:
        ccs = split_list(cc)
        tns = split_list(testname)
        return cls(frozenset(c.upper() for c in ccs) if ccs else None,
                   frozenset(norm_testname(t) for t in tns) if tns else None)

    def key_matches(self, key: str) -> bool:
        """Decided from the key: raw/ keys carry cc and testname, canned/ keys maybe the test
        name (`<test_name>.<n>.tar.lz4`); anything undecidable passes (see msm_matches)."""
        raw = keys.raw_cc_testname(key)
        if raw is not None:
            cc, testname = raw
            if self.ccs is not None and cc.upper() not in self.ccs:
                return False
            return self.testnames is None or norm_testname(testname) in self.testnames
        if self.testnames is not None and (name := keys.canned_test_name(key)) is not None:
            return norm_testname(name) in self.testnames
        return True

    def msm_matches(self, msm: dict) -> bool:
        """For legacy cans, whose keys do not say the country (nor always the test)."""
        if self.ccs is not None and str(msm.get("probe_cc") or "").upper() not in self.ccs:
            return False
        if self.testnames is not None:
            return norm_testname(str(msm.get("test_name") or "")) in self.testnames
        return True

    @property
    def active(self) -> bool:
        return self.ccs is not None or self.testnames is not None


def readable(key: str) -> bool:
    """Whether reprocessing reads this object (see formats.kind_of)."""
    from workers.sources.formats import kind_of

    return kind_of(key) is not None


def select(objects: Iterable[ObjectInfo], filters: Filters) -> Iterator[ObjectInfo]:
    """The objects of one listing to read, in key order: readable, non-empty, matching the
    filters, and without jsonl.gz files whose postcan twin is also there."""
    chosen = sorted((o for o in objects
                     if o.size > 0 and readable(o.key) and filters.key_matches(o.key)),
                    key=lambda o: o.key)
    present = {o.key for o in chosen}
    for o in chosen:
        if keys.postcan_twin(o.key) not in present:
            yield o
