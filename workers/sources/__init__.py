"""Reading raw measurements back from the object store (S3 or a local copy of the bucket).

Used by `fastpath reprocess` and `fastpath score`. The pieces are small on purpose:

  layout.py      key layout (`raw/<YYYYMMDD>/<HH>/<CC>/<testname>/<file>`, `canned/<day>/`),
                 per-day prefixes, cc/testname filters, which file kinds are read
  store.py       the object store: a local directory laid out like the bucket, or S3 through
                 aiobotocore (objects are fetched one at a time into a temporary file)
  formats.py     parsers for jsonl.gz, postcans (.tar.gz of .post), legacy lz4 cans
  legacy_yaml.py normalisation of 2012-2016 YAML reports found inside legacy cans
  ids.py         trivial ids, the uids of measurements that never had an API uid
  jsonl_uids.py  real uids of jsonl.gz lines, from the `jsonl` table
  state.py       the resume log of objects already reprocessed
"""

from workers.sources.formats import Record, iter_object, kind_of
from workers.sources.ids import trivial_id

__all__ = ["Record", "iter_object", "kind_of", "trivial_id"]
