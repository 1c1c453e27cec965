"""The timer jobs: commands that run once (by hand or from a systemd timer in systemd/), do
their work against the database, the spool or the object store, and end.

    upload/        spool hours -> postcans and jsonl.gz in the object store, `jsonl` rows
    backup/        backup, export and restore of the tables through the object store
    citizenlab/    the test lists            (update-citizenlab)
    fingerprints/  blocking fingerprints     (update-fingerprints)
    asnmeta/       AS-to-organisation names  (update-asnmeta)
    geoip/         the GeoIP databases       (download-geoip)
    detector/      blocking events           (detect)
    rotation/      the test-helper hosts     (rotate)
    bootstrap.py   the four reference datasets of a fresh install, one after the other
    harness.py     what every job command shares: database, migrations, progress, exit codes
    metrics.py     a run's figures as a Prometheus text file

Jobs use the API's shared modules (config, storage, objectstore, validate, spool); the API
imports from here only what a job owns as its writer: the test-list file format
(citizenlab/lists.py, which the Test List Editor writes too) and the rotation's table
(rotation/state.py, whose live hosts GET /api/v1/test-helpers serves). The fastpath reads
the fingerprint lists' format (fingerprints/parse.py); the other commands (db, account-role,
anonc-rotate) and reprocessing open the database through harness.py.
"""
