"""OONI's blocking fingerprints, imported into fingerprints_dns / fingerprints_http
(`update-fingerprints`); the fastpath matches measurements against them (docs/fastpath.md §3,
workers/fingerprints.py)."""
