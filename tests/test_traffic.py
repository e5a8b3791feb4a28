"""The platform's traffic and its failing chat handler, against a real nats-server."""

from __future__ import annotations

import asyncio
import io
import time
import wave
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from support.jetstream import stream_state
from support.spec_platform import SPEC_STREAM_NAMES
from support.waiting import wait_for

from exporter.demo.chathandler import ABANDON, FAIL, OK, RETRY, ChatHandler, HandlerOptions, message_fate
from exporter.demo.messages import (
    AUDIO_SAMPLE_RATE,
    chat_message,
    demo_users,
    done_marker,
    pack,
    unpack,
    voice_message,
    wav_audio,
)
from exporter.demo.platform import load_platform
from exporter.demo.provisioning import apply_platform
from exporter.demo.traffic import PlatformTraffic, TrafficOptions
from exporter.jsapi import JetStreamApi
from exporter.natsserver import NatsServerProcess

# -- messages --------------------------------------------------------------------------------------------


def test_chat_message_has_the_spec_schema() -> None:
    user = demo_users(3)[2]
    subject, payload = chat_message(user, "Hello, how are you?", now=1706000000.0)
    assert subject == "ai.chat.user.user-103.message"
    assert set(payload) == {
        "request_id",
        "user_id",
        "username",
        "message",
        "premium",
        "enable_streaming",
        "enable_rag",
        "enable_reranker",
        "top_k",
        "session_id",
        "timestamp",
    }
    assert (payload["user_id"], payload["premium"], payload["top_k"]) == ("user-103", True, 5)
    assert unpack(pack(payload)) == payload


def test_voice_message_carries_raw_wav_bytes() -> None:
    audio = wav_audio(0.25)
    subject, payload = voice_message(demo_users(1)[0], audio, now=1.0)
    assert subject == "ai.voice.user.user-101.request"
    decoded = msgpack.unpackb(pack(payload), raw=False)
    assert isinstance(decoded["audio"], bytes)  # MessagePack bin, not base64 text
    assert decoded["audio"] == audio
    assert (decoded["format"], decoded["sample_rate"], decoded["language"]) == ("wav", 16000, "en")
    with wave.open(io.BytesIO(decoded["audio"])) as reader:
        assert (reader.getframerate(), reader.getnchannels(), reader.getnframes()) == (
            AUDIO_SAMPLE_RATE,
            1,
            4000,
        )


def test_done_marker_closes_a_stream() -> None:
    subject, payload = done_marker("ai.chat.response.stream", "r-1", now=2.0)
    assert subject == "ai.chat.response.stream.r-1"
    assert payload == {"request_id": "r-1", "type": "done", "content": "", "done": True, "timestamp": 2.0}


def test_unpack_refuses_what_is_not_a_messagepack_map() -> None:
    with pytest.raises(ValueError, match="not a MessagePack map"):
        unpack(msgpack.packb([1, 2]))
    with pytest.raises(ValueError, match="not MessagePack"):
        unpack(b"\xc1")


def test_message_fate_is_stable_and_follows_the_ratios() -> None:
    options = HandlerOptions(failure_ratio=0.2, retry_ratio=0.1, abandon_ratio=0.05)
    keys = [f"request-{index}".encode() for index in range(20000)]
    fates = Counter(message_fate(key, options) for key in keys)
    assert abs(fates[FAIL] / 20000 - 0.2) < 0.02
    assert abs(fates[RETRY] / 20000 - 0.1) < 0.02
    assert abs(fates[ABANDON] / 20000 - 0.05) < 0.01
    assert fates[OK] == 20000 - fates[FAIL] - fates[RETRY] - fates[ABANDON]
    assert [message_fate(key, options) for key in keys[:100]] == [
        message_fate(key, options) for key in keys[:100]
    ]
    assert {message_fate(key, HandlerOptions(0, 0, 0)) for key in keys[:1000]} == {OK}


@pytest.mark.parametrize(
    "options",
    [
        {"failure_ratio": 0.7, "retry_ratio": 0.4},
        {"failure_ratio": -0.1},
        {"nak_delay_seconds": -1},
        {"fetch_grace_seconds": -1},
        {"batch": 0},
    ],
)
def test_handler_options_refuse_nonsense(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        HandlerOptions(**options)


def test_traffic_options_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="users"):
        TrafficOptions(users=0)
    with pytest.raises(ValueError, match="chat_rate"):
        TrafficOptions(chat_rate=-1)


# -- against a real server -------------------------------------------------------------------------------


@pytest.fixture
async def nc(nats_server: NatsServerProcess) -> AsyncIterator[Client]:
    client = await nats.connect(nats_server.url)
    try:
        await apply_platform(JetStreamApi(client, domain=None, timeout_seconds=5.0), load_platform())
        yield client
    finally:
        await client.close()


async def test_traffic_and_handler_fill_every_stream_nak_and_dead_letter(nc: Client) -> None:
    advisories: Counter[str] = Counter()

    async def count_advisory(msg: Msg) -> None:
        advisories[msg.subject.split(".")[4]] += 1

    await nc.subscribe("$JS.EVENT.ADVISORY.CONSUMER.*.COMPANIONS_CHAT.chat-handler", cb=count_advisory)
    traffic = PlatformTraffic(nc, TrafficOptions(chat_rate=30, voice_rate=3, login_rate=3, seed=7))
    handler = ChatHandler(
        nc,
        HandlerOptions(
            failure_ratio=0.25,
            retry_ratio=0.2,
            abandon_ratio=0.1,
            nak_delay_seconds=0.2,
            processing_seconds=0,
        ),
    )
    tasks = [asyncio.create_task(traffic.run()), asyncio.create_task(handler.run())]
    try:

        async def every_stream_has_messages() -> bool:
            states = [await stream_state(nc, name) for name in SPEC_STREAM_NAMES]
            return all(state["messages"] > 0 for state in states)

        await wait_for(
            every_stream_has_messages, timeout=15, interval=0.2, message="messages in every stream"
        )
        await wait_for(
            lambda: advisories["MAX_DELIVERIES"] > 0 and handler.stats.dead_lettered >= 3,
            timeout=15,
            message="dead letters and an abandoned message",
        )
    finally:
        cancelled_at = time.monotonic()
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    assert time.monotonic() - cancelled_at < 1.0  # every loop stops promptly
    assert all(isinstance(result, asyncio.CancelledError) for result in results)
    await nc.flush()

    stats = handler.stats
    assert stats.acked > 0
    assert stats.naked > 0
    assert stats.terminated == stats.dead_lettered
    dlq = await stream_state(nc, "AI_DLQ")
    # The cancellation may land between a dead letter's store and its count.
    assert dlq["messages"] - stats.dead_lettered in {0, 1}
    await wait_for(
        lambda: advisories["MSG_NAKED"] == stats.naked and advisories["MSG_TERMINATED"] == stats.terminated,
        timeout=5,
        message="the server's advisories to match what the handler did",
    )

    # A dead letter is the original chat message, published on its last delivery.
    js = nc.jetstream()
    dead = await js.get_msg("AI_DLQ", seq=1)
    assert dead.subject == "ai.dlq.chat"
    assert dead.headers is not None
    assert dead.headers["X-Dead-Letter-Deliveries"] == "3"  # max_deliver
    original = await js.get_msg("COMPANIONS_CHAT", seq=int(dead.headers["X-Dead-Letter-Sequence"]))
    assert dead.data == original.data
    payload = unpack(dead.data)
    assert dead.headers["X-Dead-Letter-Subject"] == f"ai.chat.user.{payload['user_id']}.message"
    assert message_fate(payload["request_id"].encode(), HandlerOptions(0.25, 0.2, 0.1)) == FAIL

    # Streamed answers end with their done marker (the first ones finished long before the cancellation).
    for response_stream in ("AI_CHAT_STREAM", "AI_VOICE_RESPONSE_STREAM"):
        first = await js.get_msg(response_stream, seq=1)
        request_id = unpack(first.data)["request_id"]
        last = unpack((await js.get_last_msg(response_stream, first.subject)).data)
        assert first.subject.endswith(f".response.stream.{request_id}")
        assert (last["type"], last["done"], last["request_id"]) == ("done", True, request_id)


def chat_payload(request_id: str) -> bytes:
    return pack({"request_id": request_id, "user_id": "user-101", "message": "hi", "enable_streaming": False})


def never_failing(*, fetch_grace_seconds: float = 10.0) -> HandlerOptions:
    """Every message succeeds by the ratios, so any failure comes from elsewhere; no redelivery in a test."""
    return HandlerOptions(
        failure_ratio=0,
        retry_ratio=0,
        abandon_ratio=0,
        processing_seconds=0,
        nak_delay_seconds=30,
        fetch_grace_seconds=fetch_grace_seconds,
    )


async def fetching(nc: Client, task: asyncio.Task[None]) -> bool:
    """Whether the handler's pull request waits at its consumer (or the handler ended)."""
    api = JetStreamApi(nc, domain=None, timeout_seconds=5.0)
    info = await api.request_json("CONSUMER.INFO.COMPANIONS_CHAT.chat-handler")
    return task.done() or int(info.get("num_waiting", 0)) > 0


async def test_a_message_that_cannot_be_handled_is_naked_and_the_handler_goes_on(nc: Client) -> None:
    naks: list[Msg] = []

    async def count_nak(msg: Msg) -> None:
        naks.append(msg)

    await nc.subscribe("$JS.EVENT.ADVISORY.CONSUMER.MSG_NAKED.COMPANIONS_CHAT.chat-handler", cb=count_nak)
    handler = ChatHandler(nc, never_failing())
    task = asyncio.create_task(handler.run())
    try:
        js = nc.jetstream()
        # Its reply subject ai.chat.response.<request_id> is not a valid subject: publishing it raises.
        await js.publish("ai.chat.user.user-101.message", chat_payload("not a token"))
        await wait_for(lambda: handler.stats.failed == 1 or task.done(), message="the odd message handled")
        await js.publish("ai.chat.user.user-101.message", chat_payload("r-2"))
        await wait_for(lambda: handler.stats.acked == 1 or task.done(), message="the next message acked")
        assert not task.done()
        await wait_for(lambda: len(naks) == 1, message="the server to see the odd message NAKed")
        assert handler.stats.naked == 1
    finally:
        task.cancel()
        results = await asyncio.gather(task, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)


async def test_failed_fetches_are_retried_until_the_consumer_is_back(nc: Client) -> None:
    api = JetStreamApi(nc, domain=None, timeout_seconds=5.0)
    handler = ChatHandler(nc, never_failing(fetch_grace_seconds=30))
    task = asyncio.create_task(handler.run())
    try:
        await wait_for(lambda: fetching(nc, task), message="the handler to fetch")
        await api.request_json("CONSUMER.DELETE.COMPANIONS_CHAT.chat-handler")
        await wait_for(lambda: handler.stats.failed_fetches > 0 or task.done(), message="a fetch to fail")
        assert not task.done()
        await apply_platform(api, load_platform())  # provisioning creates the consumer again
        await nc.jetstream().publish("ai.chat.user.user-101.message", chat_payload("r-1"))
        await wait_for(lambda: handler.stats.acked == 1 or task.done(), timeout=15, message="an ack")
        assert not task.done()
    finally:
        task.cancel()
        results = await asyncio.gather(task, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)


async def test_a_consumer_that_stays_gone_ends_the_handler(nc: Client) -> None:
    handler = ChatHandler(nc, never_failing(fetch_grace_seconds=0.5))
    task = asyncio.create_task(handler.run())
    try:
        await wait_for(lambda: fetching(nc, task), message="the handler to fetch")
        api = JetStreamApi(nc, domain=None, timeout_seconds=5.0)
        await api.request_json("CONSUMER.DELETE.COMPANIONS_CHAT.chat-handler")
        await wait_for(task.done, timeout=10, message="the handler to give up")
    finally:
        task.cancel()
        results = await asyncio.gather(task, return_exceptions=True)
    assert isinstance(results[0], nats.errors.Error)
    assert handler.stats.failed_fetches >= 1
