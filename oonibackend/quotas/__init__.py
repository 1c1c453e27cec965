"""Per-network request-time quotas kept in LMDB, shared by every API process.

store.py      QuotaStore: budgets in LMDB, in-memory pending charges, batched writes, replenish
keys.py       whose budget a request spends (network or account token) and key labels
policy.py     what is never metered (paths, whitelisted addresses)
context.py    quotas_ctx: open the store, flush periodically from a thread, flush on exit
middleware.py quota_middleware, the X-RateLimit-Remaining hook, and setup(app)
"""
