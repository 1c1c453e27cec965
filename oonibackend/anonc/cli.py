"""`oonibackend anonc-rotate`: new anonymous-credential keys and a new manifest version.

Writes the secret-key file, then the manifest (both 0600, atomically). A running API serves
the new version within `[anonc] reload_interval` seconds, without a restart; from then on the
old version is refused (probes fetch the manifest again and ask for a new credential, as
OONI's credential update after a rotation is not implemented upstream either).
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from oonibackend.jobs.harness import Job

if TYPE_CHECKING:
    from oonibackend.config import Config

JOB = Job("oonibackend anonc-rotate")


def add_parser(subparsers: argparse._SubParsersAction,
               parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "anonc-rotate", parents=parents,
        help="rotate the anonymous-credential keys (new manifest version)",
        description="Generate new anonymous-credential keys and publish a new manifest "
        "version with the configured submission policy ([anonc] policy) into "
        "[anonc] manifest_file / secret_key_file. The running API picks it up within "
        "[anonc] reload_interval seconds; credentials of the old version stop working. "
        "Prints the new version.")
    p.add_argument("--policy-only", action="store_true",
                   help="keep the keys, only write the policy (a new version if it changed)")
    p.add_argument("--policy", metavar="FILE",
                   help="JSON file with the submission_policy list to publish instead of "
                   "[anonc] policy")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, cfg: Config) -> int:
    from oonibackend.anonc import keys

    policy: list[dict[str, Any]] | None = None
    if args.policy:
        try:
            with open(args.policy, "rb") as f:
                policy = json.load(f)
        except (OSError, ValueError) as e:
            return JOB.usage(f"cannot read {args.policy}: {e}")
    try:
        before = keys.load(cfg).manifest.version
    except keys.KeyFileError:
        before = None
    try:
        creds = keys.publish(cfg, new_keys=not args.policy_only, policy=policy)
    except keys.KeyFileError as e:
        return JOB.fail(str(e))
    m_path, _ = keys.paths(cfg)
    JOB.say(f"manifest version {creds.manifest.version} written to {m_path}"
            + (f" (was {before})" if before else ""))
    return 0
