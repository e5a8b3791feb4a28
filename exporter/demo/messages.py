"""The platform's messages, as the spec's MessagePack schemas define them, with the subjects they go to.

Each builder returns ``(subject, payload)``; ``pack`` turns a payload into the MessagePack bytes that go on
the wire (binary fields such as voice audio stay raw bytes, never base64).
"""

from __future__ import annotations

import io
import math
import struct
import uuid
import wave
from dataclasses import dataclass
from typing import Any

import msgpack

DEAD_LETTER_CHAT_SUBJECT = "ai.dlq.chat"
AUDIO_SAMPLE_RATE = 16000


@dataclass(frozen=True, slots=True)
class DemoUser:
    user_id: str
    username: str
    premium: bool = False

    @property
    def session_id(self) -> str:
        return f"session-{self.user_id}"


_NAMES = (
    "alice",
    "bob",
    "carol",
    "dave",
    "erin",
    "frank",
    "grace",
    "heidi",
    "ivan",
    "judy",
    "mallory",
    "oscar",
)


def demo_users(count: int) -> tuple[DemoUser, ...]:
    """``count`` users, ``user-101`` …, every third one premium."""
    return tuple(
        DemoUser(f"user-{101 + index}", f"{_NAMES[index % len(_NAMES)]}_{index + 1}", premium=index % 3 == 2)
        for index in range(count)
    )


def pack(payload: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(payload, use_bin_type=True)
    return packed


def unpack(data: bytes) -> dict[str, Any]:
    """The decoded payload; ValueError when it is not a MessagePack map."""
    try:
        payload = msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise ValueError(f"not MessagePack: {exc}") from None
    if not isinstance(payload, dict):
        raise ValueError(f"not a MessagePack map: {type(payload).__name__}")  # noqa: TRY004 (bad input, as above)
    return payload


def new_request_id() -> str:
    return str(uuid.uuid4())


def login_event(user: DemoUser, *, now: float, client: str = "web") -> tuple[str, dict[str, Any]]:
    """The general message structure, as a login (the spec gives logins no schema of their own)."""
    return f"ai.chat.user.{user.user_id}.login", {
        "request_id": new_request_id(),
        "user_id": user.user_id,
        "timestamp": now,
        "payload": {"event": "login", "username": user.username, "client": client},
        "metadata": {"source": "demo", "premium": user.premium},
    }


def greeting(user: DemoUser, *, now: float, kind: str = "welcome") -> tuple[str, dict[str, Any]]:
    """A companion greeting (``ai.chat.user.*.greeting.*``), in the general message structure."""
    return f"ai.chat.user.{user.user_id}.greeting.{kind}", {
        "request_id": new_request_id(),
        "user_id": user.user_id,
        "timestamp": now,
        "payload": {"greeting": kind, "username": user.username},
        "metadata": {"source": "demo"},
    }


def chat_message(
    user: DemoUser, text: str, *, now: float, streaming: bool = True
) -> tuple[str, dict[str, Any]]:
    """The spec's Chat Message, plus the timestamp its publisher example adds."""
    return f"ai.chat.user.{user.user_id}.message", {
        "request_id": new_request_id(),
        "user_id": user.user_id,
        "username": user.username,
        "message": text,
        "premium": user.premium,
        "enable_streaming": streaming,
        "enable_rag": True,
        "enable_reranker": True,
        "top_k": 5,
        "session_id": user.session_id,
        "timestamp": now,
    }


def voice_message(user: DemoUser, audio: bytes, *, now: float) -> tuple[str, dict[str, Any]]:
    """The spec's Voice Message, sent to the narrowed voice request subject (see platform.yaml)."""
    return f"ai.voice.user.{user.user_id}.request", {
        "request_id": new_request_id(),
        "user_id": user.user_id,
        "audio": audio,
        "format": "wav",
        "sample_rate": AUDIO_SAMPLE_RATE,
        "premium": user.premium,
        "enable_rag": True,
        "language": "en",
        "timestamp": now,
    }


def response_chunk(
    subject_root: str, request_id: str, content: str | bytes, *, now: float
) -> tuple[str, dict[str, Any]]:
    """The spec's Streaming Response Chunk; ``subject_root``: ``ai.chat.response.stream`` or the voice one."""
    return f"{subject_root}.{request_id}", {
        "request_id": request_id,
        "type": "chunk",
        "content": content,
        "done": False,
        "timestamp": now,
    }


def done_marker(subject_root: str, request_id: str, *, now: float) -> tuple[str, dict[str, Any]]:
    """The chunk that closes a streamed response."""
    return f"{subject_root}.{request_id}", {
        "request_id": request_id,
        "type": "done",
        "content": "",
        "done": True,
        "timestamp": now,
    }


def pipeline_event(
    stage: str, event: str, *, request_id: str, user_id: str, now: float, **details: Any
) -> tuple[str, dict[str, Any]]:
    """A step of the AI pipeline (``ai.pipeline.<stage>.<event>``), in the general message structure."""
    return f"ai.pipeline.{stage}.{event}", {
        "request_id": request_id,
        "user_id": user_id,
        "timestamp": now,
        "payload": {"stage": stage, "event": event, **details},
        "metadata": {"source": "demo"},
    }


def wav_audio(seconds: float = 0.25, *, frequency: float = 440.0) -> bytes:
    """A real mono 16-bit PCM WAV file: a short tone, as a voice message's raw audio bytes."""
    frames = int(AUDIO_SAMPLE_RATE * seconds)
    samples = (
        int(12000 * math.sin(2 * math.pi * frequency * index / AUDIO_SAMPLE_RATE)) for index in range(frames)
    )
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(AUDIO_SAMPLE_RATE)
        writer.writeframes(b"".join(struct.pack("<h", sample) for sample in samples))
    return buffer.getvalue()
