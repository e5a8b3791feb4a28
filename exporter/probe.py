"""The end-to-end probe: publish one message to a stream of the exporter's own and read it back.

Collection only asks JetStream questions, and a JetStream that answers them can still be unable to store
a message: its disk is full, the stream's replica group has no quorum, a stream is at a limit with
``discard: new``. The probe finds out the way an application would. Each run publishes one message to
the probe stream (created if missing with the ``probe.*`` settings, never deleted), waits for JetStream's
acknowledgement, and reads the message back through an ephemeral pull consumer of the probe's own,
filtered on the probe subject. It measures two latencies: publish until acknowledgement (the message is
stored, by a quorum of replicas when replicated) and publish until the message came back through the
consumer (storage plus delivery, what a consumer of a real stream sees at best).

A run is bounded by ``probe.timeout`` and never raises: each failure is counted under the stage it
happened in (``exporter.stages.ProbeStage``), and logged once when the probe's state changes.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.nuid import NUID

from exporter.histogram import Histogram
from exporter.logs import StateLog
from exporter.settings import ProbeSettings
from exporter.snapshot import ProbeHealth
from exporter.stages import ProbeStage

log = logging.getLogger(__name__)

# Loopback round trips take about a millisecond; a replicated stream on a slow disk, tens to hundreds;
# anything past the last bound is already a failure waiting for its timeout.
PROBE_LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
# A bound on the stream created for the probe, whatever probe.max_age says: each exporter adds one message
# per interval, so this is hours of probes even with several exporters sharing the stream.
PROBE_STREAM_MAX_MESSAGES = 10_000
# The consumer outlives a few missed runs (an outage, a slow cycle), yet is gone soon after the exporter.
MIN_CONSUMER_INACTIVE_SECONDS = 300.0


class ProbeFailedError(Exception):
    """A failed probe at a known stage; ``set_up_again``: the stream or consumer may be gone."""

    def __init__(self, stage: ProbeStage, message: str, *, set_up_again: bool = False) -> None:
        super().__init__(message)
        self.stage = stage
        self.set_up_again = set_up_again


class Probe:
    """Runs one probe at a time with ``run``; ``health`` is what the next render shows.

    ``interval_seconds`` is how often ``run`` is called (it sizes the consumer's inactivity threshold);
    ``timer`` measures the latencies (monotonic).
    """

    def __init__(
        self,
        settings: ProbeSettings,
        *,
        domain: str | None,
        interval_seconds: float,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._domain = domain
        self._consumer_inactive_seconds = max(MIN_CONSUMER_INACTIVE_SECONDS, 4 * interval_seconds)
        self._timer = timer
        self._up = False
        self._failures: Counter[str] = Counter(dict.fromkeys(map(str, ProbeStage), 0))
        self._publish_ack = Histogram(PROBE_LATENCY_BUCKETS)
        self._round_trip = Histogram(PROBE_LATENCY_BUCKETS)
        self._state_log = StateLog(log)
        # Each message carries a token unique to this exporter and run, so the read-back recognises its own
        # message among those of other exporters sharing the stream, or of earlier runs that timed out.
        self._token_prefix = NUID().next().decode()
        self._run_numbers = itertools.count(1)
        # What a successful set-up left: the connection and its reconnect count, and the consumer.
        self._client: Client | None = None
        self._reconnects = 0
        self._subscription: JetStreamContext.PullSubscription | None = None
        self._set_up_again = False  # the last failure may have lost the stream or the consumer
        self._stage = ProbeStage.CONNECT  # the stage the current run has reached

    def health(self) -> ProbeHealth:
        return ProbeHealth(
            up=self._up,
            publish_ack_seconds=self._publish_ack.data(),
            round_trip_seconds=self._round_trip.data(),
            failures=dict(self._failures),
        )

    async def run(self, nc: Client | None) -> bool:
        """One probe on ``nc``, bounded by ``probe.timeout``; True when the message came back."""
        timeout = self._settings.timeout_seconds
        self._stage = ProbeStage.CONNECT
        try:
            async with asyncio.timeout(timeout):
                await self._probe(nc)
        except ProbeFailedError as failure:
            self._failed(failure.stage, str(failure), set_up_again=failure.set_up_again)
        except TimeoutError:
            # Counted where it struck. A publish without answer is a leaderless stream, which recovers by
            # itself; any other stage may have lost the stream or the consumer: set them up again.
            stage = self._stage
            self._failed(stage, f"no answer within {timeout:g}s", set_up_again=stage != ProbeStage.PUBLISH)
        except Exception as exc:  # whatever NATS raises is a failed probe, never a crash
            log.debug("probe failed unexpectedly", exc_info=True)
            self._failed(self._stage, f"{type(exc).__name__}: {exc}", set_up_again=True)
        else:
            self._up = True
            self._state_log.enter("ok", logging.INFO, "probe succeeded: stream %s", self._settings.stream)
        return self._up

    async def close(self) -> None:
        """Stop reading from the consumer (the server removes it once it has been inactive)."""
        await self._drop_subscription()

    async def _probe(self, nc: Client | None) -> None:
        if nc is None or not nc.is_connected:
            raise ProbeFailedError(ProbeStage.CONNECT, "not connected to NATS", set_up_again=True)
        js = nc.jetstream(domain=self._domain, timeout=self._settings.timeout_seconds)
        self._stage = ProbeStage.SETUP
        subscription = await self._set_up(nc, js)
        self._stage = ProbeStage.PUBLISH
        token = f"{self._token_prefix}.{next(self._run_numbers)}".encode()
        started = self._timer()
        await self._publish(js, token)
        self._publish_ack.observe(self._timer() - started)
        self._stage = ProbeStage.RECEIVE
        while True:  # messages of other exporters or of earlier runs are skipped; the timeout bounds this
            messages = await subscription.fetch(batch=1, timeout=self._settings.timeout_seconds)
            if any(message.data == token for message in messages):
                break
        self._round_trip.observe(self._timer() - started)

    async def _set_up(self, nc: Client, js: JetStreamContext) -> JetStreamContext.PullSubscription:
        """The consumer of the last set-up while the connection is the same; else a new one (and the
        stream, created when missing)."""
        reconnects = int(nc.stats["reconnects"])
        current = self._client is nc and self._reconnects == reconnects and not self._set_up_again
        if self._subscription is not None and current:
            return self._subscription
        await self._drop_subscription()
        settings = self._settings
        try:
            try:
                await js.stream_info(settings.stream)
            except nats.js.errors.NotFoundError:
                await js.add_stream(self._stream_config())
                log.info("created the probe stream %s", settings.stream)
            subscription = await js.pull_subscribe(
                settings.subject,
                stream=settings.stream,
                config=ConsumerConfig(
                    deliver_policy=DeliverPolicy.NEW,
                    ack_policy=AckPolicy.NONE,
                    inactive_threshold=self._consumer_inactive_seconds,
                    mem_storage=True,
                ),
            )
        except nats.js.errors.APIError as exc:
            raise ProbeFailedError(ProbeStage.SETUP, f"{settings.stream}: {exc}", set_up_again=True) from None
        self._client, self._reconnects, self._subscription = nc, reconnects, subscription
        self._set_up_again = False
        return subscription

    def _stream_config(self) -> StreamConfig:
        settings = self._settings
        return StreamConfig(
            name=settings.stream,
            description="nats-jetstream-exporter end-to-end probe",
            subjects=[settings.subject],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType(settings.storage),
            num_replicas=settings.replicas,
            max_age=settings.max_age_seconds,
            max_msgs=PROBE_STREAM_MAX_MESSAGES,
            discard=DiscardPolicy.OLD,
        )

    async def _publish(self, js: JetStreamContext, token: bytes) -> None:
        settings = self._settings
        try:
            # stream=: the server refuses the message unless the probe stream is the one storing it.
            await js.publish(
                settings.subject, token, timeout=settings.timeout_seconds, stream=settings.stream
            )
        except nats.js.errors.NoStreamResponseError:
            # Nobody answered: the stream is gone (deleted), or it has no leader (no quorum). Only a gone
            # stream needs the set-up again; a leaderless one stays a publish failure until it recovers.
            missing = await self._stream_missing(js)
            reason = "the probe stream is missing" if missing else "the probe stream has no leader"
            raise ProbeFailedError(ProbeStage.PUBLISH, reason, set_up_again=missing) from None
        except nats.js.errors.APIError as exc:
            raise ProbeFailedError(
                ProbeStage.PUBLISH, f"{settings.stream} refused the message: {exc}"
            ) from None

    async def _stream_missing(self, js: JetStreamContext) -> bool:
        try:
            await js.stream_info(self._settings.stream)
        except nats.js.errors.NotFoundError:
            return True
        except (nats.errors.Error, TimeoutError):  # no answer, or JetStream unavailable: no quorum
            return False
        return False

    def _failed(self, stage: ProbeStage, message: str, *, set_up_again: bool) -> None:
        self._up = False
        self._failures[stage] += 1
        self._set_up_again = self._set_up_again or set_up_again
        failed = f"probe failed at {stage}: {message}"
        self._state_log.enter(failed, logging.WARNING, "%s", failed)

    async def _drop_subscription(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            try:
                await subscription.unsubscribe()
            except Exception:  # a closed connection has nothing left to unsubscribe
                log.debug("probe: unsubscribing the old consumer failed", exc_info=True)
