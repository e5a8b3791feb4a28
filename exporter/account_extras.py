"""Cluster scope: what only a connection inside an account can read, for the accounts listed in ``accounts``.

The system account's JSZ report gives every stream and consumer, but not dead-letter depth (subject counts),
lag in seconds (a stored message's time) or the advisories and sampled acknowledgements the server publishes
inside each account. For each entry of ``accounts`` the exporter keeps one connection inside that account
and, every cycle, completes the cluster snapshot with the same look-ups and the same event intake as the
account scope: the configured dead-letter streams that the account has, the lag of its consumers that the
cluster view left unmeasured, and its events, labelled with the account's name. Streams and consumers
themselves still come from the cluster view only, so no series is exported twice.

Every failure here is partial: a connection that cannot be made (a wrong password, say) is retried on later
cycles with a growing backoff, counted at the ``account_connect`` stage and logged once per change; the
other accounts and the cluster view are kept. Once connected, nats-py reconnects by itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import SlowConsumerError

from exporter.account_lookups import AccountLookups, LagResults, with_lag
from exporter.collectionplan import CollectionPlan
from exporter.connection import NatsConnectError, close_quietly, connect_nats
from exporter.intake import EventIntake
from exporter.jsapi import JetStreamApi
from exporter.logs import PartialStageLog
from exporter.settings import AccountEntry, Settings
from exporter.snapshot import ConsumerState, DeadLetterState, Snapshot
from exporter.stages import Stage, StageTimings

logger = logging.getLogger(__name__)

# A connection that failed is tried again after this long, doubling up to the maximum.
FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 300.0
# Connecting may use at most this share of the cycle deadline, so a hanging attempt is a partial failure
# of its account, not a timeout of the whole cycle.
CONNECT_SHARE = 0.5


@dataclass(slots=True)
class _Outcome:
    """One account's additions to a cycle, and the partial failures (stage -> reason) on the way."""

    dead_letters: tuple[DeadLetterState, ...] = ()
    consumers: dict[tuple[str, str, str], ConsumerState] = field(default_factory=dict)  # with lag measured
    lag_lookups_skipped: int = 0
    errors: dict[Stage, str] = field(default_factory=dict)


class _AccountLink:
    """The connection inside one account, its look-ups and its event intake."""

    def __init__(
        self, entry: AccountEntry, settings: Settings, plan: CollectionPlan, *, clock: Callable[[], float]
    ) -> None:
        self.entry = entry
        self._settings = settings
        self._plan = plan
        self._clock = clock
        # Servers, TLS and timeouts of `nats`; this entry's own authentication.
        self._nats = replace(settings.nats, auth=entry.auth, account=entry.name)
        self.intake = EventIntake(entry.name, ack_latency_buckets=settings.ack_latency.buckets)
        self._nc: Client | None = None
        self._lookups: AccountLookups | None = None
        self._retry_at = 0.0
        self._retry_after = FIRST_RETRY_SECONDS
        self._connect_error: str | None = None
        self.events_subscribed = False  # the intake has been subscribed once: its counters are live
        # Each state change is logged once; the collection loop counts every failing cycle in a metric.
        self._log = PartialStageLog(logger, f"for account {self.name!r}")

    @property
    def name(self) -> str:
        return self.entry.name

    async def collect(self, snapshot: Snapshot, previous: Snapshot | None, timings: StageTimings) -> _Outcome:
        """This account's dead letters and lag within ``snapshot``, its intake subscribed; never raises."""
        outcome = _Outcome()
        lookups = await self._connected(outcome)
        if lookups is None:
            self._log_states(outcome.errors)
            return outcome
        await self._subscribe_events(outcome)
        streams = {stream.name: stream for stream in snapshot.streams if stream.account == self.name}
        consumers = [c for c in snapshot.consumers if c.account == self.name and self._plan.lag_wanted(c)]
        # Only what the account has: a name configured for another account is not reported missing here.
        configured = self._plan.dead_letter_streams(self.name, self._settings.dead_letter_streams)
        dead_letter_names = [name for name in configured if name in streams]
        async with asyncio.TaskGroup() as group:
            dead_letters = group.create_task(
                timings.timed(Stage.DLQ, lookups.fetch_dead_letters(self.name, dead_letter_names, previous))
            )
            lags = group.create_task(timings.timed(Stage.LAG, lookups.measure_lags(streams, consumers)))
        outcome.dead_letters, dead_letter_error = dead_letters.result()
        measured: LagResults = lags.result()
        outcome.consumers = {
            (consumer.account, consumer.stream, consumer.name): with_lag(
                consumer, measured, snapshot.collected_at
            )
            for consumer in consumers
        }
        outcome.lag_lookups_skipped = measured.skipped
        for stage, error in ((Stage.DLQ, dead_letter_error), (Stage.LAG, measured.error)):
            if error is not None:
                outcome.errors[stage] = error
        self._log_states(outcome.errors)
        return outcome

    async def close(self) -> None:
        await self.intake.close()
        nc, self._nc = self._nc, None
        if nc is not None:
            await close_quietly(nc)

    # --- the connection ---------------------------------------------------------------------------

    async def _connected(self, outcome: _Outcome) -> AccountLookups | None:
        """The look-ups over a live connection; None (and the reason in ``outcome``) while there is none."""
        if self._nc is not None and not self._nc.is_closed and self._lookups is not None:
            return self._lookups
        now = self._clock()
        if now < self._retry_at and self._connect_error is not None:
            outcome.errors[Stage.ACCOUNT_CONNECT] = self._connect_error
            return None
        collection = self._settings.collection
        try:
            async with asyncio.timeout(collection.deadline_seconds * CONNECT_SHARE):
                nc = await connect_nats(
                    self._nats, name=f"nats-jetstream-exporter ({self.name})", error_cb=self._client_error
                )
        except (NatsConnectError, TimeoutError) as exc:
            reason = str(exc) if isinstance(exc, NatsConnectError) else "the connection attempt timed out"
            self._connect_error = f"account {self.name!r}: {reason}"
            self._retry_at = now + self._retry_after
            self._retry_after = min(self._retry_after * 2, MAX_RETRY_SECONDS)
            outcome.errors[Stage.ACCOUNT_CONNECT] = self._connect_error
            return None
        self._nc, self._connect_error = nc, None
        self._retry_after = FIRST_RETRY_SECONDS
        api = JetStreamApi(
            nc,
            domain=self._settings.nats.domain,
            timeout_seconds=collection.request_timeout_seconds,
        )
        in_flight = asyncio.Semaphore(collection.concurrency)

        async def request_json(name: str, payload: Mapping[str, Any] | None) -> dict[str, Any]:
            async with in_flight:
                return await api.request_json(name, payload)

        async def request_message(name: str, payload: Mapping[str, Any] | None) -> Msg:
            async with in_flight:
                return await api.request_message(name, payload)

        self._lookups = AccountLookups(
            request_json, request_message, lag_lookups_per_cycle=collection.lag_lookups_per_cycle
        )
        logger.info("connected inside account %r for its dead letters, lag and events", self.name)
        return self._lookups

    async def _client_error(self, exc: Exception) -> None:
        # The client's own queue for the intake overflowed: the intake counts what it lost.
        if isinstance(exc, SlowConsumerError) and self.intake.client_dropped(exc.sub):
            return
        logger.debug("account %r connection: %s", self.name, type(exc).__name__)

    async def _subscribe_events(self, outcome: _Outcome) -> None:
        if self._nc is None:
            return
        try:
            await self.intake.subscribe(self._nc)  # a no-op while subscribed on this connection
        except Exception as exc:  # noqa: BLE001 (a failed subscription must not stop collection)
            outcome.errors[Stage.ADVISORIES] = f"account {self.name!r}: cannot subscribe to events ({exc})"
            return
        self.events_subscribed = True

    def _log_states(self, errors: Mapping[Stage, str]) -> None:
        for stage in (Stage.ACCOUNT_CONNECT, Stage.ADVISORIES, Stage.DLQ, Stage.LAG):
            self._log.report(str(stage), errors.get(stage))


class AccountExtras:
    """The connections inside the accounts of ``accounts``; completes each cluster snapshot with them.

    Lives as long as the daemon, across reconnections of its system-account connection.
    """

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> None:
        plan = CollectionPlan(settings)  # only its questions (lag wanted? which dead letters?), no shaping
        self._links = tuple(_AccountLink(entry, settings, plan, clock=clock) for entry in settings.accounts)
        self._selected = settings.filters.account_selected

    @property
    def intakes(self) -> tuple[EventIntake, ...]:
        return tuple(link.intake for link in self._links)

    def event_accounts(self) -> frozenset[str]:
        """Accounts whose events are received (their intake was subscribed): only these get event counters."""
        return frozenset(link.name for link in self._links if link.events_subscribed)

    async def complete(
        self, snapshot: Snapshot, previous: Snapshot | None, timings: StageTimings
    ) -> Snapshot:
        """``snapshot`` with each listed account's dead letters and consumer lag; partial failures added."""
        links = [link for link in self._links if self._selected(link.name)]
        if not links:
            return snapshot
        outcomes = await asyncio.gather(*(link.collect(snapshot, previous, timings) for link in links))
        measured: dict[tuple[str, str, str], ConsumerState] = {}
        dead_letters = list(snapshot.dead_letters)
        failed = dict.fromkeys(snapshot.partial_errors)
        for outcome in outcomes:
            measured.update(outcome.consumers)
            dead_letters.extend(outcome.dead_letters)
            failed.update(dict.fromkeys(map(str, outcome.errors)))
        consumers = tuple(measured.get((c.account, c.stream, c.name), c) for c in snapshot.consumers)
        return replace(
            snapshot,
            consumers=consumers,
            dead_letters=tuple(sorted(dead_letters, key=lambda state: (state.account, state.stream))),
            lag_lookups_skipped=snapshot.lag_lookups_skipped + sum(o.lag_lookups_skipped for o in outcomes),
            partial_errors=tuple(failed),  # each failing stage counted once per cycle
        )

    async def close(self) -> None:
        for link in self._links:
            await link.close()
