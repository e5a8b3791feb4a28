"""Which source a connection collects with: one account's JetStream API, or the whole cluster.

``collection.scope`` is ``account``, ``cluster`` or ``auto``. ``auto`` picks ``cluster`` when the connected
user belongs to the system account and ``account`` otherwise. The system account is recognised by what it
can do rather than by its name (which a server's configuration chooses): servers answer its
``$SYS.REQ.SERVER.PING``, while in any other account that subject has no responders, which the server says
at once. ``$SYS.REQ.USER.INFO`` names the account for the log line.
"""

from __future__ import annotations

import json
import logging

import nats.errors
from nats.aio.client import Client

from exporter.account_extras import AccountExtras
from exporter.cluster_source import ClusterSource
from exporter.collectionplan import CollectionPlan
from exporter.jsapi import DeniedSubjects
from exporter.settings import Settings
from exporter.snapshot import Snapshot
from exporter.source import CollectionError, JetStreamSource
from exporter.stages import Stage, StageTimings

logger = logging.getLogger(__name__)

ACCOUNT = "account"
CLUSTER = "cluster"
AUTO = "auto"
SCOPES = (AUTO, ACCOUNT, CLUSTER)

SERVER_PING_SUBJECT = "$SYS.REQ.SERVER.PING"
USER_INFO_SUBJECT = "$SYS.REQ.USER.INFO"
PROBE_TIMEOUT_SECONDS = 2.0


class ScopeError(Exception):
    """The configured scope cannot work with the connected user; the message says what to change."""


async def in_system_account(nc: Client, timeout: float = PROBE_TIMEOUT_SECONDS) -> bool:  # noqa: ASYNC109 (a request timeout)
    """Whether the connected user belongs to the system account (servers answer its ping)."""
    try:
        await nc.request(SERVER_PING_SUBJECT, b"", timeout=timeout)
    except nats.errors.NoRespondersError:
        return False
    except nats.errors.TimeoutError:
        # Nobody answered in time: not a system-account user (or one without permission to ask).
        return False
    return True


async def account_name(nc: Client, timeout: float = PROBE_TIMEOUT_SECONDS) -> str | None:  # noqa: ASYNC109 (a request timeout)
    """The connected user's account as the server names it; None when the server will not say."""
    try:
        reply = json.loads((await nc.request(USER_INFO_SUBJECT, b"", timeout=timeout)).data)
        name = reply["data"]["account"]
    except (nats.errors.Error, ValueError, KeyError, TypeError):
        return None
    return name if isinstance(name, str) and name else None


async def choose_scope(nc: Client, settings: Settings) -> str:
    """``account`` or ``cluster`` for this connection; raises ScopeError for a scope that cannot work."""
    configured = settings.collection.scope
    system = await in_system_account(nc)
    if configured == ACCOUNT and system:
        raise ScopeError(
            "collection.scope is account, but the exporter's user belongs to the system account, which has "
            "no JetStream of its own: set collection.scope to cluster (or auto) to read every account "
            "through it, or connect as a user of the account to export"
        )
    if configured == CLUSTER and not system:
        raise ScopeError(
            "collection.scope is cluster, but the exporter's user does not belong to the system account: "
            "connect as a system-account user, or set collection.scope to account (or auto)"
        )
    scope = CLUSTER if system else ACCOUNT
    if configured == AUTO:
        name = await account_name(nc)
        logger.info(
            "collection scope %s: the exporter's user belongs to %s",
            scope,
            "the system account" if system else f"account {name!r}" if name else "an ordinary account",
        )
    return scope


class ScopedSource:
    """The source of one connection: its scope is chosen on the first cycle, then it reads with it.

    A scope that cannot work (see ``choose_scope``) fails each cycle at the connect stage, with the
    message saying what to change, until the configuration or the user is fixed. In cluster scope each
    snapshot is completed by ``extras`` (the accounts listed in ``accounts``, see exporter.account_extras).
    """

    def __init__(
        self,
        nc: Client,
        settings: Settings,
        denied: DeniedSubjects | None = None,
        *,
        extras: AccountExtras | None = None,
    ) -> None:
        self._nc = nc
        self._settings = settings
        self._denied = denied
        self._plan = CollectionPlan(settings)
        # Cluster scope: the connections inside the listed accounts, which outlive this connection.
        self._extras = extras
        self._source: JetStreamSource | ClusterSource | None = None

    @property
    def scope(self) -> str | None:
        """``account`` or ``cluster`` once chosen; None before the first cycle."""
        if self._source is None:
            return None
        return CLUSTER if isinstance(self._source, ClusterSource) else ACCOUNT

    async def fetch_snapshot(self, previous: Snapshot | None, timings: StageTimings) -> Snapshot:
        if self._source is None:
            try:
                scope = await choose_scope(self._nc, self._settings)
            except ScopeError as exc:
                raise CollectionError(Stage.CONNECT, str(exc)) from None
            self._source = (
                ClusterSource(self._nc, self._settings)
                if scope == CLUSTER
                else JetStreamSource(self._nc, self._settings, self._denied)
            )
        # One place for both sources: what they read is shaped the same way before it is exported.
        unshaped = self._plan.unshaped(previous)
        snapshot = await self._source.fetch_snapshot(unshaped, timings)
        if self._extras is not None and isinstance(self._source, ClusterSource):
            # Before shaping: ephemeral consumers are summed with the lag measured inside their account.
            snapshot = await self._extras.complete(snapshot, unshaped, timings)
        return self._plan.shape(snapshot)
