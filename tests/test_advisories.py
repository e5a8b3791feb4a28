"""Delivery-failure advisories: parsing, counting, malformed input and reconnects, on a real nats-server.

The platform spec's streams and its ``chat-handler`` consumer (durable, pull, explicit ack, ack_wait 30s,
max_deliver 3, deliver new, filter ``ai.chat.user.*.message``) are created exactly as configured there.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import nats
import nats.errors
import pytest
from nats.aio.client import Client
from support.jetstream import stream_state
from support.spec_platform import CHAT_HANDLER_CONFIG, chat_message, provision_platform
from support.waiting import wait_for

from exporter.advisories import (
    ACK_METRIC,
    EVENT_KINDS,
    MAX_EVENT_BYTES,
    Event,
    MalformedAdvisoryError,
    parse_advisory,
)
from exporter.connection import connect_nats
from exporter.intake import EventIntake
from exporter.natsserver import NatsServerProcess
from exporter.settings import NatsSettings
from exporter.snapshot import AdvisoryCounts, StreamEventCounts

ACCOUNT = "$G"
CHAT_STREAM = (ACCOUNT, "COMPANIONS_CHAT")
CHAT_KEY = (ACCOUNT, "COMPANIONS_CHAT", "chat-handler")
MAX_DELIVER = CHAT_HANDLER_CONFIG["max_deliver"]
KINDS = {kind.name: kind for kind in EVENT_KINDS}
NAK, MAX_DELIVERIES, TERMINATED = (
    KINDS["ADVISORY.CONSUMER.MSG_NAKED"],
    KINDS["ADVISORY.CONSUMER.MAX_DELIVERIES"],
    KINDS["ADVISORY.CONSUMER.MSG_TERMINATED"],
)
CHAT_TOKENS = "COMPANIONS_CHAT.chat-handler"

# Recorded from nats-server 2.15.1 (test_counts_naks_and_one_max_deliveries_advisory sees the same).
NAK_ADVISORY = (
    b'{"type":"io.nats.jetstream.advisory.v1.nak","id":"R8xVOnyXBl2bKTn9cEL2t4",'
    b'"timestamp":"2026-11-27T16:14:19.906277424Z","stream":"COMPANIONS_CHAT","consumer":"chat-handler",'
    b'"consumer_seq":1,"stream_seq":1,"deliveries":1}'
)
MAX_DELIVER_ADVISORY = (
    b'{"type":"io.nats.jetstream.advisory.v1.max_deliver","id":"R8xVOnyXBl2bKTn9cEL2vX",'
    b'"timestamp":"2026-11-27T16:14:20.408408546Z","stream":"COMPANIONS_CHAT","consumer":"chat-handler",'
    b'"stream_seq":1,"deliveries":3}'
)
TERMINATED_ADVISORY = (
    b'{"type":"io.nats.jetstream.advisory.v1.terminated","id":"R8xVOnyXBl2bKTn9cEL2wM",'
    b'"timestamp":"2026-11-27T16:14:21.912698477Z","stream":"COMPANIONS_CHAT","consumer":"chat-handler",'
    b'"consumer_seq":4,"stream_seq":2,"deliveries":1}'
)
ACK_METRIC_EVENT = (
    b'{"type":"io.nats.jetstream.metric.v1.consumer_ack","id":"x","timestamp":"2026-11-27T16:14:22Z",'
    b'"stream":"COMPANIONS_CHAT","consumer":"chat-handler","consumer_seq":5,"stream_seq":3,'
    b'"ack_time":42000000,"deliveries":2}'
)


def on(kind, tokens: str = CHAT_TOKENS) -> str:
    return f"{kind.prefix}.{tokens}"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def chat_intake(**limits: object) -> EventIntake:
    """An intake that knows the platform's chat stream and its chat-handler consumer."""
    intake = EventIntake(ACCOUNT, **limits)  # type: ignore[arg-type]
    intake.retain([CHAT_STREAM], [CHAT_KEY])
    return intake


# -- parsing and counting, no server ---------------------------------------------------------------------


def test_parses_the_servers_advisories():
    assert parse_advisory(NAK, on(NAK), NAK_ADVISORY) == Event(NAK, "COMPANIONS_CHAT", "chat-handler")
    assert parse_advisory(MAX_DELIVERIES, on(MAX_DELIVERIES), MAX_DELIVER_ADVISORY).consumer == "chat-handler"
    assert parse_advisory(TERMINATED, on(TERMINATED), TERMINATED_ADVISORY).stream == "COMPANIONS_CHAT"
    ack = parse_advisory(ACK_METRIC, on(ACK_METRIC), ACK_METRIC_EVENT)
    assert (ack.ack_seconds, ack.deliveries) == (0.042, 2)


@pytest.mark.parametrize(
    ("subject", "data", "reason"),
    [
        (on(NAK), b"garbage", "not JSON"),
        (on(NAK), b"\xff\xfe", "not JSON"),
        (on(NAK), b"[1, 2]", "expected a JSON object, got list"),
        (on(NAK), MAX_DELIVER_ADVISORY, "type is 'io.nats.jetstream.advisory.v1.max_deliver'"),
        (on(NAK), b'{"type":"io.nats.jetstream.advisory.v1.nak","consumer":"chat-handler"}', "'stream'"),
        (
            on(NAK),
            b'{"type":"io.nats.jetstream.advisory.v1.nak","stream":"COMPANIONS_CHAT","consumer":7}',
            "'consumer'",
        ),
        (on(NAK, "COMPANIONS_CHAT.other"), NAK_ADVISORY, "'consumer' differs"),
        (on(NAK, "OTHER.chat-handler"), NAK_ADVISORY, "'stream' differs"),
        (on(NAK, "COMPANIONS_CHAT"), NAK_ADVISORY, "subject does not name a consumer"),
        (on(NAK, "A.b.c"), NAK_ADVISORY, "subject does not name a consumer"),
        (on(NAK), b"[" * 100_000, "exceeds"),
        (on(NAK), b"[" * 4_000 + b"]" * 4_000, r"not JSON \(RecursionError\)"),
        (on(NAK), b"9" * 200_000, "exceeds"),
        (on(NAK), b"9" * 5_000, r"not JSON \(ValueError\)"),
        (on(NAK), b" " * (MAX_EVENT_BYTES + 1), "exceeds"),
        (on(ACK_METRIC), ACK_METRIC_EVENT.replace(b'"ack_time":42000000', b'"ack_time":-1'), "'ack_time'"),
        (on(ACK_METRIC), ACK_METRIC_EVENT.replace(b'"ack_time":42000000', b'"ack_time":true'), "'ack_time'"),
        (on(ACK_METRIC), ACK_METRIC_EVENT.replace(b'"deliveries":2', b'"deliveries":0'), "'deliveries'"),
        (on(ACK_METRIC), ACK_METRIC_EVENT.replace(b'"deliveries":2', b'"deliveries":"2"'), "'deliveries'"),
    ],
)
def test_rejects_malformed_advisories(subject, data, reason):
    with pytest.raises(MalformedAdvisoryError, match=reason):
        parse_advisory(NAK if "ADVISORY" in subject else ACK_METRIC, subject, data)


def test_counts_per_consumer_and_kind_and_returns_copies():
    intake = chat_intake()
    intake.record(NAK, on(NAK), NAK_ADVISORY)
    intake.record(NAK, on(NAK), NAK_ADVISORY)
    intake.record(MAX_DELIVERIES, on(MAX_DELIVERIES), MAX_DELIVER_ADVISORY)
    before = intake.counts()
    intake.record(TERMINATED, on(TERMINATED), TERMINATED_ADVISORY)
    assert before == {CHAT_KEY: AdvisoryCounts(max_deliveries_exceeded=1, terminated=0, naks=2)}
    assert intake.counts() == {CHAT_KEY: AdvisoryCounts(max_deliveries_exceeded=1, terminated=1, naks=2)}
    assert intake.malformed == 0


def test_elections_quorum_loss_and_ack_samples_are_counted():
    intake = chat_intake()
    stream_elected, stream_lost, consumer_elected, consumer_lost = (
        KINDS[f"ADVISORY.{name}"]
        for name in (
            "STREAM.LEADER_ELECTED",
            "STREAM.QUORUM_LOST",
            "CONSUMER.LEADER_ELECTED",
            "CONSUMER.QUORUM_LOST",
        )
    )
    for kind in (stream_elected, stream_elected, stream_lost):
        payload = {"type": kind.type, "stream": "COMPANIONS_CHAT", "leader": "n1", "replicas": []}
        intake.record(kind, on(kind, "COMPANIONS_CHAT"), json.dumps(payload).encode())
    for kind in (consumer_elected, consumer_lost, consumer_lost):
        payload = {"type": kind.type, "stream": "COMPANIONS_CHAT", "consumer": "chat-handler"}
        intake.record(kind, on(kind), json.dumps(payload).encode())
    intake.record(ACK_METRIC, on(ACK_METRIC), ACK_METRIC_EVENT)
    assert intake.malformed == 0
    assert intake.stream_counts() == {CHAT_STREAM: StreamEventCounts(leader_elections=2, quorum_lost=1)}
    assert intake.counts() == {CHAT_KEY: AdvisoryCounts(leader_elections=1, quorum_lost=2)}
    histograms = intake.ack_histograms()[CHAT_KEY]
    assert (histograms.latency_seconds.count, histograms.latency_seconds.sum) == (1, 0.042)
    assert histograms.deliveries.cumulative_counts[:3] == (0, 1, 1)  # le 1, 2, 3


def test_retain_forgets_what_is_gone_and_unknown_names_are_bounded():
    intake = chat_intake(unknown_limit=2)
    intake.record(NAK, on(NAK), NAK_ADVISORY)
    for n in range(5):  # five consumers the last collection did not see: two are kept, three dropped
        payload = json.loads(NAK_ADVISORY) | {"consumer": f"new-{n}"}
        intake.record(NAK, on(NAK, f"COMPANIONS_CHAT.new-{n}"), json.dumps(payload).encode())
    assert len(intake.counts()) == 3
    assert intake.dropped == 3
    new_zero = (ACCOUNT, "COMPANIONS_CHAT", "new-0")
    intake.retain([CHAT_STREAM], [CHAT_KEY, new_zero])  # new-0 now exists; chat-handler still does
    assert set(intake.counts()) == {CHAT_KEY, new_zero}
    intake.retain_snapshot(None)  # nothing served: nothing kept
    assert intake.counts() == {}
    assert intake.state_size == 0


def test_malformed_advisories_are_counted_and_logged_rate_limited(caplog):
    clock = FakeClock()
    intake = chat_intake(clock=clock, log_interval=60.0)
    nak_subject, term_subject = on(NAK, "S.C"), on(TERMINATED, "S.C")
    with caplog.at_level(logging.WARNING, logger="exporter.advisories"):
        for _ in range(5):
            intake.record(NAK, nak_subject, b"garbage")
        intake.record(TERMINATED, term_subject, b"{}")
        clock.now += 61
        intake.record(NAK, nak_subject, b"[]")
    messages = [record.getMessage() for record in caplog.records]
    assert intake.malformed == 7
    assert intake.counts() == {}
    assert messages == [
        (
            f"ignoring a malformed ADVISORY.CONSUMER.MSG_NAKED event on {nak_subject}: "
            "not JSON (JSONDecodeError)"
        ),
        (
            f"ignoring a malformed ADVISORY.CONSUMER.MSG_TERMINATED event on {term_subject}: "
            "type is 'None', expected 'io.nats.jetstream.advisory.v1.terminated'"
        ),
        (
            f"ignoring a malformed ADVISORY.CONSUMER.MSG_NAKED event on {nak_subject}: "
            "expected a JSON object, got list (4 more since the last report)"
        ),
    ]


# -- against a real server -------------------------------------------------------------------------------


@pytest.fixture
async def platform(nats_server: NatsServerProcess) -> AsyncIterator[Client]:
    """The application side: a connection with the spec's streams and consumer in place."""
    nc = await nats.connect(nats_server.url)
    await provision_platform(nc)
    try:
        yield nc
    finally:
        await nc.close()


@pytest.fixture
async def intake() -> AsyncIterator[EventIntake]:
    intake = chat_intake()
    try:
        yield intake
    finally:
        await intake.close()


async def fetch_one(nc: Client, wait: float = 2.0):
    sub = await nc.jetstream().pull_subscribe_bind(durable="chat-handler", stream="COMPANIONS_CHAT")
    try:
        messages = await sub.fetch(1, timeout=wait)
    finally:
        await sub.unsubscribe()
    assert len(messages) == 1
    return messages[0]


async def test_counts_naks_and_one_max_deliveries_advisory(platform, exporter_nc, intake):
    counter = intake
    await counter.subscribe(exporter_nc)
    await platform.jetstream().publish("ai.chat.user.user-123.message", chat_message("user-123", "1"))
    for delivery in range(1, MAX_DELIVER + 1):
        msg = await fetch_one(platform)
        assert msg.metadata.num_delivered == delivery
        await msg.nak()
    await platform.flush()
    await wait_for(
        lambda: counter.counts().get(CHAT_KEY, AdvisoryCounts()).naks == MAX_DELIVER, message="NAKs"
    )
    # The server gives up on the message when it next tries to deliver it, i.e. on the next pull.
    assert counter.counts()[CHAT_KEY].max_deliveries_exceeded == 0
    sub = await platform.jetstream().pull_subscribe_bind(durable="chat-handler", stream="COMPANIONS_CHAT")
    with pytest.raises(nats.errors.TimeoutError):
        await sub.fetch(1, timeout=0.5)  # nothing is delivered any more
    await wait_for(
        lambda: counter.counts()[CHAT_KEY].max_deliveries_exceeded == 1, message="the max-deliveries advisory"
    )
    # Another pull (with another message delivered and acked) does not report the dead message again.
    await platform.jetstream().publish("ai.chat.user.user-123.message", chat_message("user-123", "2"))
    msg = (await sub.fetch(1, timeout=2))[0]
    assert msg.data == chat_message("user-123", "2")
    await msg.ack_sync()
    await exporter_nc.flush()
    assert counter.counts() == {CHAT_KEY: AdvisoryCounts(max_deliveries_exceeded=1, terminated=0, naks=3)}
    assert counter.malformed == 0


async def test_counts_terminated_messages_republished_to_the_dead_letter_queue(platform, exporter_nc, intake):
    counter = intake
    await counter.subscribe(exporter_nc)
    js = platform.jetstream()
    for n in range(4):
        await js.publish(f"ai.chat.user.user-{n}.message", chat_message(f"user-{n}", str(n)))
    sub = await js.pull_subscribe_bind(durable="chat-handler", stream="COMPANIONS_CHAT")
    terminated = 0
    while terminated < 4:
        for msg in await sub.fetch(4 - terminated, timeout=2):
            # The spec's permanent-failure path: republish to the dead-letter queue, then terminate.
            await js.publish("ai.dlq.chat", msg.data)
            await msg.term()
            terminated += 1
    await platform.flush()
    await wait_for(
        lambda: counter.counts().get(CHAT_KEY, AdvisoryCounts()).terminated == 4,
        message="terminated advisories",
    )
    state = await stream_state(platform, "AI_DLQ")
    assert state["messages"] == 4
    await exporter_nc.flush()
    assert counter.counts() == {CHAT_KEY: AdvisoryCounts(max_deliveries_exceeded=0, terminated=4, naks=0)}


async def test_malformed_advisories_are_counted_and_do_not_stop_counting(platform, exporter_nc, intake):
    counter = intake
    await counter.subscribe(exporter_nc)
    # Anyone allowed to publish there can send garbage on an advisory subject.
    await platform.publish(
        "$JS.EVENT.ADVISORY.CONSUMER.MSG_NAKED.COMPANIONS_CHAT.chat-handler", b"\x00garbage"
    )
    await platform.publish("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.X.Y", b'{"type":"something.else"}')
    await platform.publish("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.X.Y", b"[]")
    await platform.jetstream().publish("ai.chat.user.user-9.message", chat_message("user-9", "1"))
    msg = await fetch_one(platform)
    await msg.nak()
    await platform.flush()
    await wait_for(lambda: counter.malformed == 3, message="three malformed advisories")
    await wait_for(lambda: CHAT_KEY in counter.counts(), message="the genuine NAK advisory")
    assert counter.counts() == {CHAT_KEY: AdvisoryCounts(naks=1)}


async def test_subscribing_again_never_counts_twice(platform, exporter_nc, nats_server, intake):
    counter = intake
    await counter.subscribe(exporter_nc)
    await counter.subscribe(exporter_nc)  # the same live connection: nothing changes
    other = await connect_nats(NatsSettings(servers=(nats_server.url,)))
    try:
        await counter.subscribe(other)  # a rebuilt connection: the old subscriptions are dropped
        await platform.jetstream().publish("ai.chat.user.user-1.message", chat_message("user-1", "1"))
        msg = await fetch_one(platform)
        await msg.nak()
        await platform.flush()
        await wait_for(lambda: CHAT_KEY in counter.counts(), message="the NAK advisory")
        await other.flush()
        await exporter_nc.flush()
        assert counter.counts() == {CHAT_KEY: AdvisoryCounts(naks=1)}
    finally:
        await counter.unsubscribe()
        await other.close()


async def test_counters_keep_counting_after_the_server_restarts(platform, exporter_nc, nats_server, intake):
    counter = intake
    await counter.subscribe(exporter_nc)
    previous_reconnects = exporter_nc.stats["reconnects"]
    await platform.jetstream().publish("ai.chat.user.user-5.message", chat_message("user-5", "1"))
    msg = await fetch_one(platform)
    await msg.nak()
    await platform.flush()
    await wait_for(lambda: CHAT_KEY in counter.counts(), message="the first NAK advisory")
    # Acknowledged before the restart: a message still pending then is only redelivered after ack_wait.
    await (await fetch_one(platform)).ack_sync()
    await platform.close()

    # Same port, same store: the stream and the consumer survive.
    await asyncio.to_thread(nats_server.restart)
    await wait_for(
        lambda: exporter_nc.is_connected and exporter_nc.stats["reconnects"] > previous_reconnects,
        timeout=15,
        message="the exporter's connection to come back",
    )
    app = await nats.connect(nats_server.url)
    try:
        await app.jetstream().publish("ai.chat.user.user-5.message", chat_message("user-5", "2"))
        msg = await fetch_one(app)
        assert msg.data == chat_message("user-5", "2")
        await msg.nak()
        await app.flush()
        await wait_for(
            lambda: counter.counts()[CHAT_KEY].naks == 2, message="the NAK advisory after the restart"
        )
    finally:
        await app.close()
    assert counter.counts() == {CHAT_KEY: AdvisoryCounts(naks=2)}


async def test_drops_by_the_client_itself_are_counted_only_for_its_own_subscriptions(exporter_nc, intake):
    await intake.subscribe(exporter_nc)
    other = await exporter_nc.subscribe("unrelated")
    assert not intake.client_dropped(other)
    assert not intake.client_dropped(None)
    assert intake.client_dropped(intake.subscriptions[0])
    assert intake.dropped == 1
