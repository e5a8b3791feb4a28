"""Raw JetStream API requests in tests: a request that must succeed, and a stream's state (messages, bytes,
sequences) as the server reports it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import nats
from nats.aio.client import Client


async def js_request(nc: Client, api: str, payload: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A raw JetStream API request (``api`` without ``$JS.API.``) that must succeed."""
    data = json.dumps(payload).encode() if payload is not None else b""
    reply: dict[str, Any] = json.loads((await nc.request(f"$JS.API.{api}", data, timeout=5)).data)
    assert "error" not in reply, (api, reply["error"])
    return reply


async def js_request_at(url: str, api: str, payload: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``js_request`` over a connection of its own to ``url`` (for tests that hold none)."""
    nc = await nats.connect(url)
    try:
        return await js_request(nc, api, payload)
    finally:
        await nc.close()


async def stream_state(nc: Client, stream: str) -> dict[str, Any]:
    """The ``state`` of ``stream``'s STREAM.INFO; fails the test when the server answers with an error."""
    state: dict[str, Any] = (await js_request(nc, f"STREAM.INFO.{stream}"))["state"]
    return state


async def stream_state_at(url: str, stream: str) -> dict[str, Any]:
    """``stream_state`` over a connection of its own to ``url``."""
    nc = await nats.connect(url)
    try:
        return await stream_state(nc, stream)
    finally:
        await nc.close()
