"""A stand-in JetStream API: recorded replies served on ``$JS.API.>`` of a nats-server without JetStream.

The exporter talks to it exactly as to a real server (same subjects, same JSON), but every reply is a
file recorded from nats-server (tests/fixtures/api/), so what the exporter collects never changes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

RECORDED = Path(__file__).parent.parent / "fixtures" / "api"
API_PREFIX = "$JS.API."
# What the server replies for a stream without consumers (the recorded list, emptied).
NO_CONSUMERS = {
    "total": 0,
    "offset": 0,
    "limit": 256,
    "consumers": [],
    "type": "io.nats.jetstream.api.v1.consumer_list_response",
}


def recorded(name: str) -> bytes:
    """A recorded reply, by file name without ``.json``."""
    return (RECORDED / f"{name}.json").read_bytes()


class RecordedJetStream:
    """Answers JetStream API requests from a table of API name -> reply; unknown APIs stay unanswered.

    ``replies`` maps an API name (``INFO``, ``STREAM.LIST``, ``CONSUMER.LIST.ORDERS``) to the reply bytes;
    ``fallback`` maps an API prefix (``CONSUMER.LIST.``) to the reply for every name under it.
    """

    def __init__(
        self, url: str, replies: Mapping[str, bytes], fallback: Mapping[str, bytes] | None = None
    ) -> None:
        self._url = url
        self._replies = dict(replies)
        self._fallback = dict(fallback or {})
        self._client: Client | None = None
        self.requests: list[str] = []

    async def __aenter__(self) -> Self:
        self._client = await nats.connect(self._url, name="recorded-jetstream")
        await self._client.subscribe(f"{API_PREFIX}>", cb=self._answer)
        await self._client.flush()  # subscribed on the server before anyone asks
        return self

    async def __aexit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        if self._client is not None:
            await self._client.close()

    async def _answer(self, msg: Msg) -> None:
        api = msg.subject.removeprefix(API_PREFIX)
        self.requests.append(api)
        reply = self._replies.get(api)
        if reply is None:
            reply = next((data for prefix, data in self._fallback.items() if api.startswith(prefix)), None)
        if reply is not None:
            await msg.respond(reply)


def no_consumers() -> bytes:
    return json.dumps(NO_CONSUMERS).encode()
