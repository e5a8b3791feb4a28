"""Pieces every benchmark shares: the printed results, raw JetStream requests, the stream fixture, timing.

The raw requests are deliberately not the exporter's JetStreamApi: a floor is what any client must do.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import nats.errors
from nats.aio.client import Client

CONSUMERS_PER_STREAM = 10
CONCURRENCY = 16
REQUEST_TIMEOUT_SECONDS = 30


@dataclass
class Results:
    lines: list[str]

    def add(self, text: str) -> None:
        print(text, flush=True)
        self.lines.append(text)

    def header(self, name: str, command: str) -> None:
        """The machine and the exact command, first lines of every recorded run."""
        self.add(
            f"# {name} {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on {platform.node()}: {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, {platform.machine()}"
        )
        self.add(f"# command: {command}")

    def write(self, path: Path | None) -> None:
        if path is not None:
            path.write_text("\n".join(self.lines) + "\n", encoding="utf-8")


async def request_json(
    nc: Client, subject: str, payload: dict[str, object] | None = None
) -> dict[str, object]:
    reply = await nc.request(subject, json.dumps(payload or {}).encode(), timeout=REQUEST_TIMEOUT_SECONDS)
    data: dict[str, object] = json.loads(reply.data)
    if "error" in data:
        raise RuntimeError(f"{subject}: {data['error']}")
    return data


async def paged(nc: Client, semaphore: asyncio.Semaphore, subject: str, key: str) -> list[object]:
    """Every item of a paged JetStream API list, one page at a time, each page under ``semaphore``."""
    items: list[object] = []
    offset = 0
    while True:
        async with semaphore:
            page = await request_json(nc, subject, {"offset": offset})
        batch = page.get(key) or []
        assert isinstance(batch, list)
        items.extend(batch)
        offset += len(batch)
        total = page.get("total", 0)
        assert isinstance(total, int)
        if not batch or offset >= total:
            return items


async def build_streams(
    nc: Client,
    first: int,
    count: int,
    consumers: int = CONSUMERS_PER_STREAM,
    *,
    replicas: int = 1,
    parallel: int = 64,
) -> None:
    """Streams BENCH_<i> (memory, one message each), each with ``consumers`` durable pull consumers."""
    semaphore = asyncio.Semaphore(parallel)

    async def one(index: int) -> None:
        name = f"BENCH_{index:05d}"
        async with semaphore:
            await request_json(
                nc,
                f"$JS.API.STREAM.CREATE.{name}",
                {
                    "name": name,
                    "subjects": [f"bench.{index}.>"],
                    "storage": "memory",
                    "num_replicas": replicas,
                },
            )
            await publish_acknowledged(nc, f"bench.{index}.event", b"x" * 64)
            for consumer in range(consumers):
                durable = f"c{consumer}"
                await request_json(
                    nc,
                    f"$JS.API.CONSUMER.CREATE.{name}.{durable}",
                    {
                        "stream_name": name,
                        # Nothing pending, so no lag look-ups (their cost grows with lagging consumers, not
                        # with all consumers; see RESULTS.md). Past the one message by sequence rather than
                        # "deliver new": on a cluster the consumer leader's replica of the stream may not yet
                        # hold the message, and a "new" consumer would then start before it.
                        "config": {
                            "durable_name": durable,
                            "ack_policy": "explicit",
                            "deliver_policy": "by_start_sequence",
                            "opt_start_seq": 2,
                        },
                    },
                )

    await asyncio.gather(*(one(index) for index in range(first, first + count)))
    await nc.flush()


async def publish_acknowledged(nc: Client, subject: str, payload: bytes) -> None:
    """Publish and wait for the stream's acknowledgement.

    Acknowledged before the consumers exist: on a cluster an unacknowledged message could land after them
    and leave them one message behind (lag look-ups, which the fixture avoids). Right after a clustered
    create, the stream's subject interest may not have reached the connected server: retried until then.
    """
    deadline = time.monotonic() + REQUEST_TIMEOUT_SECONDS
    while True:
        try:
            await nc.request(subject, payload, timeout=REQUEST_TIMEOUT_SECONDS)
        except nats.errors.NoRespondersError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
        else:
            return


async def timed(function: Callable[[], Awaitable[object]], repeats: int) -> list[float]:
    durations = []
    for _ in range(repeats):
        started = time.perf_counter()
        await function()
        durations.append(time.perf_counter() - started)
    return durations


def verdict(met: bool) -> str:  # noqa: FBT001 (a predicate's result)
    return "met" if met else "MISSED"
