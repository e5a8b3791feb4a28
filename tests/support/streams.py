"""A stream's state (messages, bytes, sequences) as the server reports it, read over the JetStream API."""

from __future__ import annotations

import json
from typing import Any

import nats
from nats.aio.client import Client


async def stream_state(nc: Client, stream: str) -> dict[str, Any]:
    """The ``state`` of ``stream``'s STREAM.INFO; fails the test when the server answers with an error."""
    reply = json.loads((await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=5)).data)
    assert "error" not in reply, reply
    state: dict[str, Any] = reply["state"]
    return state


async def stream_state_at(url: str, stream: str) -> dict[str, Any]:
    """``stream_state`` over a connection of its own to ``url`` (for tests that hold none)."""
    nc = await nats.connect(url)
    try:
        return await stream_state(nc, stream)
    finally:
        await nc.close()
