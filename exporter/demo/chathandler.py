"""The platform's chat handler on the ``chat-handler`` pull consumer, failing on purpose.

It follows the spec's "Error Handling" section: a failed message is NAKed with a delay; on its final
delivery (``num_delivered == max_deliver``) it is republished to ``ai.dlq.chat`` and terminated. Which
messages fail is decided from the request id, so every redelivery of a message meets the same fate:

* ``failure_ratio``: fail on every delivery, so they end in the dead-letter stream;
* ``retry_ratio``: fail once, succeed on the redelivery (redeliveries without dead letters);
* ``abandon_ratio``: a handler bug: NAKed even on the final delivery, so the server gives up on them
  (the max-deliveries advisory) and they are lost without a dead letter.

Successful messages are answered as the platform does: pipeline events and a streamed response ending with a
``done`` marker (``ai.chat.response.stream.<request_id>``), or one reply on ``ai.chat.response.<request_id>``.

A message that cannot be handled (the connection fails mid-way, e.g. while reconnecting to a ``--nats-url``
server, or its payload is odd) is logged and NAKed, and a failed fetch is retried: neither ends the handler,
and so the demo. Only a fetch that keeps failing for ``fetch_grace_seconds`` (its consumer was deleted) or a
closed connection does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import random
import time
from dataclasses import dataclass

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext

from exporter.demo.messages import (
    DEAD_LETTER_CHAT_SUBJECT,
    done_marker,
    pack,
    pipeline_event,
    response_chunk,
    unpack,
)
from exporter.jsapi import JetStreamApi

log = logging.getLogger("exporter.demo")

CHAT_STREAM = "COMPANIONS_CHAT"
CHAT_CONSUMER = "chat-handler"
CHAT_RESPONSE_ROOT = "ai.chat.response.stream"
FETCH_WAIT_SECONDS = 1.0
MAX_PROCESSING_SECONDS = 5.0  # the log-normal tail is cut here, well inside the spec's ack_wait of 30s
FETCH_RETRY_SECONDS = 1.0  # pause after a failed fetch: a fetch can fail at once, and must not spin
API_TIMEOUT_SECONDS = 5.0

OK = "ok"
FAIL = "fail"  # every delivery fails
RETRY = "retry"  # the first delivery fails
ABANDON = "abandon"  # every delivery fails and the handler forgets the dead-letter step


@dataclass(frozen=True, slots=True)
class HandlerOptions:
    failure_ratio: float = 0.1
    retry_ratio: float = 0.1
    abandon_ratio: float = 0.02
    nak_delay_seconds: float = 1.0
    # Simulated work per message, so ack-pending and processing time are visible: log-normal around this
    # median (spread: its sigma), as real handlers are; 0.06 s and 1.0 give tens of ms to a few seconds.
    processing_seconds: float = 0.06
    processing_spread: float = 1.0
    batch: int = 10
    # Fetches failing for this long end the handler: its consumer is gone, not briefly out of reach.
    fetch_grace_seconds: float = 10.0

    def __post_init__(self) -> None:
        ratios = (self.failure_ratio, self.retry_ratio, self.abandon_ratio)
        if any(ratio < 0 or ratio > 1 for ratio in ratios) or sum(ratios) > 1:
            raise ValueError(
                "failure, retry and abandon ratios must each be within 0..1 and sum to at most 1"
            )
        delays = (
            self.nak_delay_seconds,
            self.processing_seconds,
            self.processing_spread,
            self.fetch_grace_seconds,
        )
        if min(delays) < 0:
            raise ValueError("delays must not be negative")
        if self.batch < 1:
            raise ValueError("batch must be at least 1")


@dataclass(slots=True)
class HandlerStats:
    """What the handler did since it started (for the demo's summary and the tests)."""

    acked: int = 0
    naked: int = 0
    dead_lettered: int = 0
    terminated: int = 0
    failed: int = 0  # messages whose handling raised (then NAKed)
    failed_fetches: int = 0


def message_fate(key: bytes, options: HandlerOptions) -> str:
    """OK, FAIL, RETRY or ABANDON, the same for every delivery of the message with this key."""
    position = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64
    for fate, ratio in (
        (FAIL, options.failure_ratio),
        (RETRY, options.retry_ratio),
        (ABANDON, options.abandon_ratio),
    ):
        if position < ratio:
            return fate
        position -= ratio
    return OK


class ChatHandler:
    """Pulls from ``chat-handler`` and handles each message; ``run()`` returns only by cancellation."""

    def __init__(
        self, nc: Client, options: HandlerOptions | None = None, *, domain: str | None = None
    ) -> None:
        self._nc = nc
        self._options = options or HandlerOptions()
        self._domain = domain
        self._max_deliver = -1
        self._fetch_failing_since: float | None = None
        self._random = random.Random()  # noqa: S311 (simulated work, not cryptography)
        self.stats = HandlerStats()

    async def run(self) -> None:
        api = JetStreamApi(self._nc, domain=self._domain, timeout_seconds=API_TIMEOUT_SECONDS)
        info = await api.request_json(f"CONSUMER.INFO.{CHAT_STREAM}.{CHAT_CONSUMER}")
        self._max_deliver = int(info.get("config", {}).get("max_deliver", -1))
        js = self._nc.jetstream(domain=self._domain)
        subscription = await js.pull_subscribe_bind(durable=CHAT_CONSUMER, stream=CHAT_STREAM)
        try:
            while True:
                _raise_if_cancel_was_swallowed()
                for message in await self._fetch(subscription):
                    await self._handle_or_nak(message)
        finally:
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()

    async def _fetch(self, subscription: JetStreamContext.PullSubscription) -> list[Msg]:
        """The next batch, or [] after a quiet second or a failed fetch (logged, then paused).

        The fetch runs in a task of its own so that cancelling the handler takes effect at once: on
        Python 3.11, nats-py's fetch can swallow a cancellation (an ``asyncio.wait_for`` race) and go on
        waiting for the server.
        """
        fetch = asyncio.create_task(subscription.fetch(self._options.batch, timeout=FETCH_WAIT_SECONDS))
        try:
            await asyncio.wait({fetch})
        except asyncio.CancelledError:
            fetch.cancel()
            fetch.add_done_callback(_consume_outcome)
            raise
        try:
            messages = fetch.result()
        except TimeoutError:  # nats-py raises both its own TimeoutError and asyncio's
            messages = []
        except nats.errors.Error as exc:
            now = time.monotonic()
            if self._fetch_failing_since is None:
                self._fetch_failing_since = now
            if self._nc.is_closed or now - self._fetch_failing_since >= self._options.fetch_grace_seconds:
                raise
            self.stats.failed_fetches += 1
            log.warning(
                "fetching from %s/%s failed (%s); retrying in %gs",
                CHAT_STREAM,
                CHAT_CONSUMER,
                _describe(exc),
                FETCH_RETRY_SECONDS,
            )
            await asyncio.sleep(FETCH_RETRY_SECONDS)
            return []
        self._fetch_failing_since = None
        return messages

    async def _handle_or_nak(self, msg: Msg) -> None:
        """Handle one message; when that fails, log it and NAK the message rather than end the handler."""
        try:
            await self._handle(msg)
        except (nats.errors.Error, TypeError, ValueError) as exc:
            self.stats.failed += 1
            log.warning("chat message not handled (%s): NAKed for a redelivery", _describe(exc))
            with contextlib.suppress(nats.errors.Error):
                await msg.nak(delay=self._options.nak_delay_seconds)
                self.stats.naked += 1

    async def _handle(self, msg: Msg) -> None:
        delivery = msg.metadata.num_delivered
        try:
            payload = unpack(msg.data)
            request_id = str(payload["request_id"])
            fate = message_fate(request_id.encode(), self._options)
        except (ValueError, KeyError):
            payload, request_id, fate = {}, "", FAIL  # undecodable: no retry will fix it
        await asyncio.sleep(self._processing_seconds())
        if fate == OK or (fate == RETRY and delivery > 1):
            await self._answer(payload, request_id)
            await msg.ack()
            self.stats.acked += 1
        elif fate == FAIL and delivery >= self._max_deliver > 0:
            await self._dead_letter(msg)
        else:
            await msg.nak(delay=self._options.nak_delay_seconds)
            self.stats.naked += 1

    def _processing_seconds(self) -> float:
        median, spread = self._options.processing_seconds, self._options.processing_spread
        if median <= 0:
            return 0.0
        return min(self._random.lognormvariate(math.log(median), spread), MAX_PROCESSING_SECONDS)

    async def _dead_letter(self, msg: Msg) -> None:
        """Republish to the DLQ, then terminate.

        A dead letter that could not be stored is not terminated but NAKed, so the server's max-deliveries
        advisory still reports the message (and, with limits retention, the original stays in its stream).
        """
        js = self._nc.jetstream(domain=self._domain)
        headers = {
            "X-Dead-Letter-Subject": msg.subject,
            "X-Dead-Letter-Stream": msg.metadata.stream,
            "X-Dead-Letter-Sequence": str(msg.metadata.sequence.stream),
            "X-Dead-Letter-Deliveries": str(msg.metadata.num_delivered),
        }
        try:
            await js.publish(DEAD_LETTER_CHAT_SUBJECT, msg.data, headers=headers)
        except nats.errors.Error as exc:
            log.warning("dead letter not stored (%s): NAKed instead of terminated", exc)
            await msg.nak(delay=self._options.nak_delay_seconds)
            self.stats.naked += 1
            return
        self.stats.dead_lettered += 1
        await msg.term()
        self.stats.terminated += 1

    async def _answer(self, payload: dict[str, object], request_id: str) -> None:
        user_id = str(payload.get("user_id", ""))
        now = time.time()
        await self._nc.publish(
            *_packed(
                pipeline_event("rag", "retrieved", request_id=request_id, user_id=user_id, now=now, top_k=5)
            )
        )
        if payload.get("enable_streaming"):
            for token in ("Sure", ",", " here", " you", " go", "."):
                await self._nc.publish(
                    *_packed(response_chunk(CHAT_RESPONSE_ROOT, request_id, token, now=time.time()))
                )
            await self._nc.publish(*_packed(done_marker(CHAT_RESPONSE_ROOT, request_id, now=time.time())))
        else:
            # The spec's non-streaming reply subject: no stream captures it.
            await self._nc.publish(
                f"ai.chat.response.{request_id}",
                pack({"request_id": request_id, "content": "Sure, here you go."}),
            )
        await self._nc.publish(
            *_packed(
                pipeline_event("llm", "completed", request_id=request_id, user_id=user_id, now=time.time())
            )
        )


def _raise_if_cancel_was_swallowed() -> None:
    """Honour a cancellation that a library call absorbed (nats-py's requests use ``asyncio.wait_for``)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _describe(exc: Exception) -> str:
    # Some nats-py errors have an empty str(); the class name still says what happened.
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _consume_outcome(task: asyncio.Task[list[Msg]]) -> None:
    """Retrieve an abandoned fetch's outcome, so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()


def _packed(message: tuple[str, dict[str, object]]) -> tuple[str, bytes]:
    subject, payload = message
    return subject, pack(payload)
