"""The platform's publishers: logins and greetings, chat messages, voice requests with their streamed answers,
and pipeline events, for several users at adjustable rates.

Arrivals are random (exponential gaps) rather than evenly spaced, so that the chat handler sees bursts and
its backlog moves like a real one. Every loop ends as soon as its task is cancelled.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client

from exporter.demo.messages import (
    DemoUser,
    chat_message,
    demo_users,
    done_marker,
    greeting,
    login_event,
    pack,
    pipeline_event,
    response_chunk,
    voice_message,
    wav_audio,
)

VOICE_RESPONSE_ROOT = "ai.voice.response.stream"
VOICE_RESPONSE_CHUNKS = 3

_CHAT_TEXTS = (
    "Hello, how are you?",
    "What's the weather like tomorrow?",
    "Can you summarise my notes from yesterday?",
    "Tell me a joke about distributed systems.",
    "Remind me what we talked about last time.",
    "Which book should I read next?",
    "Translate 'good morning' into French.",
)


@dataclass(frozen=True, slots=True)
class TrafficOptions:
    users: int = 5
    chat_rate: float = 4.0  # chat messages per second, all users together
    voice_rate: float = 0.5  # voice requests per second, each answered by a streamed voice response
    login_rate: float = 0.3  # logins per second, each followed by a companion greeting
    seed: int | None = None  # fixed seed: the same sequence of users and texts on every run

    def __post_init__(self) -> None:
        if self.users < 1:
            raise ValueError("users must be at least 1")
        for name in ("chat_rate", "voice_rate", "login_rate"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")


class PlatformTraffic:
    """Publishes the platform's traffic until cancelled; ``published`` counts messages per kind."""

    def __init__(self, nc: Client, options: TrafficOptions | None = None) -> None:
        self._nc = nc
        self._options = options or TrafficOptions()
        self._users = demo_users(self._options.users)
        # Demo traffic, not security: a seedable generator makes runs reproducible.
        self._random = random.Random(self._options.seed)  # noqa: S311 (not used for security)
        self._voice_audio = wav_audio(0.25)
        self._answer_audio = wav_audio(0.3, frequency=330.0)
        self.published: Counter[str] = Counter()

    async def run(self) -> None:
        options = self._options
        async with asyncio.TaskGroup() as group:
            group.create_task(self._every(options.chat_rate, self._publish_chat))
            group.create_task(self._every(options.voice_rate, self._publish_voice))
            group.create_task(self._every(options.login_rate, self._publish_login))

    async def _every(self, rate: float, action: Callable[[], Awaitable[None]]) -> None:
        if rate <= 0:
            return
        while True:
            await action()
            await asyncio.sleep(self._random.expovariate(rate))

    def _user(self) -> DemoUser:
        return self._random.choice(self._users)

    async def _publish(self, kind: str, message: tuple[str, dict[str, Any]]) -> None:
        subject, payload = message
        await self._nc.publish(subject, pack(payload))
        self.published[kind] += 1

    async def _publish_chat(self) -> None:
        user = self._user()
        text = self._random.choice(_CHAT_TEXTS)
        await self._publish(
            "chat", chat_message(user, text, now=time.time(), streaming=self._random.random() < 0.8)
        )

    async def _publish_login(self) -> None:
        user = self._user()
        await self._publish("login", login_event(user, now=time.time()))
        await self._publish("greeting", greeting(user, now=time.time()))

    async def _publish_voice(self) -> None:
        """A voice request, then what the voice pipeline does with it: transcription, a spoken answer."""
        user = self._user()
        subject, request = voice_message(user, self._voice_audio, now=time.time())
        await self._publish("voice", (subject, request))
        request_id = str(request["request_id"])
        await self._publish(
            "pipeline",
            pipeline_event("stt", "completed", request_id=request_id, user_id=user.user_id, now=time.time()),
        )
        size = -(-len(self._answer_audio) // VOICE_RESPONSE_CHUNKS)
        for start in range(0, len(self._answer_audio), size):
            chunk = self._answer_audio[start : start + size]
            await self._publish(
                "voice_response", response_chunk(VOICE_RESPONSE_ROOT, request_id, chunk, now=time.time())
            )
        await self._publish("voice_response", done_marker(VOICE_RESPONSE_ROOT, request_id, now=time.time()))
        await self._publish(
            "pipeline",
            pipeline_event("tts", "completed", request_id=request_id, user_id=user.user_id, now=time.time()),
        )
