"""`oonibackend fastpath score [--fingerprints DIR] [--uid UID] FILE...`: what would be written.

A debugging tool: it runs the same pipeline as the fastpath (`workers.process`) on files and
prints, instead of inserting, one JSON line per table row:

    {"table": "fastpath", "file": "x.json", "row": {...}}

(datetimes as ISO strings). Accepted files: a measurement JSON, a .post body
(`{"format": "json", "content": ...}`), JSON lines (.jsonl, .jsonl.gz), a legacy YAML report
(.yaml), and every object kind of the bucket (postcan .tar.gz, legacy .tar.lz4, .json.lz4,
.yaml.lz4); `-` reads one measurement or .post body from stdin.

Without --uid each measurement gets its trivial id (postcan members keep their name) and
the receipt-date check is off, since there is no receipt time; with --uid every measurement
gets that uid and the check applies. Errors are reported per file on stderr, as are
measurements the pipeline discards without rows (no report_id, cc ZZ, AS0); the exit status
is 1 if any measurement or file failed.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from workers.sources.formats import Record, iter_json_lines, iter_object, kind_of
from workers.sources.ids import trivial_id

if TYPE_CHECKING:
    from oonibackend.config import Config
    from workers.fingerprints import Fingerprints


def load_fingerprints(directory: str | Path | None) -> Fingerprints:
    """Fingerprints from a directory (blocking-fingerprints CSVs or the JSON fixtures), or
    none at all."""
    from oonibackend.jobs.fingerprints.parse import KINDS, read_dir
    from workers.fingerprints import Fingerprints

    if directory is None:
        return Fingerprints.empty()
    d = Path(directory)
    if all((d / f"fingerprints_{k}.json").is_file() for k in KINDS) and \
            not any((d / f"fingerprints_{k}.csv").exists() for k in KINDS):
        # The fixtures' own key order is what the reference puts into scores.
        return Fingerprints.from_json_files(d / "fingerprints_dns.json",
                                            d / "fingerprints_http.json")
    fps = read_dir(d)
    return Fingerprints.from_rows(fps.match_rows("dns"), fps.match_rows("http"))


def _single(raw: bytes, where: str) -> Iterator[Record]:
    """A file holding one JSON document (measurement or .post body), else JSON lines."""
    try:
        doc = json.loads(raw)
    except ValueError:
        yield from iter_json_lines(io.BytesIO(raw), where)
        return
    if not isinstance(doc, dict):
        yield Record(uid="", where=where, error="not a JSON object")
    elif "format" in doc and "content" in doc:
        content = doc["content"] if isinstance(doc["content"], dict) else {}
        yield Record(uid=trivial_id(raw, content), where=where, post=raw)
    else:
        yield Record(uid=trivial_id(raw, doc), where=where, msm=doc)


def iter_file(name: str) -> Iterator[Record]:
    """Records of one command-line file, whatever its format."""
    if name == "-":
        yield from _single(sys.stdin.buffer.read(), "<stdin>")
        return
    path = Path(name)
    if kind_of(path.name) is not None:
        with open(path, "rb") as f:
            yield from iter_object(path.name, f)
    elif path.name.endswith(".jsonl"):
        with open(path, "rb") as f:
            yield from iter_json_lines(f, name)
    elif path.name.endswith((".yaml", ".yml")):
        from workers.sources.legacy_yaml import iter_yaml_msmt_normalized

        with open(path, "rb") as f:
            for msm in iter_yaml_msmt_normalized(f):
                yield Record(uid=msm["measurement_uid"], where=name, msm=msm)
    elif path.name.endswith(".gz"):
        with gzip.open(path, "rb") as f:
            yield from iter_json_lines(f, name)
    else:
        yield from _single(path.read_bytes(), name)


def _dumps(obj: Any) -> str:
    from oonibackend import jsonutil

    try:
        return jsonutil.dumps(obj).decode()
    except TypeError:  # e.g. an integer beyond 64 bits from a measurement
        return json.dumps(obj, default=str, ensure_ascii=False)


def score_files(files: list[str], fingerprints: Fingerprints, uid: str | None = None,
                out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Print the rows of every file; returns the number of failed measurements / files."""
    from workers.process import MeasurementError, process_record

    out = out or sys.stdout
    err = err or sys.stderr
    failures = 0
    for name in files:
        try:
            for rec in iter_file(name):
                try:
                    rows = process_record(rec, fingerprints, uid=uid,
                                          check_dates=uid is not None)
                except (MeasurementError, ValueError) as e:
                    failures += 1
                    print(f"{rec.where}: {e}", file=err)
                    continue
                except Exception as e:  # a scorer bug: report it and go on with the next
                    failures += 1
                    print(f"{rec.where}: internal error: {type(e).__name__}: {e}", file=err)
                    continue
                if not rows:
                    print(f"{rec.where}: discarded, no rows (no report_id, probe_cc ZZ or "
                          f"probe_asn AS0)", file=err)
                for table, table_rows in rows.items():
                    for row in table_rows:
                        out.write(_dumps({"table": table, "file": name, "row": row}) + "\n")
        except Exception as e:  # unreadable or corrupt file
            failures += 1
            print(f"{name}: {type(e).__name__}: {e}", file=err)
    out.flush()
    return failures


async def run_score(args: argparse.Namespace, cfg: Config) -> int:
    """Entry point of `fastpath score` (args: files, fingerprints, uid)."""
    from oonibackend.jobs.fingerprints.parse import FingerprintError

    try:
        fps = load_fingerprints(getattr(args, "fingerprints", None))
    except (FingerprintError, OSError, ValueError) as e:
        print(f"oonibackend fastpath score: fingerprints: {e}", file=sys.stderr)
        return 2
    failures = score_files(list(args.files), fps, getattr(args, "uid", None))
    return 1 if failures else 0
