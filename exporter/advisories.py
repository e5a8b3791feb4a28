"""JetStream delivery-failure advisories -> per-consumer counters.

The server publishes one advisory per NAK, per message that exhausted ``max_deliver`` (when the consumer
next tries to deliver it, i.e. on the next pull) and per ``term()``. Counting them is the only way to see
these events: ``ConsumerInfo`` keeps no such totals.

Advisories are plain core-NATS messages, not stored anywhere: those published while the exporter is
disconnected are lost to it, so the counters undercount across an outage. nats-py re-sends the
subscriptions itself after a reconnect, so counting resumes without help from here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from exporter.logs import StateLog
from exporter.snapshot import AdvisoryCounts, ConsumerKey

log = logging.getLogger("exporter.advisories")

ADVISORY_PREFIX: Final = "$JS.EVENT.ADVISORY.CONSUMER."
# A malformed advisory is logged at most this often per kind; the rest only add to the counter.
MALFORMED_LOG_INTERVAL_SECONDS: Final = 300.0


@dataclass(frozen=True, slots=True)
class AdvisoryKind:
    """One advisory subject family: the subject token, the JSON ``type`` and the counter it feeds."""

    token: str
    type: str
    field: str

    @property
    def subject(self) -> str:
        return f"{ADVISORY_PREFIX}{self.token}.>"


ADVISORY_KINDS: Final = (
    AdvisoryKind("MAX_DELIVERIES", "io.nats.jetstream.advisory.v1.max_deliver", "max_deliveries_exceeded"),
    AdvisoryKind("MSG_TERMINATED", "io.nats.jetstream.advisory.v1.terminated", "terminated"),
    # MSG_NAKED is the subject the server publishes on, whatever other names some documents give it.
    AdvisoryKind("MSG_NAKED", "io.nats.jetstream.advisory.v1.nak", "naks"),
)


class MalformedAdvisoryError(ValueError):
    """An advisory whose payload is not the JSON object the server documents."""


def parse_advisory(kind: AdvisoryKind, data: bytes) -> tuple[str, str]:
    """(stream, consumer) named by one advisory payload; raises MalformedAdvisoryError."""
    try:
        document: Any = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedAdvisoryError(f"not JSON ({exc.__class__.__name__})") from None
    if not isinstance(document, dict):
        raise MalformedAdvisoryError(f"expected a JSON object, got {type(document).__name__}")
    advisory_type = document.get("type")
    if advisory_type != kind.type:
        raise MalformedAdvisoryError(f"type is {advisory_type!r}, expected {kind.type!r}")
    stream, consumer = document.get("stream"), document.get("consumer")
    if not isinstance(stream, str) or not stream:
        raise MalformedAdvisoryError("missing or non-string 'stream'")
    if not isinstance(consumer, str) or not consumer:
        raise MalformedAdvisoryError("missing or non-string 'consumer'")
    return stream, consumer


def _log_malformed(malformed_log: StateLog, kind: AdvisoryKind, subject: str, reason: str) -> None:
    """The first malformed advisory of each kind, then at most one line per interval with a tally."""
    held_back = malformed_log.suppressed(kind.token)
    malformed_log.enter(
        "malformed",
        logging.WARNING,
        "ignoring a malformed %s advisory on %s: %s%s",
        kind.token,
        # The subject is the server's (or whoever published garbage on it); bounded for the log line.
        subject[:200],
        reason,
        f" ({held_back} more malformed {kind.token} advisories since the last report)" if held_back else "",
        key=kind.token,
    )


class AdvisoryCounter:
    """Counts delivery-failure advisories per consumer, labelled with the exporter's account.

    ``subscribe`` may be called again with a new connection (after the daemon rebuilt it): the old
    subscriptions are dropped first, so no advisory is ever counted twice.
    """

    def __init__(
        self,
        account: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        malformed_log_interval: float = MALFORMED_LOG_INTERVAL_SECONDS,
    ) -> None:
        self._account = account
        self._counts: dict[ConsumerKey, AdvisoryCounts] = {}
        self._malformed = 0
        self._log = StateLog(log, repeat_after=malformed_log_interval, clock=clock)
        self._nc: Client | None = None
        self._subscriptions: list[Subscription] = []
        self._subscribing = asyncio.Lock()

    @property
    def account(self) -> str:
        return self._account

    @property
    def malformed(self) -> int:
        """Advisories received on the counted subjects that could not be attributed to a consumer."""
        return self._malformed

    def counts(self) -> Mapping[ConsumerKey, AdvisoryCounts]:
        """A copy: the counters keep moving while a render reads this."""
        return dict(self._counts)

    def retain(self, known: Iterable[ConsumerKey]) -> None:
        """Forget consumers that no longer exist (or are filtered out), so the map cannot grow for ever.

        Only known consumers are exported; one that comes back starts again from 0, a counter reset that
        ``increase()`` and ``rate()`` handle.
        """
        keep = set(known)
        self._counts = {key: counts for key, counts in self._counts.items() if key in keep}

    async def subscribe(self, nc: Client) -> None:
        """Subscribe to the three advisory families on ``nc``; idempotent for the same live connection."""
        # Serialised: the connection task and the collection loop may both call it, and two interleaved
        # subscriptions would count every advisory twice.
        async with self._subscribing:
            if nc is self._nc and self._subscriptions and not nc.is_closed:
                return
            await self._subscribe(nc)

    async def _subscribe(self, nc: Client) -> None:
        await self.unsubscribe()
        subscriptions: list[Subscription] = []
        try:
            for kind in ADVISORY_KINDS:
                # A loop, not a comprehension: on failure the subscriptions made so far must be undone.
                subscriptions.append(await nc.subscribe(kind.subject, cb=self._handler(kind)))  # noqa: PERF401
            # The SUBs are only in the outgoing buffer until flushed: without this, advisories right after
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

    def record(self, kind: AdvisoryKind, subject: str, data: bytes) -> None:
        """Count one advisory; a malformed one is counted as such and logged (rate-limited), never raised."""
        try:
            stream, consumer = parse_advisory(kind, data)
        except MalformedAdvisoryError as exc:
            self._malformed += 1
            _log_malformed(self._log, kind, subject, str(exc))
            return
        key = (self._account, stream, consumer)
        current = self._counts.get(key, AdvisoryCounts())
        self._counts[key] = replace(current, **{kind.field: getattr(current, kind.field) + 1})

    def _handler(self, kind: AdvisoryKind) -> Callable[[Msg], Awaitable[None]]:
        async def on_advisory(msg: Msg) -> None:
            self.record(kind, msg.subject, msg.data)

        return on_advisory


async def _quietly_unsubscribe(subscription: Subscription) -> None:
    # Unsubscribing on a closed connection raises; the subscription is gone with it anyway.
    try:
        await subscription.unsubscribe()
    except Exception:
        log.debug("unsubscribe from %s failed", subscription.subject, exc_info=True)
