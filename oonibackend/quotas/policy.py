"""What is metered at all: paths and addresses exempt from quotas, parsed once from the config."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from oonibackend.clientip import AddressSet
from oonibackend.config import Config


@dataclass(frozen=True)
class QuotaPolicy:
    exact_paths: frozenset[str]
    path_prefixes: tuple[str, ...]
    whitelist: AddressSet
    # Key for recognising account tokens (resolved once: cfg.jwt_secret() may read a file).
    jwt_secret: str

    @classmethod
    def from_config(cls, cfg: Config) -> QuotaPolicy:
        exact = frozenset(p for p in cfg.quotas.unmetered if not p.endswith("*"))
        prefixes = tuple(p[:-1] for p in cfg.quotas.unmetered if p.endswith("*"))
        return cls(exact, prefixes, AddressSet(cfg.quotas.whitelist), cfg.jwt_secret())

    def unmetered_path(self, path: str) -> bool:
        return path in self.exact_paths or path.startswith(self.path_prefixes)


# Set next to app[QUOTAS] by `quotas_ctx`; absent when quotas are disabled.
QUOTA_POLICY = web.AppKey("quota_policy", QuotaPolicy)
