"""Durable measurement spool: write-ahead log with group commit, then per-measurement files."""
