"""Generate N million realistic fastpath rows in the configured database (embedded by default).

The rows are the real OONI rows of tests/data/fixtures/fastpath_rows.sql used as
templates (so countries, networks, test names, inputs, scores and anomaly rates follow real
proportions), spread uniformly over the last `--days` days, each with its own
measurement_uid, report_id and start times. Generation runs inside ClickHouse
(`INSERT ... SELECT` over `numbers()`, one statement per batch), so 10 million rows take
about a minute rather than the hour a Python loop would.

    .venv/bin/python bench/gen_fastpath.py --data-dir bench/var --rows 10000000

With the backend running on that data directory the statements go to its database owner;
otherwise chdb is opened directly (under the owner lock). Deterministic for a given --seed
and --end. Also loads the fixture citizenlab rows (category_code joins need them).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from oonibackend import config  # noqa: E402
from oonibackend.jobs.harness import open_database  # noqa: E402
from tests.readdata import CITIZENLAB_SQL, FASTPATH_SQL, batched  # noqa: E402

# The fixture's column list, in order.
COLUMNS = (
    "measurement_uid report_id input probe_cc probe_asn test_name test_start_time "
    "measurement_start_time filename scores platform anomaly confirmed msm_failure domain "
    "software_name software_version control_failure blocking_general is_ssl_expected page_len "
    "page_len_ratio server_cc server_asn server_as_name test_version architecture engine_name "
    "engine_version test_runtime blocking_type test_helper_address test_helper_type "
    "ooni_run_link_id"
).split()
# Per generated row: a new time, ids derived from it; the rest comes from the template.
GENERATED = {
    "measurement_start_time": "n.mst",
    "test_start_time": "n.mst - toIntervalSecond(n.h % 600)",
    "measurement_uid": (
        "concat(formatDateTime(n.mst, '%Y%m%d%H%i%S'), '.', "
        "leftPad(toString(n.h % 1000000), 6, '0'), '_', t.probe_cc, '_', "
        "replaceAll(t.test_name, '_', ''), '_', lower(hex(cityHash64(n.number, %SEED%, 4))))"),
    "report_id": (
        "concat(formatDateTime(n.mst - toIntervalSecond(n.h % 600), '%Y%m%dT%H%i%SZ'), '_', "
        "replaceAll(t.test_name, '_', ''), '_', t.probe_cc, '_', toString(t.probe_asn), "
        "'_n1_', substring(lower(hex(cityHash64(intDiv(n.number, 8), %SEED%, 3))), 1, 16))"),
}


def batch_sql(start: int, count: int, end: int, seconds: int, seed: int, templates: int) -> str:
    select = ", ".join(GENERATED.get(c, f"t.{c}").replace("%SEED%", str(seed)) for c in COLUMNS)
    return f"""
INSERT INTO fastpath ({", ".join(COLUMNS)})
SELECT {select}
FROM (
    SELECT number, cityHash64(number, {seed}, 1) AS h,
           toDateTime({end} - (cityHash64(number, {seed}, 2) % {seconds}), 'UTC') AS mst,
           cityHash64(number, {seed}, 5) % {templates} AS idx
    FROM numbers({start}, {count})
) AS n
INNER JOIN gen_templates AS t ON t.idx = n.idx
"""


async def generate(cfg: config.Config, rows: int, days: int, end: dt.datetime, seed: int,
                   batch: int) -> None:
    async with open_database(cfg) as db:
        from oonibackend.storage.migrate import migrate

        await migrate(db)
        await db.execute("DROP TABLE IF EXISTS gen_templates_raw")
        await db.execute("DROP TABLE IF EXISTS gen_templates")
        await db.execute("CREATE TABLE gen_templates_raw AS fastpath")
        await db.execute(re.sub(r"INSERT INTO fastpath\b", "INSERT INTO gen_templates_raw",
                                batched(FASTPATH_SQL)))
        await db.execute(
            "CREATE TABLE gen_templates ENGINE = Memory AS "
            "SELECT toUInt64(rowNumberInAllBlocks()) AS idx, * "
            "FROM (SELECT * FROM gen_templates_raw ORDER BY measurement_uid)")
        templates = (await db.query_one("SELECT count() AS n FROM gen_templates"))["n"]
        if not (await db.query_one("SELECT count() AS n FROM citizenlab"))["n"]:
            await db.execute(batched(CITIZENLAB_SQL))
        end_ts = int(end.replace(tzinfo=dt.UTC).timestamp())
        t0 = time.monotonic()
        done = 0
        while done < rows:
            n = min(batch, rows - done)
            await db.execute(batch_sql(done, n, end_ts, days * 86400, seed, templates),
                             settings={"max_execution_time": 0})
            done += n
            rate = done / max(time.monotonic() - t0, 1e-9)
            print(f"  {done:,}/{rows:,} rows ({rate:,.0f} rows/s)", flush=True)
        await db.execute("DROP TABLE IF EXISTS gen_templates")
        await db.execute("DROP TABLE IF EXISTS gen_templates_raw")
        total = (await db.query_one("SELECT count() AS n FROM fastpath"))["n"]
        print(f"generated {rows:,} rows in {time.monotonic() - t0:.1f} s from {templates} "
              f"templates; fastpath now holds {total:,} rows")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000, help="rows to add (default 10M)")
    ap.add_argument("--days", type=int, default=60, help="spread over the last N days (60)")
    ap.add_argument("--end", help="end of the window, YYYY-MM-DD (default: now)")
    ap.add_argument("--seed", type=int, default=1, help="variation seed (default 1)")
    ap.add_argument("--batch", type=int, default=1_000_000, help="rows per statement")
    ap.add_argument("--config", help="oonibackend TOML config (default: built-in defaults)")
    ap.add_argument("--data-dir", default="var", help="data directory (default ./var)")
    args = ap.parse_args(argv)
    if args.rows < 1 or args.days < 1 or args.batch < 1:
        ap.error("--rows, --days and --batch must be positive")
    end = dt.datetime.strptime(args.end, "%Y-%m-%d") if args.end else \
        dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    cfg = config.load(args.config, data_dir=args.data_dir)
    asyncio.run(generate(cfg, args.rows, args.days, end, args.seed, args.batch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
