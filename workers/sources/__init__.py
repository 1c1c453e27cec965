"""Reading raw measurements back from the object store (S3 or a local copy of the bucket).

Used by `fastpath reprocess` and `fastpath score`. The pieces are small on purpose:

  selection.py   the days of a run, cc/testname filters, which objects are read (the key
                 layout itself is `oonibackend.objectstore.keys`, the store
                 `oonibackend.objectstore`: objects are fetched one at a time)
  formats.py     parsers for jsonl.gz, postcans (.tar.gz of .post), legacy lz4 cans
  legacy_yaml.py normalisation of 2012-2016 YAML reports found inside legacy cans
  ids.py         trivial ids, the uids of measurements that never had an API uid
  jsonl_uids.py  real uids of jsonl.gz lines, from the `jsonl` table
  state.py       the resume log of objects already reprocessed
"""

from workers.sources.formats import Record, iter_object, kind_of
from workers.sources.ids import trivial_id

__all__ = ["Record", "iter_object", "kind_of", "trivial_id"]
