"""Per-network request-time quotas kept in LMDB, shared by every API process."""
