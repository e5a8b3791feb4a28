"""Counting the JetStream API requests of one collection cycle, on a real server."""

from __future__ import annotations

from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from support.waiting import wait_for


class ApiTap:
    """Sees every JetStream API request of the account; ``cycle_requests`` returns one cycle's worth."""

    SENTINEL = "tap.sentinel"

    def __init__(self, tap: Client) -> None:
        self._tap = tap
        self.subjects: list[str] = []
        self._sentinels = 0

    @classmethod
    async def attach(cls, url: str) -> ApiTap:
        tap = cls(await nats.connect(url))

        async def record(msg: Msg) -> None:
            if msg.subject == cls.SENTINEL:
                tap._sentinels += 1
            else:
                tap.subjects.append(msg.subject)

        await tap._tap.subscribe("$JS.API.>", cb=record)
        await tap._tap.subscribe(cls.SENTINEL, cb=record)
        await tap._tap.flush()
        return tap

    async def cycle_requests(self, source_nc: Client, cycle: Any) -> tuple[Any, list[str]]:
        """Run ``cycle`` and return its result and the API subjects it requested, in order."""
        self.subjects.clear()
        expected = self._sentinels + 1
        result = await cycle
        await source_nc.publish(self.SENTINEL, b"")
        await source_nc.flush()
        await wait_for(lambda: self._sentinels >= expected, message="the tap's sentinel")
        return result, list(self.subjects)

    async def close(self) -> None:
        await self._tap.close()
