"""The fastpath's intake: from the API's POST to rows committed in ClickHouse.

    feeder.py      HTTP endpoint (POST /<uid>, GET /, GET /metrics)
    queue.py       durable bounded queue (segments + group-commit fdatasync, commit marks)
    segment.py     the queue's segments (oonibackend/spool/records.py) and commit marks
    pool.py        spawned scoring processes, driven from the event loop
    worker.py      the worker process's loop
    sink.py        batched inserts (workers/batch_insert.py); commits queue entries once
                   their rows are in
    refresh.py     periodic reload of the fingerprint tables
    quarantine.py  bodies that could not be scored, with the reason

`workers/service.py` wires them into the daemon.
"""
