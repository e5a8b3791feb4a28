"""Delivery-failure advisories: parsing, counting, malformed input and reconnects, on a real nats-server.

The platform spec's streams and its ``chat-handler`` consumer (durable, pull, explicit ack, ack_wait 30s,
max_deliver 3, deliver new, filter ``ai.chat.user.*.message``) are created exactly as configured there.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import msgpack
import nats
import nats.errors
import pytest
from conftest import wait_for
from nats.aio.client import Client
from spec_platform import CHAT_HANDLER_CONFIG, provision_platform

from exporter.advisories import (
    ADVISORY_KINDS,
    AdvisoryCounter,
    MalformedAdvisoryError,
    parse_advisory,
)
from exporter.connection import connect_nats
from exporter.natsserver import NatsServerProcess
from exporter.settings import NatsSettings
from exporter.snapshot import AdvisoryCounts

ACCOUNT = "$G"
CHAT_KEY = (ACCOUNT, "COMPANIONS_CHAT", "chat-handler")
MAX_DELIVER = CHAT_HANDLER_CONFIG["max_deliver"]
KINDS = {kind.token: kind for kind in ADVISORY_KINDS}

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


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- parsing and counting, no server ---------------------------------------------------------------------


def test_parses_the_servers_advisories():
    assert parse_advisory(KINDS["MSG_NAKED"], NAK_ADVISORY) == ("COMPANIONS_CHAT", "chat-handler")
    assert parse_advisory(KINDS["MAX_DELIVERIES"], MAX_DELIVER_ADVISORY) == (
        "COMPANIONS_CHAT",
        "chat-handler",
    )
    assert parse_advisory(KINDS["MSG_TERMINATED"], TERMINATED_ADVISORY) == ("COMPANIONS_CHAT", "chat-handler")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"garbage", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "expected a JSON object, got list"),
        (MAX_DELIVER_ADVISORY, "type is 'io.nats.jetstream.advisory.v1.max_deliver'"),  # on the NAK subject
        (b'{"type":"io.nats.jetstream.advisory.v1.nak","consumer":"c"}', "'stream'"),
        (b'{"type":"io.nats.jetstream.advisory.v1.nak","stream":"S","consumer":7}', "'consumer'"),
        (b'{"type":"io.nats.jetstream.advisory.v1.nak","stream":"","consumer":"c"}', "'stream'"),
    ],
)
def test_rejects_malformed_advisories(data, reason):
    with pytest.raises(MalformedAdvisoryError, match=reason):
        parse_advisory(KINDS["MSG_NAKED"], data)


def test_counts_per_consumer_and_kind_and_returns_copies():
    counter = AdvisoryCounter("tenant-a")
    counter.record(
        KINDS["MSG_NAKED"], "$JS.EVENT.ADVISORY.CONSUMER.MSG_NAKED.COMPANIONS_CHAT.chat-handler", NAK_ADVISORY
    )
    counter.record(KINDS["MSG_NAKED"], "subject", NAK_ADVISORY)
    counter.record(KINDS["MAX_DELIVERIES"], "subject", MAX_DELIVER_ADVISORY)
    snapshot = counter.counts()
    counter.record(KINDS["MSG_TERMINATED"], "subject", TERMINATED_ADVISORY)
    key = ("tenant-a", "COMPANIONS_CHAT", "chat-handler")
    assert snapshot == {key: AdvisoryCounts(max_deliveries_exceeded=1, terminated=0, naks=2)}
    assert counter.counts() == {key: AdvisoryCounts(max_deliveries_exceeded=1, terminated=1, naks=2)}
    assert counter.malformed == 0


def test_retain_forgets_consumers_that_are_gone():
    counter = AdvisoryCounter("tenant-a")
    counter.record(KINDS["MSG_NAKED"], "subject", NAK_ADVISORY)
    gone = json.loads(NAK_ADVISORY) | {"consumer": "deleted-handler"}
    counter.record(KINDS["MSG_NAKED"], "subject", json.dumps(gone).encode())
    assert len(counter.counts()) == 2
    counter.retain([("tenant-a", "COMPANIONS_CHAT", "chat-handler")])
    assert list(counter.counts()) == [("tenant-a", "COMPANIONS_CHAT", "chat-handler")]


def test_malformed_advisories_are_counted_and_logged_rate_limited(caplog):
    clock = FakeClock()
    counter = AdvisoryCounter(ACCOUNT, clock=clock, malformed_log_interval=60.0)
    nak, term = KINDS["MSG_NAKED"], KINDS["MSG_TERMINATED"]
    with caplog.at_level(logging.WARNING, logger="exporter.advisories"):
        for _ in range(5):
            counter.record(nak, "$JS.EVENT.ADVISORY.CONSUMER.MSG_NAKED.S.C", b"garbage")
        counter.record(term, "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.S.C", b"{}")
        clock.now += 61
        counter.record(nak, "$JS.EVENT.ADVISORY.CONSUMER.MSG_NAKED.S.C", b"[]")
    messages = [record.getMessage() for record in caplog.records]
    assert counter.malformed == 7
    assert counter.counts() == {}
    nak_subject, term_subject = (
        "$JS.EVENT.ADVISORY.CONSUMER.MSG_NAKED.S.C",
        "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.S.C",
    )
    assert messages == [
        f"ignoring a malformed MSG_NAKED advisory on {nak_subject}: not JSON (JSONDecodeError)",
        (
            f"ignoring a malformed MSG_TERMINATED advisory on {term_subject}: "
            "type is None, expected 'io.nats.jetstream.advisory.v1.terminated'"
        ),
        (
            f"ignoring a malformed MSG_NAKED advisory on {nak_subject}: expected a JSON object, got list "
            "(4 more malformed MSG_NAKED advisories since the last report)"
        ),
    ]


# -- against a real server -------------------------------------------------------------------------------


async def stream_state(nc: Client, stream: str) -> dict[str, object]:
    reply = json.loads((await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=5)).data)
    assert "error" not in reply, reply
    state: dict[str, object] = reply["state"]
    return state


def chat_message(user: str, n: int) -> bytes:
    data: bytes = msgpack.packb(
        {"request_id": f"req-{user}-{n}", "user_id": user, "message": f"hello {n}", "enable_rag": True}
    )
    return data


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
async def exporter_nc(nats_server: NatsServerProcess) -> AsyncIterator[Client]:
    """The exporter's own connection, made the way the daemon makes it (reconnecting)."""
    nc = await connect_nats(NatsSettings(servers=(nats_server.url,)))
    try:
        yield nc
    finally:
        await nc.close()


async def fetch_one(nc: Client, wait: float = 2.0):
    sub = await nc.jetstream().pull_subscribe_bind(durable="chat-handler", stream="COMPANIONS_CHAT")
    try:
        messages = await sub.fetch(1, timeout=wait)
    finally:
        await sub.unsubscribe()
    assert len(messages) == 1
    return messages[0]


async def test_counts_naks_and_one_max_deliveries_advisory(platform, exporter_nc):
    counter = AdvisoryCounter(ACCOUNT)
    await counter.subscribe(exporter_nc)
    await platform.jetstream().publish("ai.chat.user.user-123.message", chat_message("user-123", 1))
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
    await platform.jetstream().publish("ai.chat.user.user-123.message", chat_message("user-123", 2))
    msg = (await sub.fetch(1, timeout=2))[0]
    assert msg.data == chat_message("user-123", 2)
    await msg.ack_sync()
    await exporter_nc.flush()
    assert counter.counts() == {CHAT_KEY: AdvisoryCounts(max_deliveries_exceeded=1, terminated=0, naks=3)}
    assert counter.malformed == 0


async def test_counts_terminated_messages_republished_to_the_dead_letter_queue(platform, exporter_nc):
    counter = AdvisoryCounter(ACCOUNT)
    await counter.subscribe(exporter_nc)
    js = platform.jetstream()
    for n in range(4):
        await js.publish(f"ai.chat.user.user-{n}.message", chat_message(f"user-{n}", n))
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


async def test_malformed_advisories_are_counted_and_do_not_stop_counting(platform, exporter_nc):
    counter = AdvisoryCounter(ACCOUNT)
    await counter.subscribe(exporter_nc)
    # Anyone allowed to publish there can send garbage on an advisory subject.
    await platform.publish(
        "$JS.EVENT.ADVISORY.CONSUMER.MSG_NAKED.COMPANIONS_CHAT.chat-handler", b"\x00garbage"
    )
    await platform.publish("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.X.Y", b'{"type":"something.else"}')
    await platform.publish("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.X.Y", b"[]")
    await platform.jetstream().publish("ai.chat.user.user-9.message", chat_message("user-9", 1))
    msg = await fetch_one(platform)
    await msg.nak()
    await platform.flush()
    await wait_for(lambda: counter.malformed == 3, message="three malformed advisories")
    await wait_for(lambda: CHAT_KEY in counter.counts(), message="the genuine NAK advisory")
    assert counter.counts() == {CHAT_KEY: AdvisoryCounts(naks=1)}


async def test_subscribing_again_never_counts_twice(platform, exporter_nc, nats_server):
    counter = AdvisoryCounter(ACCOUNT)
    await counter.subscribe(exporter_nc)
    await counter.subscribe(exporter_nc)  # the same live connection: nothing changes
    other = await connect_nats(NatsSettings(servers=(nats_server.url,)))
    try:
        await counter.subscribe(other)  # a rebuilt connection: the old subscriptions are dropped
        await platform.jetstream().publish("ai.chat.user.user-1.message", chat_message("user-1", 1))
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


async def test_counters_keep_counting_after_the_server_restarts(platform, exporter_nc, nats_server):
    counter = AdvisoryCounter(ACCOUNT)
    await counter.subscribe(exporter_nc)
    previous_reconnects = exporter_nc.stats["reconnects"]
    await platform.jetstream().publish("ai.chat.user.user-5.message", chat_message("user-5", 1))
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
        await app.jetstream().publish("ai.chat.user.user-5.message", chat_message("user-5", 2))
        msg = await fetch_one(app)
        assert msg.data == chat_message("user-5", 2)
        await msg.nak()
        await app.flush()
        await wait_for(
            lambda: counter.counts()[CHAT_KEY].naks == 2, message="the NAK advisory after the restart"
        )
    finally:
        await app.close()
    assert counter.counts() == {CHAT_KEY: AdvisoryCounts(naks=2)}
