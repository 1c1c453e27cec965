"""`oonibackend account-role EMAIL [--role user|admin]`: show or set an account's role.

How the first admin comes to be: nothing else can grant a role before an admin exists.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from oonibackend.accounts.ids import account_id, normalize_email
from oonibackend.accounts.tokens import ROLES
from oonibackend.jobs.harness import Job
from oonibackend.storage import DatabaseError

if TYPE_CHECKING:
    from oonibackend.config import Config

JOB = Job("oonibackend account-role")


def add_parser(subparsers: argparse._SubParsersAction,
               parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "account-role", parents=parents,
        help="show or set the role of an account (e.g. the first admin)",
        description="Show the role of the account of EMAIL, or set it with --role. The email "
        "address is only hashed (with accounts.hashing_key), never stored. A new role takes "
        "effect at the account's next login.")
    p.add_argument("email", metavar="EMAIL", help="the account's email address")
    p.add_argument("--role", choices=ROLES, help="set this role")
    p.set_defaults(func=run)


async def run(args: argparse.Namespace, cfg: Config) -> int:
    from oonibackend.accounts.store import AccountStore

    email = normalize_email(args.email)
    if email is None:
        return JOB.usage(f"invalid email address {args.email!r}")
    account = account_id(email, cfg.account_hashing_key())
    try:
        async with JOB.database(cfg) as db:
            store = AccountStore(db)
            if args.role:
                await store.set_role(account, args.role)
            role = await store.role(account)
    except DatabaseError as e:
        return JOB.fail(str(e))
    JOB.say(f"{email} (account {account}): {role or 'no role set (user)'}")
    return 0
