"""The fastpath: durable intake, parallel scoring, batched ClickHouse upserts (issue 3)."""
