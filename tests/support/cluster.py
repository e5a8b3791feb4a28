"""Clusters in tests: starting three nodes, stream leadership and placement, and a running exporter watched
through /metrics while cluster members fail."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from nats.aio.client import Client

from exporter.app import ExporterApp
from exporter.natsserver import NatsCluster, NatsServerProcess
from exporter.settings import CollectionSettings, NatsSettings, Settings, WebSettings
from support.scraping import Samples, sample, samples_of
from support.waiting import wait_for

SCRAPE_PERIOD_SECONDS = 0.2
NO_SUITABLE_PEERS = 10005
# Shorter than a plain scrape's: a watch counts a scrape unanswered within 5 s as a failed one.
WATCH_SCRAPE_TIMEOUT = aiohttp.ClientTimeout(total=5)


async def stream_info(nc: Client, stream: str) -> dict[str, Any] | None:
    """The stream's STREAM.INFO from its leader, None while nobody answers (an election)."""
    try:
        msg = await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=1)
    except Exception:  # noqa: BLE001 (no reply during an election is the expected answer)
        return None
    reply: dict[str, Any] = json.loads(msg.data)
    return None if "error" in reply else reply


async def lead_away_from(nc: Client, stream: str, avoid: str) -> str:
    """Step the stream's leader down until a server other than ``avoid`` leads it; that server's name."""

    async def led_elsewhere() -> bool:
        info = await stream_info(nc, stream)
        leader = (info or {}).get("cluster", {}).get("leader")
        if leader == avoid:
            with contextlib.suppress(Exception):
                await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", b"", timeout=2)
        return leader not in (None, avoid)

    await wait_for(led_elsewhere, timeout=30, message=f"{stream} led by a server other than {avoid}")
    info = await stream_info(nc, stream)
    assert info is not None
    return str(info["cluster"]["leader"])


async def create_placed_stream(nc: Client, name: str, subjects: list[str], **config: Any) -> dict[str, Any]:
    """STREAM.CREATE, asked again while the meta leader has not yet seen a restarted peer's first
    statistics (error 10005, "no suitable peers for placement")."""
    payload = json.dumps({"name": name, "subjects": subjects, **config}).encode()
    created: dict[str, Any] = {}

    async def create() -> bool:
        msg = await nc.request(f"$JS.API.STREAM.CREATE.{name}", payload, timeout=5)
        reply: dict[str, Any] = json.loads(msg.data)
        error = reply.get("error")
        if error is not None and error.get("err_code") == NO_SUITABLE_PEERS:
            return False
        assert error is None, error
        created.update(reply)
        return True

    await wait_for(create, timeout=20, interval=0.2, message=f"{name} created")
    return created


def three_node_cluster(base: Path) -> list[NatsServerProcess]:
    """Three clustered JetStream servers n1..n3 (tagged node:1..3), started: ``NatsCluster``'s members."""
    return NatsCluster(base).start().members


def restart_all(cluster: NatsCluster) -> None:
    """Start every member that a test stopped, so the next test finds the whole cluster."""
    stopped = [member for member in cluster.members if not member.running]
    for member in stopped:
        member.start()
    if stopped:
        cluster.wait_until_formed()


@dataclass
class Watch:
    """Every /metrics scrape of one exporter while a test runs: status codes and the samples."""

    port: int
    statuses: list[int] = field(default_factory=list)
    up: list[float | None] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # monotonic time of each answered scrape
    failures: list[str] = field(default_factory=list)  # scrapes that got no answer
    latest: Samples = field(default_factory=dict)

    def first_up_after(self, moment: float) -> float | None:
        """Seconds from ``moment`` (monotonic) to the first scrape with nats_up 1 after a scrape with 0."""
        seen_down = False
        for scraped, up in zip(self.times, self.up, strict=True):
            if scraped < moment:
                continue
            seen_down = seen_down or up != 1.0
            if seen_down and up == 1.0:
                return scraped - moment
        return 0.0 if not seen_down else None

    def value(self, name: str, **labels: str) -> float | None:
        return sample(self.latest, name, **labels)

    def series(self, name: str, **labels: str) -> list[frozenset[tuple[str, str]]]:
        """Label sets of ``name``'s series that carry ``labels`` (a subset match)."""
        wanted = set(labels.items())
        return [series for key, series in self.latest if key == name and wanted <= series]

    async def scrape(self, session: aiohttp.ClientSession) -> None:
        try:
            async with session.get(
                f"http://127.0.0.1:{self.port}/metrics", timeout=WATCH_SCRAPE_TIMEOUT
            ) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.failures.append(f"{type(exc).__name__}: {exc}")
            self.statuses.append(0)  # no answer at all: counted as a scrape that was not 200
            return
        self.statuses.append(status)
        samples = samples_of(text)
        self.latest = samples
        self.times.append(time.monotonic())
        self.up.append(samples.get(("nats_up", frozenset())))


def fast_settings(server: NatsServerProcess, interval: float = 1.0) -> Settings:
    """One-second cycles (deadline ⅔ of it), connected to ``server`` (the others are discovered from it)."""
    return Settings(
        nats=NatsSettings(servers=(server.url,), connect_timeout_seconds=1.0),
        web=WebSettings(listen_address="127.0.0.1:0"),
        collection=CollectionSettings(interval_seconds=interval, deadline_seconds=interval * 2 / 3),
    )


@contextlib.asynccontextmanager
async def watched_exporter(settings: Settings) -> AsyncIterator[Watch]:
    """An exporter scraped every 0.2 s in the background until the block ends."""
    app = ExporterApp(settings)
    await app.start()
    watch = Watch(app.port)

    async def scrape_forever() -> None:
        async with aiohttp.ClientSession() as session:
            while True:
                await watch.scrape(session)
                await asyncio.sleep(SCRAPE_PERIOD_SECONDS)

    scraper = asyncio.create_task(scrape_forever())
    try:
        await wait_for(lambda: watch.up[-1:] == [1.0], timeout=15, message="a first successful collection")
        yield watch
    finally:
        if scraper.done() and not scraper.cancelled() and scraper.exception() is not None:
            raise AssertionError("the background scraper failed") from scraper.exception()
        scraper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await scraper
        await app.stop()
