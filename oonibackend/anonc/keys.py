"""The files behind anonymous credentials: the manifest and the secret key that matches it.

Embedded default: both are generated on first start under data_dir (`[anonc] manifest_file`,
`secret_key_file`, mode 0600). Production: point both at files that every API host shares
and set `[anonc] generate = false`, so a host never makes keys of its own. The secret-key
file holds `{"public_parameters", "secret_key"}`: a manifest is used only with the key that
matches it, even while a rotation is half written. The secret key is never logged.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ooniauth_py

from oonibackend.anonc import manifest as mf
from oonibackend.anonc.policy import PolicyError, default_rules, parse_rules
from oonibackend.fileutil import write_atomic

if TYPE_CHECKING:
    from oonibackend.config import Config


class KeyFileError(Exception):
    """Manifest or secret key missing, unreadable or not matching (message says which)."""


@dataclass(frozen=True)
class Credentials:
    """The current manifest and the library's server state holding its secret key."""
    manifest: mf.Manifest
    server: Any  # ooniauth_py.ServerState
    stamp: tuple[Any, ...]


def paths(cfg: Config) -> tuple[Path, Path]:
    return cfg.path(cfg.anonc.manifest_file), cfg.path(cfg.anonc.secret_key_file)


def stamp(cfg: Config) -> tuple[Any, ...]:
    """Identity of both files (inode, size, mtime): a change means reload."""
    out: list[Any] = []
    for p in paths(cfg):
        try:
            st = p.stat()
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except FileNotFoundError:
            out.append(None)
    return tuple(out)


def _write_private(path: Path, data: bytes) -> None:
    """Atomically replace `path` with `data`, mode 0600 in a 0700 directory, durable."""
    write_atomic(path, data, mode=0o600, dir_mode=0o700)


def load(cfg: Config) -> Credentials:
    """Read and check both files: a valid manifest and the secret key of its parameters."""
    m_path, k_path = paths(cfg)
    before = stamp(cfg)
    try:
        data = m_path.read_bytes()
        mtime = dt.datetime.fromtimestamp(m_path.stat().st_mtime, dt.UTC).replace(tzinfo=None)
        key = json.loads(k_path.read_bytes())
    except OSError as e:
        raise KeyFileError(f"cannot read {e.filename}: {e.strerror}") from None
    except ValueError:
        raise KeyFileError(f"{k_path} is not a JSON secret-key file") from None
    try:
        manifest = mf.parse(data, mtime)
    except mf.ManifestError as e:
        raise KeyFileError(f"{m_path}: {e}") from None
    if not isinstance(key, dict) or not isinstance(key.get("secret_key"), str):
        raise KeyFileError(f"{k_path} must hold {{public_parameters, secret_key}}")
    if key.get("public_parameters") != manifest.public_parameters:
        raise KeyFileError(f"the secret key in {k_path} does not belong to the manifest "
                           f"{m_path} (a rotation half done?)")
    try:
        server = ooniauth_py.ServerState.from_creds(manifest.public_parameters,
                                                    key["secret_key"])
    except Exception:  # the library's message could quote key material: never show it
        raise KeyFileError(f"the library refused the keys of {k_path}") from None
    return Credentials(manifest, server, before)


def publish(cfg: Config, *, new_keys: bool = True,
            policy: list[dict[str, Any]] | None = None) -> Credentials:
    """Write a new manifest version: fresh keys (a rotation) unless `new_keys` is false, and
    the configured policy (else the default). The key is written first; readers use a
    manifest only with its own key (see load), so a half-done rotation is never served."""
    m_path, k_path = paths(cfg)
    rules = policy or cfg.anonc.policy or default_rules(ooniauth_py.ServerState.today())
    try:
        parse_rules(rules)  # before any file is written
    except PolicyError as e:
        raise KeyFileError(f"[anonc] policy: {e}") from None
    if new_keys:
        server = ooniauth_py.ServerState()
        pp, sk = server.get_public_parameters(), server.get_secret_key()
        _write_private(k_path, json.dumps({"public_parameters": pp, "secret_key": sk}).encode())
    else:
        pp = load(cfg).manifest.public_parameters
    _write_private(m_path, mf.render(pp, rules))
    return load(cfg)


def ensure(cfg: Config) -> Credentials:
    """The current credentials; generated first when both files are missing and
    `[anonc] generate` allows it (the embedded default)."""
    m_path, k_path = paths(cfg)
    if cfg.anonc.generate and not m_path.exists() and not k_path.exists():
        return publish(cfg)
    return load(cfg)
