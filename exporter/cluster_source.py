"""The cluster source: every account and every server through the system account, in one request per page.

A system-account user asks all servers at once (``$SYS.REQ.SERVER.PING.JSZ``) for their JetStream report
with accounts, streams, consumers and configuration; every server answers for what it hosts. Replies are
gathered until ``collection.expected_servers`` have answered (when not set: as many as the meta group has
members, once a reply said so), or until no reply has come for a short quiet gap, always within the request
timeout. Reports page over accounts (sorted by name on
the server): pages are asked until every server's account list is read. The cost is one request per page
and one reply per server and page, whatever the number of streams.

Each stream is taken from the server that leads it and each consumer from the server that leads it (a
follower's copy of a consumer reports ``num_pending`` 0). Replicas, not only leaders, are asked for: with
``stream_leader_only`` a server leaves out the consumers it leads on streams it follows, so their leader's
values would never arrive. A stream or consumer that is known but has no leader report this cycle (an
election, or its leader's server did not answer) keeps its previous values, as the account scope does for
``missing`` entries; one that no server mentions and whose last leader answered was deleted.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import nats.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg

from exporter.collectionplan import CollectionPlan
from exporter.monitoring import MetadataProblemLog
from exporter.parse import parse_consumer_state, parse_stream_state
from exporter.parse_jsz import JszReplyError, ServerReport, led_by, parse_jsz_reply
from exporter.settings import Settings
from exporter.snapshot import AccountState, ConsumerState, Snapshot, StreamState
from exporter.source import CollectionError
from exporter.stages import Stage, StageTimings

logger = logging.getLogger(__name__)

JSZ_SUBJECT = "$SYS.REQ.SERVER.PING.JSZ"
# Accounts per page. The server sorts accounts by name and pages with offset/limit.
ACCOUNTS_PER_PAGE = 256
# Without collection.expected_servers, gathering ends once no reply has come for this long. Servers on
# one network answer within milliseconds of each other; a slow one still has the request timeout.
QUIET_GAP_SECONDS = 0.25

Key = tuple[str, ...]  # (account, stream) or (account, stream, consumer)


@dataclass(slots=True)
class _Selection:
    """The streams and consumers of one cycle, from their leaders, and every one a server mentioned."""

    streams: dict[tuple[str, str], StreamState] = field(default_factory=dict)
    consumers: dict[tuple[str, str, str], ConsumerState] = field(default_factory=dict)
    known_streams: set[tuple[str, str]] = field(default_factory=set)
    known_consumers: set[tuple[str, str, str]] = field(default_factory=set)
    fresh: set[Key] = field(default_factory=set)  # reported by their leader this cycle
    # Selected streams and consumers of other shards (collection.shard): only counted per account.
    elsewhere: set[Key] = field(default_factory=set)

    def add(
        self,
        server: str,
        account: str,
        entry: Mapping[str, Any],
        consumer_selected: Callable[[str], bool],
        label_keys: tuple[str, ...],
    ) -> None:
        """One server's copy of a stream: taken if that server leads it; its consumers likewise."""
        key = (account, entry["config"]["name"])
        stream_replicas = int(entry["config"].get("num_replicas", 1))
        self.known_streams.add(key)
        if led_by(entry, server) and key not in self.streams:
            self.streams[key] = parse_stream_state(entry, account, label_keys)
            self.fresh.add(key)
        for info in entry.get("consumer_detail") or ():
            consumer_key = (*key, info["name"])
            if not consumer_selected(info["name"]):
                continue
            self.known_consumers.add(consumer_key)
            if led_by(info, server) and consumer_key not in self.consumers:
                # Lag in seconds needs a message look-up inside the account: not measured here.
                self.consumers[consumer_key] = parse_consumer_state(
                    info, account, label_keys, stream_replicas=stream_replicas, lag_unknown=True
                )
                self.fresh.add(consumer_key)

    def add_elsewhere(
        self, account: str, entry: Mapping[str, Any], consumer_selected: Callable[[str], bool]
    ) -> None:
        """A stream of another shard: counted in its account's totals, so every shard agrees on them."""
        key = (account, entry["config"]["name"])
        self.elsewhere.add(key)
        consumers = (info["name"] for info in entry.get("consumer_detail") or ())
        self.elsewhere.update((*key, name) for name in consumers if consumer_selected(name))

    def carry_over(self, previous: Snapshot, *, answered: set[str]) -> None:
        """Keep previous values of what no leader reported: a follower listed it, or its leader is silent."""
        for stream in previous.streams:
            key = (stream.account, stream.name)
            if key not in self.streams and (key in self.known_streams or stream.leader not in answered):
                self.streams[key] = stream
        for consumer in previous.consumers:
            consumer_key = (consumer.account, consumer.stream, consumer.name)
            if consumer_key in self.consumers or (consumer.account, consumer.stream) not in self.streams:
                continue
            if consumer_key in self.known_consumers or consumer.leader not in answered:
                self.consumers[consumer_key] = consumer

    def expire(self, reported_at: Mapping[Key, float], now: float, ttl: float) -> dict[Key, float]:
        """Drop carried-over entries last reported more than ``ttl`` ago; returns when each kept one was."""
        kept: dict[Key, float] = {}
        for entries in (self.streams, self.consumers):
            for key in list(entries):
                since = now if key in self.fresh else reported_at.get(key, now)
                if now - since > ttl:
                    del entries[key]  # type: ignore[arg-type]  # each dict's own keys
                else:
                    kept[key] = since
        return kept


@dataclass(slots=True)
class _Gathered:
    """Every usable report of one cycle, by server, and the first failure of a server's reply."""

    reports: dict[str, list[ServerReport]] = field(default_factory=dict)
    error: str | None = None


class ClusterSource:
    """Reads the whole cluster's JetStream state into a Snapshot. One object per connection."""

    def __init__(self, nc: Client, settings: Settings, *, accounts_per_page: int = ACCOUNTS_PER_PAGE) -> None:
        self._nc = nc
        self._settings = settings
        self._plan = CollectionPlan(settings)
        self._accounts_per_page = accounts_per_page
        self._timeout = settings.collection.request_timeout_seconds
        self._expected = settings.collection.expected_servers
        self._cluster_size: int | None = None  # learnt from the replies, when not configured
        self._failing = False
        # When each stream and consumer was last reported by its leader: what is carried over is kept for
        # at most collection.stale_data_ttl, as the whole snapshot is after failed cycles.
        self._reported_at: dict[Key, float] = {}
        self._label_keys = settings.labels.from_metadata
        self._metadata_problems = MetadataProblemLog()

    async def fetch_snapshot(
        self, previous: Snapshot | None, timings: StageTimings | None = None
    ) -> Snapshot:
        """One cycle; raises CollectionError when no server answered. A bad reply is a partial error."""
        timings = timings if timings is not None else StageTimings(time.monotonic)
        with timings.measure(Stage.SERVERS):
            gathered = await self._gather_all_pages()
        if not gathered.reports:
            reason = gathered.error or f"no server answered {JSZ_SUBJECT} within {self._timeout:g}s"
            raise CollectionError(Stage.SERVERS, reason)
        self._log_partial_state(gathered.error)
        collected_at = time.time()
        firsts = {name: reports[0] for name, reports in sorted(gathered.reports.items())}
        selection = self._leaders(gathered.reports, previous)
        streams, consumers = selection.streams, selection.consumers
        meta = next((r.meta_cluster for r in firsts.values() if r.meta_cluster is not None), None)
        partial = [Stage.SERVERS] if gathered.error is not None else []
        if self._metadata_problems.record(streams.values(), consumers.values()):
            partial.append(Stage.METADATA)
        return Snapshot(
            collected_at=collected_at,
            servers=tuple(report.server for report in firsts.values()),
            accounts=self._accounts(gathered.reports, selection),
            streams=tuple(sorted(streams.values(), key=lambda s: (s.account, s.name))),
            consumers=tuple(sorted(consumers.values(), key=lambda c: (c.account, c.stream, c.name))),
            partial_errors=tuple(partial),
            jetstream_servers=tuple(report.jetstream for report in firsts.values()),
            meta_cluster=meta if meta is not None else (previous.meta_cluster if previous else None),
            servers_responded=len(firsts),
            metadata_label_keys=self._label_keys,
        )

    # --- requests ---------------------------------------------------------------------------------

    async def _gather_all_pages(self) -> _Gathered:
        gathered = _Gathered()
        offset = 0
        while True:
            total = 0
            for outcome in await self._gather_page(offset):
                if isinstance(outcome, str):
                    gathered.error = gathered.error or outcome
                    continue
                gathered.reports.setdefault(outcome.server.server_name, []).append(outcome)
                total = max(total, outcome.total_accounts)
                self._cluster_size = outcome.cluster_size or self._cluster_size
            offset += self._accounts_per_page
            if offset >= total:
                return gathered

    async def _gather_page(self, offset: int) -> list[ServerReport | str]:
        """Every server's report of one page of accounts (or, for a server, why its reply was unusable)."""
        request = {
            "accounts": True,
            "streams": True,
            "consumer": True,
            "config": True,
            "stream_leader_only": False,
            "offset": offset,
            "limit": self._accounts_per_page,
        }
        inbox = self._nc.new_inbox()
        subscription = await self._nc.subscribe(inbox)
        outcomes: list[ServerReport | str] = []
        try:
            await self._nc.publish(
                JSZ_SUBJECT, json.dumps(request).encode(), reply=inbox, headers={"Accept-Encoding": "gzip"}
            )
            deadline = time.monotonic() + self._timeout
            expected = self._expected or self._cluster_size
            while True:
                # An unusable reply (not a server's report) must not take the place of a server's.
                usable = sum(isinstance(outcome, ServerReport) for outcome in outcomes)
                wanted = None if expected is None else expected - usable
                replies = await _receive(subscription, deadline, wanted, waited=bool(outcomes))
                outcomes.extend(await asyncio.gather(*(asyncio.to_thread(_decode, r) for r in replies)))
                if not replies or wanted is None:
                    return outcomes
        except nats.errors.Error as exc:
            raise CollectionError(Stage.SERVERS, f"{JSZ_SUBJECT}: {exc or type(exc).__name__}") from None
        finally:
            await _quietly_unsubscribe(subscription)

    # --- selection --------------------------------------------------------------------------------

    def _leaders(self, reports: Mapping[str, list[ServerReport]], previous: Snapshot | None) -> _Selection:
        """Each selected stream and consumer from its leader; known ones without a leader report kept."""
        filters = self._settings.filters
        selection = _Selection()
        for server, server_reports in reports.items():
            for account in (a for report in server_reports for a in report.accounts):
                if not filters.account_selected(account.name):
                    continue
                for entry in account.streams:
                    name = entry["config"]["name"]
                    if not filters.stream_selected(name):
                        continue
                    if self._plan.in_shard(account.name, name):
                        selection.add(
                            server, account.name, entry, filters.consumer_selected, self._label_keys
                        )
                    else:
                        selection.add_elsewhere(account.name, entry, filters.consumer_selected)
        if previous is not None:
            selection.carry_over(previous, answered=set(reports))
        self._reported_at = selection.expire(
            self._reported_at, time.monotonic(), self._settings.collection.stale_data_ttl_seconds
        )
        return selection

    def _accounts(
        self,
        reports: Mapping[str, list[ServerReport]],
        selection: _Selection,
    ) -> tuple[AccountState, ...]:
        """Per account: usage and API counters summed over servers, streams and consumers counted."""
        usage: dict[str, list[int]] = {}
        for account in (a for server_reports in reports.values() for r in server_reports for a in r.accounts):
            if self._settings.filters.account_selected(account.name):
                totals = usage.setdefault(account.name, [0, 0, 0, 0])
                totals[0] += account.memory_bytes
                totals[1] += account.storage_bytes
                totals[2] += account.api_requests
                totals[3] += account.api_errors
        elsewhere = selection.elsewhere
        stream_counts = _count(key[0] for key in (*selection.streams, *(k for k in elsewhere if len(k) == 2)))
        consumer_counts = _count(
            key[0] for key in (*selection.consumers, *(k for k in elsewhere if len(k) == 3))
        )
        return tuple(
            AccountState(
                account=name,
                memory_bytes=memory,
                storage_bytes=storage,
                max_memory_bytes=None,
                max_storage_bytes=None,
                streams=stream_counts.get(name, 0),
                consumers=consumer_counts.get(name, 0),
                api_requests=requests,
                api_errors=errors,
            )
            for name, (memory, storage, requests, errors) in sorted(usage.items())
        )

    def _log_partial_state(self, error: str | None) -> None:
        # Logged on change only; the collection loop counts every failing cycle in a metric.
        if error is not None and not self._failing:
            logger.warning(
                "a server's JetStream report was unusable; its data is kept or left out: %s", error
            )
        elif error is None and self._failing:
            logger.info("every server's JetStream report is usable again")
        self._failing = error is not None


def _count(keys: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    return counts


async def _receive(subscription: Any, deadline: float, wanted: int | None, *, waited: bool) -> list[Msg]:
    """Replies until ``wanted`` arrived (None: any number), a quiet gap passed after one, or the deadline."""
    replies: list[Msg] = []
    while wanted is None or len(replies) < wanted:
        remaining = deadline - time.monotonic()
        wait = remaining if not (replies or waited) else min(remaining, QUIET_GAP_SECONDS)
        if wait <= 0:
            break
        try:
            replies.append(await subscription.next_msg(timeout=wait))
        except nats.errors.TimeoutError:
            break
    return replies


def _decode(msg: Msg) -> ServerReport | str:
    """One reply -> its report, or a one-line reason it is unusable (never raises)."""
    data = msg.data
    try:
        if msg.headers and msg.headers.get("Content-Encoding") == "gzip":
            data = gzip.decompress(data)
        reply = orjson.loads(data)  # as for the JetStream API: decoding is the largest share of the cycle
        if not isinstance(reply, dict):
            return f"{JSZ_SUBJECT}: a reply is not a JSON object"
        return parse_jsz_reply(reply)
    except JszReplyError as exc:
        return f"{JSZ_SUBJECT}: {exc}"
    except (OSError, EOFError, ValueError, KeyError, TypeError, RecursionError) as exc:
        return f"{JSZ_SUBJECT}: unusable reply ({type(exc).__name__}: {exc})"


async def _quietly_unsubscribe(subscription: Any) -> None:
    try:
        await subscription.unsubscribe()
    except nats.errors.Error:
        logger.debug("unsubscribing the JSZ reply inbox failed", exc_info=True)
