"""Chaos for the clustered demo: stop a server on a schedule, restart it a little later, say what to watch.

Odd steps stop the leader of the chat stream (its streams elect new leaders), even steps the next member in
turn (most often a follower). Each step is one line of output when the server stops and one when it is back.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass

from exporter.demo.chathandler import CHAT_STREAM
from exporter.durations import format_duration
from exporter.jsapi import JetStreamApi, JetStreamRequestError
from exporter.natsserver import NatsCluster, NatsServerProcess

LEADER_LOOKUP_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class ChaosOptions:
    every_seconds: float = 60.0  # a member is stopped this often, the first time this long after the start
    down_seconds: float = 25.0  # and restarted this long after it was stopped

    def __post_init__(self) -> None:
        if not 0 < self.down_seconds < self.every_seconds:
            raise ValueError("the chaos downtime must be above 0 and shorter than the chaos period")


async def _in_thread(action: Callable[[], object]) -> None:
    """Run a blocking start or stop; a cancellation waits for it, since a thread cannot be interrupted.

    Otherwise a server started by a cancelled restart could outlive the demo's teardown.
    """
    done = asyncio.ensure_future(asyncio.to_thread(action))
    try:
        await asyncio.shield(done)
    except asyncio.CancelledError:
        await done
        raise


class Chaos:
    """Stops and restarts members of ``cluster`` until cancelled; ``steps`` counts the stops."""

    def __init__(
        self, cluster: NatsCluster, api: JetStreamApi, options: ChaosOptions, say: Callable[[str], None]
    ) -> None:
        self._cluster = cluster
        self._api = api
        self._options = options
        self._say = say
        self.steps = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        rotation = itertools.cycle(self._cluster.members)
        next_stop = loop.time() + self._options.every_seconds
        while True:
            await asyncio.sleep(max(0.0, next_stop - loop.time()))
            next_stop += self._options.every_seconds
            self.steps += 1
            leader = await self._chat_leader()
            member = self._cluster.member(leader) if leader and self.steps % 2 == 1 else next(rotation)
            await _in_thread(member.stop)
            self._say(self._stopped_line(member, leader))
            await asyncio.sleep(self._options.down_seconds)
            await _in_thread(member.start)
            self._say(
                f"chaos {self.steps}: restarted {member.server_name}: within seconds it catches up "
                "(Replica lag per server back to 0) and every stream has 3 of 3 replicas current again"
            )

    def _stopped_line(self, member: NatsServerProcess, leader: str | None) -> str:
        down = format_duration(self._options.down_seconds)
        name = member.server_name
        replicas = (
            f"every stream has 2 of 3 replicas current (Missing replicas per stream), and the lag of "
            f"the replicas on {name} grows (Replica lag per server)"
        )
        if name == leader:
            return (
                f"chaos {self.steps}: stopped {name}, the leader of {CHAT_STREAM}, for {down}: the streams "
                f"it led elect new leaders (Stream leaders, Stream leader elections); {replicas}"
            )
        return (
            f"chaos {self.steps}: stopped {name}, a follower of {CHAT_STREAM}, for {down}: {replicas}; "
            "only the streams it led elect new leaders"
        )

    async def _chat_leader(self) -> str | None:
        """The chat stream's leader, None while it has none or does not answer."""
        try:
            info = await self._api.request_json(
                f"STREAM.INFO.{CHAT_STREAM}", reply_within=LEADER_LOOKUP_SECONDS
            )
        except JetStreamRequestError:
            return None
        leader = (info.get("cluster") or {}).get("leader")
        return str(leader) if leader else None
