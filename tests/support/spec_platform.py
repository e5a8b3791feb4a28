"""The AI platform spec for tests: its streams and consumer, provisioned over the raw JetStream API, and
its MessagePack messages, as the platform spec describes them (test_source.py, test_parse.py, test_payload.py,
test_dlq_inspector.py, test_demo.py and test_traffic.py share them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import msgpack
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from support.jetstream import js_request
from support.waiting import wait_for

NS = 1_000_000_000
MINUTE = 60
HOUR = 60 * MINUTE
DAY = 24 * HOUR

# The platform spec's table. One deviation, as in the demo's platform.yaml: the spec's `ai.voice.>` for
# AI_VOICE_STREAM overlaps AI_VOICE_RESPONSE_STREAM's subjects and the server refuses it (err_code 10065).
SPEC_STREAMS: tuple[tuple[str, tuple[str, ...], int, str], ...] = (
    ("COMPANIONS_LOGINS", ("ai.chat.user.*.login",), 7 * DAY, "file"),
    ("COMPANIONS_CHAT", ("ai.chat.user.*.message", "ai.chat.user.*.greeting.*"), 30 * DAY, "file"),
    ("AI_CHAT_STREAM", ("ai.chat.response.stream.>",), 5 * MINUTE, "memory"),
    ("AI_VOICE_STREAM", ("ai.voice.user.>",), HOUR, "file"),
    ("AI_VOICE_RESPONSE_STREAM", ("ai.voice.response.stream.>",), 5 * MINUTE, "memory"),
    ("AI_PIPELINE", ("ai.pipeline.>",), DAY, "file"),
    ("AI_DLQ", ("ai.dlq.>",), 7 * DAY, "file"),  # the "Error Handling" section's dead-letter stream
)
SPEC_STREAM_NAMES = tuple(name for name, *_ in SPEC_STREAMS)
# The spec's "Consumer Configuration", as written.
CHAT_HANDLER_CONFIG: dict[str, Any] = {
    "name": "chat-handler",
    "durable_name": "chat-handler",
    "filter_subjects": ["ai.chat.user.*.message"],
    "ack_policy": "explicit",
    "ack_wait": 30 * NS,
    "max_deliver": 3,
    "deliver_policy": "new",
}


# -- provisioning and traffic over the raw JetStream API ------------------------------------------------


async def request_or_none(
    nc: Client, api: str, payload: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """A JetStream API request that may not be answerable yet (no meta leader, election under way)."""
    data = json.dumps(payload).encode() if payload is not None else b""
    try:
        reply: dict[str, Any] = json.loads((await nc.request(f"$JS.API.{api}", data, timeout=1)).data)
    except nats.errors.Error:
        return None
    return None if "error" in reply else reply


async def create_stream(nc: Client, name: str, subjects: Sequence[str], **config: Any) -> dict[str, Any]:
    return await js_request(nc, f"STREAM.CREATE.{name}", {"name": name, "subjects": list(subjects), **config})


async def create_consumer(nc: Client, stream: str, config: Mapping[str, Any]) -> dict[str, Any]:
    return await js_request(
        nc, f"CONSUMER.CREATE.{stream}.{config['name']}", {"stream_name": stream, "config": config}
    )


async def provision_platform(nc: Client) -> None:
    for name, subjects, max_age, storage in SPEC_STREAMS:
        await create_stream(
            nc, name, subjects, retention="limits", max_age=max_age * NS, storage=storage, num_replicas=1
        )
    await create_consumer(nc, "COMPANIONS_CHAT", CHAT_HANDLER_CONFIG)


def chat_message(user_id: str, text: str) -> bytes:
    return msgpack.packb(
        {
            "request_id": f"req-{user_id}-{text}",
            "user_id": user_id,
            "username": f"name-{user_id}",
            "message": text,
            "premium": False,
            "enable_streaming": True,
            "enable_rag": True,
            "enable_reranker": True,
            "top_k": 5,
            "session_id": f"session-{user_id}",
        }
    )


def voice_message(user_id: str) -> bytes:
    return msgpack.packb(
        {
            "request_id": f"voice-{user_id}",
            "user_id": user_id,
            "audio": bytes(range(256)) * 8,
            "format": "wav",
            "sample_rate": 16000,
            "premium": False,
            "enable_rag": True,
            "language": "en",
        }
    )


async def publish(nc: Client, subject: str, payload: bytes) -> int:
    """A JetStream publish: waits for the stream's ack and returns the stored sequence."""
    ack = json.loads((await nc.request(subject, payload, timeout=5)).data)
    assert "error" not in ack, ack
    return int(ack["seq"])


async def pull(nc: Client, stream: str, consumer: str, count: int) -> list[Msg]:
    """Fetch exactly ``count`` messages from a pull consumer (the request is then complete, not waiting)."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    try:
        await nc.publish(
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}",
            json.dumps({"batch": count, "expires": 5 * NS}).encode(),
            reply=inbox,
        )
        return [await sub.next_msg(timeout=5) for _ in range(count)]
    finally:
        await sub.unsubscribe()


async def respond(msg: Msg, kind: bytes) -> None:
    """Ack (``+ACK``), nak (``-NAK``) or terminate (``+TERM``) as a request, so it is applied on return."""
    await msg._client.request(msg.reply, kind, timeout=5)


async def publish_when_routed(nc: Client, subject: str, payload: bytes) -> None:
    """Publish to a stream created a moment ago in a cluster, once its interest has reached this server."""

    async def stored() -> bool:
        try:
            await publish(nc, subject, payload)
        except nats.errors.NoRespondersError:
            return False
        return True

    await wait_for(stored, timeout=10, message=f"a stream to store {subject}")


# -- the spec's example messages ("Binary Messages and JetStream Configuration"), realistic values ---------

CHAT = {
    "request_id": "3f2b8c1e-9a4d-4e6f-8b2a-1c5d7e9f0a11",
    "user_id": "user-123",
    "username": "john_doe",
    "message": "Hello, how are you?",
    "premium": False,
    "enable_streaming": True,
    "enable_rag": True,
    "enable_reranker": True,
    "top_k": 5,
    "session_id": "session-abc",
}
# Raw bytes, not base64, as the spec insists: a deterministic 32 000-byte "recording".
AUDIO = bytes(range(256)) * 125
VOICE = {
    "request_id": "7d0e4a52-1b3c-4d5e-9f60-2a3b4c5d6e7f",
    "user_id": "user-123",
    "audio": AUDIO,
    "format": "wav",
    "sample_rate": 16000,
    "premium": False,
    "enable_rag": True,
    "language": "en",
}


def packed(value: object) -> bytes:
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data
