"""The JetStream source: the only module that talks to JetStream for collection.

Two request patterns, chosen by the connected server (measured: ``python -m bench.cluster_requests``):

- A single server: ``$JS.API.INFO``, ``STREAM.LIST`` paged on ``offset``, and ``CONSUMER.LIST.<stream>`` per
  selected stream (started as soon as the stream's page arrives): 1 + ceil(N/256) + N requests for N
  streams.
- A cluster member: ``INFO``, ``STREAM.NAMES`` paged, then per selected stream ``STREAM.INFO.<stream>``
  followed by ``CONSUMER.LIST.<stream>``: 1 + ceil(N/1024) + 2N requests. A clustered ``STREAM.LIST`` is
  answered only after 4 s while any stream leader is unreachable, and a stream without a leader never
  answers ``STREAM.INFO``; asked one by one, such a stream costs its own data only (kept from the previous
  cycle, with no replica current) while every other stream stays fresh. ``STREAM.NAMES`` is answered by the
  meta leader from its own state, at once; while there is no meta leader the previous cycle's names are
  used, and the previous account state is kept when ``INFO`` goes unanswered.

Every request waits at most ``collection.request_timeout``, and at most half the cycle deadline; on a
cluster also no longer than 90% of the deadline counted from the cycle's start.
Configured dead-letter streams and lagging consumers add their own look-ups. Their failures, and on a
cluster those of single streams and consumer lists, are partial (recorded in the snapshot, counted by
stage); every other failure raises ``CollectionError``. All work runs in task groups, so the caller's
deadline cancels it without leaving requests behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from exporter.account_lookups import AccountLookups, with_lag
from exporter.collectionplan import CollectionPlan
from exporter.jsapi import (
    JETSTREAM_NOT_ENABLED_FOR_ACCOUNT,
    STREAM_NOT_FOUND,
    DeniedSubjects,
    JetStreamApi,
    JetStreamApiError,
    JetStreamRequestError,
)
from exporter.logs import PartialStageLog
from exporter.monitoring import MetadataProblemLog
from exporter.parse import (
    parse_account_state,
    parse_consumer_state,
    parse_list_page,
    parse_names_page,
    parse_stream_state,
)
from exporter.settings import Settings
from exporter.snapshot import (
    AccountState,
    ConsumerState,
    ServerInfo,
    Snapshot,
    StreamState,
)
from exporter.stages import Stage, StageTimings

logger = logging.getLogger(__name__)

DEFAULT_ACCOUNT = "$G"
USER_INFO_SUBJECT = "$SYS.REQ.USER.INFO"
# A single request may use at most this share of the cycle deadline, so a request that is never answered
# (a missing publish permission, a stream without a leader) is reported with its stage before the whole
# cycle times out.
REQUEST_TIMEOUT_SHARE = 0.5
# On a cluster, every request of a cycle must also be answered within this share of the deadline, counted
# from the cycle's start: requests in a row (INFO, then STREAM.INFO, then CONSUMER.LIST, then lag
# look-ups) that each wait for an unreachable leader cost their streams' data, never the whole cycle.
CYCLE_BUDGET_SHARE = 0.9
USER_INFO_TIMEOUT_SECONDS = 2.0


class CollectionError(Exception):
    """A collection cycle failed at ``stage``; the message names what failed and never holds a secret."""

    def __init__(self, stage: Stage, message: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.message = message


@contextlib.contextmanager
def _stage(stage: Stage, timings: StageTimings | None = None) -> Iterator[None]:
    """Time the work in ``stage``; turn a failed request or an unexpected reply into its CollectionError."""
    try:
        with timings.measure(stage) if timings is not None else contextlib.nullcontext():
            yield
    except JetStreamRequestError as exc:
        raise CollectionError(stage, _explain(exc)) from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise CollectionError(stage, f"unexpected JetStream API reply ({type(exc).__name__}: {exc})") from exc


def _explain(exc: JetStreamRequestError) -> str:
    if isinstance(exc, JetStreamApiError) and exc.err_code == JETSTREAM_NOT_ENABLED_FOR_ACCOUNT:
        return f"JetStream is not enabled for the exporter's account ({exc})"
    return str(exc)


def _first_collection_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The CollectionError inside a task group's exception group (the group itself if there is none)."""
    for exc in group.exceptions:
        found = _first_collection_error(exc) if isinstance(exc, BaseExceptionGroup) else exc
        if isinstance(found, CollectionError):
            return found
    return group


@dataclass(slots=True)
class _Inventory:
    streams: dict[str, StreamState] = field(default_factory=dict)
    consumers: list[ConsumerState] = field(default_factory=list)  # read this cycle
    carried_consumers: list[ConsumerState] = field(default_factory=list)  # kept from the previous snapshot


@dataclass(frozen=True, slots=True)
class _ConsumerListing:
    consumers: list[ConsumerState]
    unavailable: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _StreamRead:
    """One stream read on its own: its state and consumers, or the stage that failed and why."""

    state: StreamState | None  # None: deleted, or not read
    listing: _ConsumerListing | None
    stage: Stage | None = None  # the stage that failed, None when nothing did
    error: str | None = None


class JetStreamSource:
    """Reads one account's JetStream state into a Snapshot. One object per connection."""

    def __init__(
        self,
        nc: Client,
        settings: Settings,
        denied: DeniedSubjects | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._nc = nc
        self._clock = clock  # wall time a cycle's data is dated with (lag is measured against it)
        self._settings = settings
        self._plan = CollectionPlan(settings)
        collection = settings.collection
        self._request_timeout = min(
            collection.request_timeout_seconds, collection.deadline_seconds * REQUEST_TIMEOUT_SHARE
        )
        self._api = JetStreamApi(
            nc, domain=settings.nats.domain, timeout_seconds=self._request_timeout, denied=denied
        )
        self._in_flight = asyncio.Semaphore(settings.collection.concurrency)
        self._cycle_budget = collection.deadline_seconds * CYCLE_BUDGET_SHARE
        self._cycle_ends = float("inf")  # loop time by which this cycle's requests must be answered
        self._account: str | None = settings.nats.account
        # Logged on change only; the collection loop counts every failing cycle in a metric.
        self._partial_stage_log = PartialStageLog(logger)
        self._lookups = AccountLookups(
            self._request,
            self._request_message,
            lag_lookups_per_cycle=settings.collection.lag_lookups_per_cycle,
        )
        self._label_keys = settings.labels.from_metadata
        self._metadata_problems = MetadataProblemLog()

    async def fetch_snapshot(
        self, previous: Snapshot | None, timings: StageTimings | None = None
    ) -> Snapshot:
        """One cycle, each stage timed. Raises CollectionError; lag and dlq failures are partial, and on a
        cluster so are those of account info, stream names, single streams and consumer lists."""
        timings = timings if timings is not None else StageTimings(time.monotonic)
        server = self._server_info()
        clustered = server is not None and bool(server.cluster)
        # On a single server a request never outlives the cycle's budget by itself being slow in a row of
        # others: the whole cycle then fails at its deadline (stage "timeout"), as it should.
        budget = self._cycle_budget if clustered else float("inf")
        self._cycle_ends = asyncio.get_running_loop().time() + budget
        partial: dict[Stage, str | None] = {Stage.ACCOUNT: None, Stage.STREAMS: None, Stage.CONSUMERS: None}
        with timings.measure(Stage.ACCOUNT):
            account = await self._account_name()
            # On a cluster INFO is asked alongside STREAM.NAMES, below.
            account_state = None if clustered else await self._fetch_account(account)
        try:
            async with asyncio.TaskGroup() as group:
                dead_letters_task = group.create_task(
                    timings.timed(
                        Stage.DLQ,
                        self._lookups.fetch_dead_letters(
                            account,
                            self._plan.dead_letter_streams(account, self._settings.dead_letter_streams),
                            previous,
                        ),
                    )
                )
                if clustered:
                    # INFO and STREAM.NAMES both wait for the meta leader: asked together, its absence
                    # costs one request timeout, not two.
                    account_task = group.create_task(
                        timings.timed(Stage.ACCOUNT, self._fetch_account_or_keep(account, previous, partial))
                    )
                    inventory = await self._fetch_inventory_by_stream(account, previous, partial, timings)
                    account_state = await account_task
                else:
                    inventory = await self._fetch_inventory(account, previous, timings)
                wanted = [c for c in inventory.consumers if self._plan.lag_wanted(c)]
                lags = await timings.timed(Stage.LAG, self._lookups.measure_lags(inventory.streams, wanted))
        except BaseExceptionGroup as exc_group:
            raise _first_collection_error(exc_group) from None
        dead_letters, dead_letters_error = dead_letters_task.result()
        collected_at = self._clock()

        consumers = [with_lag(consumer, lags, collected_at) for consumer in inventory.consumers]
        consumers.extend(inventory.carried_consumers)
        consumers.sort(key=lambda consumer: (consumer.stream, consumer.name))
        partial.update({Stage.DLQ: dead_letters_error, Stage.LAG: lags.error})
        for stage, error in partial.items():
            self._partial_stage_log.report(str(stage), error)
        streams = tuple(inventory.streams[name] for name in sorted(inventory.streams))
        if self._metadata_problems.record(streams, consumers):
            partial[Stage.METADATA] = "unreadable io.nats.monitor metadata"
        return Snapshot(
            collected_at=collected_at,
            servers=() if server is None else (server,),
            accounts=() if account_state is None else (account_state,),
            streams=streams,
            consumers=tuple(consumers),
            dead_letters=dead_letters,
            lag_lookups_skipped=lags.skipped,
            partial_errors=tuple(stage for stage, error in partial.items() if error is not None),
            metadata_label_keys=self._label_keys,
        )

    # --- requests ---------------------------------------------------------------------------------

    async def _request(self, api: str, payload: Mapping[str, Any] | None = None) -> dict[str, Any]:
        async with self._in_flight:
            return await self._api.request_json(api, payload, reply_within=self._time_left())

    async def _request_message(self, api: str, payload: Mapping[str, Any] | None = None) -> Msg:
        async with self._in_flight:
            return await self._api.request_message(api, payload, reply_within=self._time_left())

    def _time_left(self) -> float:
        """What is left of the cycle's budget; the API caps it at the request timeout."""
        return self._cycle_ends - asyncio.get_running_loop().time()

    def _server_info(self) -> ServerInfo | None:
        info: Mapping[str, Any] = self._nc._server_info  # noqa: SLF001 (nats-py has no public accessor)
        if not info:
            return None
        return ServerInfo(
            server_name=str(info.get("server_name", "")),
            version=str(info.get("version", "")),
            cluster=str(info.get("cluster", "")),
            domain=str(info.get("domain", "")),
        )

    async def _account_name(self) -> str:
        if self._account is None:
            self._account = await self._resolve_account()
        return self._account

    async def _resolve_account(self) -> str:
        """The connected user's account, asked once; "$G" (the default account) when the server won't say."""
        timeout = min(USER_INFO_TIMEOUT_SECONDS, self._request_timeout)
        try:
            msg = await self._nc.request(USER_INFO_SUBJECT, b"", timeout=timeout)
            account = json.loads(msg.data)["data"]["account"]
        except (nats.errors.Error, ValueError, KeyError, TypeError) as exc:
            if not self._nc.is_connected:
                # Not the server's answer but an outage: ask again next cycle rather than keep a guess.
                raise CollectionError(
                    Stage.ACCOUNT, f"not connected to NATS ({type(exc).__name__})"
                ) from None
            logger.warning(
                "could not ask the server for the exporter's account (%s); labelling it %r: set nats.account "
                "in the configuration to choose the label",
                type(exc).__name__,
                DEFAULT_ACCOUNT,
            )
            return DEFAULT_ACCOUNT
        if not isinstance(account, str) or not account:
            return DEFAULT_ACCOUNT
        logger.info("collecting JetStream data of account %r", account)
        return account

    async def _fetch_account(self, account: str) -> AccountState:
        with _stage(Stage.ACCOUNT):
            return parse_account_state(await self._request("INFO"), account)

    async def _fetch_account_or_keep(
        self, account: str, previous: Snapshot | None, partial: dict[Stage, str | None]
    ) -> AccountState:
        """INFO; on a cluster without a meta leader the previous cycle's state is kept (a partial failure)."""
        try:
            return await self._fetch_account(account)
        except CollectionError as exc:
            if previous is None or not previous.accounts:
                raise
            partial[Stage.ACCOUNT] = exc.message
            return previous.accounts[0]

    # --- streams and consumers --------------------------------------------------------------------

    async def _fetch_inventory(
        self, account: str, previous: Snapshot | None, timings: StageTimings
    ) -> _Inventory:
        """Every selected stream and its consumers; consumer lists start while stream pages still arrive."""
        inventory = _Inventory()
        unavailable_streams: list[str] = []
        listings: dict[str, asyncio.Task[_ConsumerListing | None]] = {}
        try:
            async with asyncio.TaskGroup() as group:
                offset = 0
                while True:
                    with _stage(Stage.STREAMS, timings):
                        page = parse_list_page(
                            await self._request("STREAM.LIST", {"offset": offset}), "streams"
                        )
                        for info in page.items:
                            name = info["config"]["name"]
                            if name in inventory.streams or not self._plan.stream_selected(account, name):
                                continue
                            state = parse_stream_state(info, account, self._label_keys)
                            inventory.streams[name] = state
                            listings[name] = group.create_task(
                                self._fetch_consumers(name, account, state.replicas, timings)
                            )
                    unavailable_streams.extend(page.unavailable)
                    offset += page.received
                    if not page.received or offset >= page.total:
                        break
        except BaseExceptionGroup as exc_group:
            raise _first_collection_error(exc_group) from None

        unavailable_consumers: list[tuple[str, str]] = []
        for name, task in listings.items():
            listing = task.result()
            if listing is None:
                del inventory.streams[name]
                continue
            inventory.consumers.extend(listing.consumers)
            unavailable_consumers.extend((name, consumer) for consumer in listing.unavailable)
        if previous is not None and (unavailable_streams or unavailable_consumers):
            self._carry_over(inventory, previous, unavailable_streams, unavailable_consumers)
        return inventory

    async def _fetch_inventory_by_stream(
        self,
        account: str,
        previous: Snapshot | None,
        partial: dict[Stage, str | None],
        timings: StageTimings,
    ) -> _Inventory:
        """Every selected stream read from its own leader: one unreachable stream costs only its data.

        The first stream and consumer-list failures go to ``partial``; what failed keeps its previous values.
        """
        named = await self._stream_names(previous, partial, timings)
        names = [name for name in named if self._plan.stream_selected(account, name)]
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._read_stream(name, account, timings)) for name in names]
        except BaseExceptionGroup as exc_group:
            raise _first_collection_error(exc_group) from None
        inventory = _Inventory()
        unreachable: list[str] = []
        unlisted: list[str] = []
        unavailable_consumers: list[tuple[str, str]] = []
        for name, task in zip(names, tasks, strict=True):
            read = task.result()
            if read.stage is not None:
                partial[read.stage] = partial[read.stage] or read.error
                (unreachable if read.stage == Stage.STREAMS else unlisted).append(name)
            if read.state is None:
                continue
            inventory.streams[name] = read.state
            if read.listing is not None:
                inventory.consumers.extend(read.listing.consumers)
                unavailable_consumers.extend((name, consumer) for consumer in read.listing.unavailable)
        if previous is not None and (unreachable or unlisted or unavailable_consumers):
            self._carry_over(inventory, previous, unreachable, unavailable_consumers, unlisted)
        return inventory

    async def _stream_names(
        self, previous: Snapshot | None, partial: dict[Stage, str | None], timings: StageTimings
    ) -> list[str]:
        """Every stream's name (STREAM.NAMES, paged); the previous cycle's while the meta leader is away."""
        names: dict[str, None] = {}
        offset = 0
        try:
            while True:
                with _stage(Stage.STREAMS, timings):
                    page = parse_names_page(await self._request("STREAM.NAMES", {"offset": offset}))
                names.update(dict.fromkeys(page.names))
                offset += len(page.names)
                if not page.names or offset >= page.total:
                    return list(names)
        except CollectionError as exc:
            if previous is None:
                raise
            partial[Stage.STREAMS] = exc.message
            return [stream.name for stream in previous.streams]

    async def _read_stream(self, name: str, account: str, timings: StageTimings) -> _StreamRead:
        """STREAM.INFO from the stream's leader, then its consumers; a failure is returned, not raised."""
        try:
            with _stage(Stage.STREAMS, timings):
                reply = await self._request(f"STREAM.INFO.{name}")
                state = parse_stream_state(reply, account, self._label_keys)
        except CollectionError as exc:
            cause = exc.__cause__
            if isinstance(cause, JetStreamApiError) and cause.err_code == STREAM_NOT_FOUND:
                return _StreamRead(None, None)  # deleted since it was named
            return _StreamRead(None, None, Stage.STREAMS, f"stream {name!r}: {exc.message}")
        try:
            listing = await self._fetch_consumers(name, account, state.replicas, timings)
        except CollectionError as exc:
            return _StreamRead(state, None, Stage.CONSUMERS, f"consumers of stream {name!r}: {exc.message}")
        if listing is None:
            return _StreamRead(None, None)
        return _StreamRead(state, listing)

    async def _fetch_consumers(
        self, stream: str, account: str, stream_replicas: int, timings: StageTimings
    ) -> _ConsumerListing | None:
        """The stream's selected consumers; None when the stream was deleted since it was listed."""
        selected = self._settings.filters.consumer_selected
        consumers: dict[str, ConsumerState] = {}
        unavailable: list[str] = []
        offset = 0
        while True:
            with _stage(Stage.CONSUMERS, timings):
                try:
                    reply = await self._request(f"CONSUMER.LIST.{stream}", {"offset": offset})
                except JetStreamApiError as exc:
                    if exc.err_code == STREAM_NOT_FOUND:
                        logger.debug("stream %r was deleted during the cycle", stream)
                        return None
                    raise
                page = parse_list_page(reply, "consumers")
                for info in page.items:
                    name = info["name"]
                    if name not in consumers and selected(name):
                        consumers[name] = parse_consumer_state(
                            info, account, self._label_keys, stream_replicas=stream_replicas
                        )
            unavailable.extend(page.unavailable)
            offset += page.received
            if not page.received or offset >= page.total:
                return _ConsumerListing(list(consumers.values()), tuple(unavailable))

    def _carry_over(
        self,
        inventory: _Inventory,
        previous: Snapshot,
        unavailable_streams: Sequence[str],
        unavailable_consumers: Sequence[tuple[str, str]],
        unlisted_streams: Sequence[str] = (),
    ) -> None:
        """Keep, for this cycle, the previous values of what could not be read: streams and consumers the
        server listed as missing or offline or whose leader did not answer, and the consumers of
        ``unlisted_streams``. What is kept is marked unreachable: no leader, no replica current."""
        filters = self._settings.filters
        previous_streams = {stream.name: stream for stream in previous.streams}
        kept_streams = set(unlisted_streams)
        for name in unavailable_streams:
            if name not in inventory.streams and name in previous_streams and filters.stream_selected(name):
                inventory.streams[name] = previous_streams[name].unreachable()
                kept_streams.add(name)
        wanted_consumers = set(unavailable_consumers)
        listed = {(consumer.stream, consumer.name) for consumer in inventory.consumers}
        for consumer in previous.consumers:
            key = (consumer.stream, consumer.name)
            if key in listed or not filters.consumer_selected(consumer.name):
                continue
            if consumer.stream not in inventory.streams:
                continue
            if consumer.stream in kept_streams or key in wanted_consumers:
                inventory.carried_consumers.append(consumer.unreachable())
        logger.debug(
            "kept previous values of %d streams and %d consumers the server listed as missing or offline",
            len(kept_streams),
            len(inventory.carried_consumers),
        )
