"""A 3-node JetStream cluster with a system account (user ``sys``) and JetStream accounts.

Each account has one user, its name in lower case, with that name as password.

Shared by the cluster-scope tests: every member has the same ``accounts`` block, so a user of any account can
connect to any member.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors

from exporter.natsserver import NatsCluster

SYSTEM_USER = {"user": "sys", "password": "sys"}


def user_of(account: str) -> dict[str, str]:
    """The user and password of ``account``'s only user."""
    return {"user": account.lower(), "password": account.lower()}


def accounts_block(accounts: Iterable[str]) -> str:
    users = "".join(
        f'  {name}: {{ jetstream: enabled, users: [ {{user: "{user}", password: "{user}"}} ] }}\n'
        for name, user in ((name, name.lower()) for name in accounts)
    )
    return (
        "accounts {\n"
        '  SYS: { users: [ {user: "sys", password: "sys"} ] }\n'
        f"{users}"
        "}\n"
        "system_account: SYS\n"
    )


def system_cluster(base: Path, accounts: Iterable[str]) -> NatsCluster:
    """Three members n1..n3 with the system account and ``accounts``; use it as a context manager."""
    return NatsCluster(base, extra_config=accounts_block(accounts))


async def wait_for_meta_leader(js: Any) -> None:
    """A cluster that has just formed answers JetStream requests only once its meta group has a leader."""
    async with asyncio.timeout(20):
        while True:
            try:
                await js.account_info()
            except (nats.errors.Error, nats.js.errors.Error):
                await asyncio.sleep(0.1)
            else:
                return
