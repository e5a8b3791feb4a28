"""One bounded intake for everything JetStream publishes unasked: advisories and sampled ack metrics.

The client's callback path only checks a payload's size and puts it on a bounded queue; one task drains
the queue, decodes, checks and counts. When the queue is full the event is dropped and counted
(``nats_exporter_dropped_advisories_total``): a flood costs the exporter some events, never its
connection, which the server would cut if the exporter stopped reading (slow consumer).

Only events for streams and consumers of the last collection are kept, plus a bounded number of unknown
ones created since (they become known at the next cycle, or are forgotten). ``retain`` runs every cycle,
successful or not, so whatever is published, the state stays bounded by what exists on the server.

Events published while the exporter is disconnected are lost to it, so the counters undercount across an
outage. nats-py re-sends the subscriptions after a reconnect (to whichever server of the cluster it
reconnects to), so counting resumes without help from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import replace
from typing import Final, TypeVar

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from exporter.advisories import (
    ACK_METRIC,
    EVENT_KINDS,
    MAX_EVENT_BYTES,
    Event,
    EventKind,
    MalformedAdvisoryError,
    parse_advisory,
)
from exporter.histogram import Histogram
from exporter.logs import StateLog
from exporter.settings import DEFAULT_ACK_LATENCY_BUCKETS
from exporter.snapshot import (
    AckHistograms,
    AdvisoryCounts,
    ConsumerKey,
    Snapshot,
    StreamEventCounts,
    StreamKey,
)

log = logging.getLogger("exporter.advisories")

# Events waiting to be decoded; beyond this they are dropped and counted. At most MAX_EVENT_BYTES each.
INTAKE_QUEUE_LIMIT: Final = 10_000
# Streams and consumers not seen by the last collection that events are still kept for until the next.
UNKNOWN_ENTITIES_LIMIT: Final = 1_000
# The client's own queue per subscription, between its socket reader and the handler that feeds ours. The
# handler only queues, so this holds what arrives between two turns of the event loop; it must be larger
# than that, or the client drops events itself, uncounted here (it reports a slow consumer instead).
CLIENT_PENDING_MSGS_LIMIT: Final = 65_536
CLIENT_PENDING_BYTES_LIMIT: Final = 32 * 1024 * 1024
# Upper bounds of nats_consumer_ack_deliveries: how many tries an acknowledged message took.
ACK_DELIVERIES_BUCKETS: Final = (1.0, 2.0, 3.0, 5.0, 10.0, 25.0, 50.0, 100.0)
# A malformed or dropped event is logged at most this often per kind; the rest only add to the counters.
LOG_INTERVAL_SECONDS: Final = 300.0
# The draining task lets the client read the socket after this many events.
_BATCH = 64


class _AckSamples:
    __slots__ = ("deliveries", "latency")

    def __init__(self, latency_buckets: tuple[float, ...]) -> None:
        self.latency = Histogram(latency_buckets)
        self.deliveries = Histogram(ACK_DELIVERIES_BUCKETS)


class EventIntake:
    """Subscribes to the counted events, and keeps their counts and histograms, bounded.

    ``subscribe`` may be called again with a new connection (after the daemon rebuilt it): the old
    subscriptions are dropped first, so no event is ever counted twice.
    """

    def __init__(  # noqa: PLR0913 (limits are parameters so that tests can make them small)
        self,
        account: str,
        *,
        queue_limit: int = INTAKE_QUEUE_LIMIT,
        unknown_limit: int = UNKNOWN_ENTITIES_LIMIT,
        ack_latency_buckets: Iterable[float] = DEFAULT_ACK_LATENCY_BUCKETS,
        clock: Callable[[], float] = time.monotonic,
        log_interval: float = LOG_INTERVAL_SECONDS,
    ) -> None:
        self._account = account
        self._queue: asyncio.Queue[tuple[EventKind, str, bytes]] = asyncio.Queue(maxsize=queue_limit)
        self._queue_limit = queue_limit
        self._unknown_limit = unknown_limit
        self._latency_buckets = tuple(ack_latency_buckets)
        Histogram(self._latency_buckets)  # fail here, not on the first event, when the bounds are invalid
        self._log = StateLog(log, repeat_after=log_interval, clock=clock)
        self._known_streams: frozenset[StreamKey] = frozenset()
        self._known_consumers: frozenset[ConsumerKey] = frozenset()
        self._unknown: set[tuple[str, ...]] = set()
        self._consumer_counts: dict[ConsumerKey, AdvisoryCounts] = {}
        self._stream_counts: dict[StreamKey, StreamEventCounts] = {}
        self._ack_samples: dict[ConsumerKey, _AckSamples] = {}
        self._malformed = 0
        self._dropped = 0
        self._nc: Client | None = None
        self._subscriptions: list[Subscription] = []
        self._subscribing = asyncio.Lock()
        self._worker: asyncio.Task[None] | None = None

    @property
    def account(self) -> str:
        return self._account

    @property
    def malformed(self) -> int:
        """Events received on the counted subjects that were not what the server publishes there."""
        return self._malformed

    @property
    def dropped(self) -> int:
        """Events not kept: the queue was full, or they named one unknown stream or consumer too many."""
        return self._dropped

    @property
    def state_size(self) -> int:
        """Entries held for streams and consumers (counts, histograms, admitted unknowns)."""
        return (
            len(self._consumer_counts)
            + len(self._stream_counts)
            + len(self._ack_samples)
            + len(self._unknown)
        )

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        return tuple(self._subscriptions)

    # -- what renders read (copies: the counters keep moving while a render reads them) -------------

    def counts(self) -> Mapping[ConsumerKey, AdvisoryCounts]:
        return dict(self._consumer_counts)

    def stream_counts(self) -> Mapping[StreamKey, StreamEventCounts]:
        return dict(self._stream_counts)

    def ack_histograms(self) -> Mapping[ConsumerKey, AckHistograms]:
        return {
            key: AckHistograms(samples.latency.data(), samples.deliveries.data())
            for key, samples in self._ack_samples.items()
        }

    # -- bounding ---------------------------------------------------------------------------------

    def retain(self, streams: Iterable[StreamKey], consumers: Iterable[ConsumerKey]) -> None:
        """Keep state only for these streams and consumers (the last collection's), every cycle.

        One that comes back later starts again from 0, a counter reset that ``increase()`` and ``rate()``
        handle. The allowance for unknown ones starts afresh.
        """
        self._known_streams = frozenset(streams)
        self._known_consumers = frozenset(consumers)
        self._unknown.clear()
        known_streams, known_consumers = self._known_streams, self._known_consumers
        self._stream_counts = {k: v for k, v in self._stream_counts.items() if k in known_streams}
        self._consumer_counts = {k: v for k, v in self._consumer_counts.items() if k in known_consumers}
        self._ack_samples = {k: v for k, v in self._ack_samples.items() if k in known_consumers}

    def retain_snapshot(self, snapshot: Snapshot | None) -> None:
        """``retain`` the streams and consumers of ``snapshot`` (None: nothing is served, keep nothing)."""
        if snapshot is None:
            self.retain((), ())
            return
        self.retain(
            ((s.account, s.name) for s in snapshot.streams),
            ((c.account, c.stream, c.name) for c in snapshot.consumers),
        )

    def _admitted(self, key: tuple[str, ...], known: frozenset[tuple[str, ...]]) -> bool:
        if key in known or key in self._unknown:
            return True
        if len(self._unknown) < self._unknown_limit:
            self._unknown.add(key)
            return True
        return False

    # -- subscribing ------------------------------------------------------------------------------

    async def subscribe(self, nc: Client) -> None:
        """Subscribe to every counted event on ``nc``; idempotent for the same live connection."""
        # Serialised: the connection task and the collection loop may both call it, and two interleaved
        # subscriptions would count every event twice.
        async with self._subscribing:
            if self._worker is None or self._worker.done():
                self._worker = asyncio.create_task(self._drain(), name="event-intake")
            if nc is self._nc and self._subscriptions and not nc.is_closed:
                return
            await self._subscribe(nc)

    async def _subscribe(self, nc: Client) -> None:
        await self.unsubscribe()
        subscriptions: list[Subscription] = []
        try:
            for kind in EVENT_KINDS:
                # A loop, not a comprehension: on failure the subscriptions made so far must be undone.
                subscriptions.append(  # noqa: PERF401
                    await nc.subscribe(
                        kind.subject,
                        cb=self._handler(kind),
                        pending_msgs_limit=CLIENT_PENDING_MSGS_LIMIT,
                        pending_bytes_limit=CLIENT_PENDING_BYTES_LIMIT,
                    )
                )
            # The SUBs are only in the outgoing buffer until flushed: without this, events right after
            # subscribe() returns could be missed.
            await nc.flush()
        except BaseException:
            for subscription in subscriptions:
                await _quietly_unsubscribe(subscription)
            raise
        self._nc = nc
        self._subscriptions = subscriptions

    async def unsubscribe(self) -> None:
        subscriptions, self._subscriptions = self._subscriptions, []
        self._nc = None
        for subscription in subscriptions:
            await _quietly_unsubscribe(subscription)

    async def close(self) -> None:
        """Unsubscribe and stop the draining task; what is still queued is discarded."""
        await self.unsubscribe()
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    async def drained(self) -> None:
        """Returns once everything queued so far has been processed."""
        await self._queue.join()

    # -- the two halves of the intake ---------------------------------------------------------------

    def offer(self, kind: EventKind, subject: str, data: bytes) -> None:
        """The callback path: queue one event, or count it as malformed (too large) or dropped (full)."""
        if len(data) > MAX_EVENT_BYTES:
            self._count_malformed(kind, subject, f"payload of {len(data)} bytes exceeds {MAX_EVENT_BYTES}")
            return
        try:
            self._queue.put_nowait((kind, subject, data))
        except asyncio.QueueFull:
            self._drop(f"dropping JetStream events: the intake queue of {self._queue_limit} is full")

    def client_dropped(self, subscription: Subscription | None) -> bool:
        """Count an event the client itself dropped (its queue was full) when it was for this intake.

        For the client's error callback, which hears of every such drop as a slow-consumer error: True
        when the subscription is one of this intake's, so that the caller need not log it.
        """
        if subscription is None or all(subscription is not own for own in self._subscriptions):
            return False
        self._drop("dropping JetStream events: the client's queue for them is full")
        return True

    def record(self, kind: EventKind, subject: str, data: bytes) -> None:
        """Decode and count one event; malformed is counted and logged (rate-limited), never raised."""
        try:
            event = parse_advisory(kind, subject, data)
        except MalformedAdvisoryError as exc:
            self._count_malformed(kind, subject, str(exc))
            return
        if event.kind.scope == "stream":
            stream_key = (self._account, event.stream)
            if not self._admitted(stream_key, self._known_streams):
                self._drop_unknown()
                return
            current_stream = self._stream_counts.get(stream_key, StreamEventCounts())
            self._stream_counts[stream_key] = _incremented(current_stream, kind.counter)
            return
        key = (self._account, event.stream, event.consumer)
        if not self._admitted(key, self._known_consumers):
            self._drop_unknown()
            return
        if kind is ACK_METRIC:
            self._observe_ack(key, event)
            return
        current = self._consumer_counts.get(key, AdvisoryCounts())
        self._consumer_counts[key] = _incremented(current, kind.counter)

    def _observe_ack(self, key: ConsumerKey, event: Event) -> None:
        samples = self._ack_samples.get(key)
        if samples is None:
            samples = self._ack_samples[key] = _AckSamples(self._latency_buckets)
        samples.latency.observe(event.ack_seconds)
        samples.deliveries.observe(event.deliveries)

    async def _drain(self) -> None:
        queue = self._queue
        while True:
            for _ in range(_BATCH):
                kind, subject, data = await queue.get()
                try:
                    self.record(kind, subject, data)
                except Exception:  # a bug in one event must not stop the intake
                    log.exception("failed to count a JetStream event on %s", subject[:200])
                finally:
                    queue.task_done()
            # get() does not yield while the queue is non-empty: let the client read the socket.
            await asyncio.sleep(0)

    def _count_malformed(self, kind: EventKind, subject: str, reason: str) -> None:
        self._malformed += 1
        # The subject is whoever published on it; bounded for the log line.
        self._warn(kind.name, f"ignoring a malformed {kind.name} event on {subject[:200]}: {reason}")

    def _drop(self, message: str) -> None:
        self._dropped += 1
        self._warn("dropped", message)

    def _warn(self, key: str, message: str) -> None:
        """The first line of each key, then at most one per interval with a tally of those held back."""
        held_back = self._log.suppressed(key)
        tally = f" ({held_back} more since the last report)" if held_back else ""
        self._log.enter("reported", logging.WARNING, "%s%s", message, tally, key=key)

    def _drop_unknown(self) -> None:
        self._drop(
            f"dropping JetStream events for more than {self._unknown_limit} streams and consumers that "
            "the last collection did not see"
        )

    def _handler(self, kind: EventKind) -> Callable[[Msg], Awaitable[None]]:
        async def on_event(msg: Msg) -> None:
            self.offer(kind, msg.subject, msg.data)

        return on_event


_Counts = TypeVar("_Counts", AdvisoryCounts, StreamEventCounts)


def _incremented(counts: _Counts, field: str) -> _Counts:
    return replace(counts, **{field: getattr(counts, field) + 1})


async def _quietly_unsubscribe(subscription: Subscription) -> None:
    # Unsubscribing on a closed connection raises; the subscription is gone with it anyway.
    try:
        await subscription.unsubscribe()
    except Exception:
        log.debug("unsubscribe from %s failed", subscription.subject, exc_info=True)
