"""The measurement uploader: spool hour directories -> postcans and jsonl.gz in the object store.

    oonibackend upload [--dry-run] [--hour YYYYMMDDHH]

For every closed hour directory `incoming/<YYYYMMDDHH>_<CC>_<testname>/` of the spool:

    raw/<YYYYMMDD>/<HH>/<CC>/<testname>/<YYYYMMDDHH>_<CC>_<testname>.<host_id>.<n>.tar.gz
    raw/<YYYYMMDD>/<HH>/<CC>/<testname>/<YYYYMMDDHH>_<CC>_<testname>.<host_id>.<n>.jsonl.gz

(the postcan holds each `.post` as received, named like OONI's uploader names it:
`var/lib/ooniapi/measurements/incoming/<hour dir>/<uid>.post`; the jsonl.gz one measurement
`content` per line with its `measurement_uid`, every line its own gzip member), then one
`jsonl` row per line (with the member's byte offset and length), and only then the `.post`
files are deleted.

Modules: `files` (planning and building the files, pure blocking I/O), `uploader` (the
resumable state machine), `cli`. Keys and storage are `oonibackend.objectstore` (`keys`; a
local directory or S3 with aiobotocore).
"""
