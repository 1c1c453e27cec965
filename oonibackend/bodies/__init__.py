"""Raw measurement bodies for the read API, wherever they are right now.

A measurement lives first in the spool of the API host that received it (`spool`), possibly
another host's (`peers`), and after the hourly upload in a jsonl.gz object indexed by the
`jsonl` table (`archive`). `lookup` tries them in the order docs/api.md §2.7 gives and keeps
recently served bodies in a byte-bounded cache (`cache`): bodies never change.

Every source returns the same bytes for a measurement: the JSON object the uploader writes as
its jsonl line (the submitted content plus `measurement_uid`, no trailing newline).
"""
