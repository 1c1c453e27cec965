"""The read side's test data: the real OONI rows of tests/data/fixtures, loaded through
the storage layer (`oonibackend db exec`), plus a "recent" copy for the routes whose windows are
relative to today.

* `fastpath_rows.sql`: 1,080 real fastpath rows: 77 in 2021-07, 1,000 in 2024-01 (999 of them
  on 2024-01-01) and 3 in 2025-07 (UTC).
* `citizenlab_rows.sql`: 640 citizenlab rows.
* The recent copy: the 999 fastpath rows of 2024-01-01 again, shifted by `SHIFT_DAYS` whole days
  so that they fall on `RECENT_DAY` (yesterday, UTC); `measurement_uid` and `report_id` get the
  shifted date as their 8-character prefix, so both copies are distinct measurements.
  (The filter is in a subquery: ClickHouse resolves WHERE names to the REPLACEd aliases.)
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

from tests.conftest import FIXTURES

FASTPATH_SQL = FIXTURES / "fastpath_rows.sql"
CITIZENLAB_SQL = FIXTURES / "citizenlab_rows.sql"
FIXTURE_DAY = dt.date(2024, 1, 1)
RECENT_DAY = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
SHIFT_DAYS = (RECENT_DAY - FIXTURE_DAY).days

RECENT_COPY_SQL = f"""
INSERT INTO fastpath SELECT * REPLACE (
    concat(formatDateTime(measurement_start_time + INTERVAL {SHIFT_DAYS} DAY, '%Y%m%d'),
           substring(measurement_uid, 9)) AS measurement_uid,
    concat(formatDateTime(test_start_time + INTERVAL {SHIFT_DAYS} DAY, '%Y%m%d'),
           substring(report_id, 9)) AS report_id,
    test_start_time + INTERVAL {SHIFT_DAYS} DAY AS test_start_time,
    measurement_start_time + INTERVAL {SHIFT_DAYS} DAY AS measurement_start_time
) FROM (SELECT * FROM fastpath WHERE toDate(measurement_start_time) = '2024-01-01');
"""


def db_exec(config: Path, data_dir: Path, sql_file: Path) -> None:
    """`oonibackend db exec FILE`: through the running owner, or chdb under its lock."""
    subprocess.run(
        [sys.executable, "-m", "oonibackend", "db", "exec", "--config", str(config),
         "--data-dir", str(data_dir), str(sql_file)],
        check=True, capture_output=True, timeout=300)


def batched(sql_file: Path) -> str:
    """The fixture's one-row INSERTs merged into one INSERT per column list (1,080 round trips
    to the database become one)."""
    groups: dict[str, list[str]] = {}
    for line in sql_file.read_text(encoding="utf-8").splitlines():
        if not line.startswith("INSERT INTO "):
            continue  # comments
        head, sep, values = line.partition(" VALUES ")
        assert sep and values.endswith(";"), line[:80]
        groups.setdefault(head, []).append(values[:-1])
    return "".join(f"{head} VALUES {', '.join(vals)};\n" for head, vals in groups.items())


def load_fixture_rows(config: Path, data_dir: Path, recent: bool = True) -> None:
    f = data_dir / "fixture_rows.sql"
    text = batched(CITIZENLAB_SQL) + batched(FASTPATH_SQL) + (RECENT_COPY_SQL if recent else "")
    f.write_text(text, encoding="utf-8")
    db_exec(config, data_dir, f)
