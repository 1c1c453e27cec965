"""The fastpath: durable intake, parallel scoring, batched ClickHouse upserts.

Layout (issue 3):
  workers/scoring/       pure scoring per test family: msm dict -> scores dict
  workers/fingerprints.py  indexed DNS/HTTP blocking-fingerprint matching (no linear scan)
  workers/process.py     pure pipeline: raw bytes + uid -> table rows (fastpath, obs_openvpn)
  workers/intake/        feeder (HTTP), durable on-disk queue, worker pool, batching sink
  workers/batch_insert.py  batch inserts retried with back-off, halved on invalid data
  workers/cli.py         `oonibackend fastpath` (daemon), `fastpath score`, `fastpath reprocess`
  workers/reprocess.py   reprocessing from S3 or a local directory
"""
