"""Benchmark harness: ``python -m bench`` (or ``make bench``).

Builds N streams x 10 consumers in a real nats-server and measures, side by side in one run:
(a) the floor: a bare paged raw-JSON fetch of the same data with the same concurrency;
(b) the exporter's full cycle: fetch, snapshot, render both formats, compress;
(c) /metrics latency p50/p99 with 8 concurrent scrapers, exporter vs a bare aiohttp handler serving the
    same bytes (both in their own processes);
(d) the exporter process's peak RSS;
(e) JetStream API requests per cycle with 1 and with 8 scrapers (read from the server's own counter);
(f) the full cycle at 2N x 10 against N x 10.
Prints a table of figures and ratios against the targets; --output writes it to a file as well.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import nats
from nats.aio.client import Client

from bench.common import (
    CONCURRENCY,
    CONSUMERS_PER_STREAM,
    Results,
    build_streams,
    paged,
    request_json,
    timed,
    verdict,
)
from exporter.app import build_exposition
from exporter.metrics import Renderer
from exporter.natsserver import NatsServerProcess, free_port, stop_process
from exporter.settings import CollectionSettings, Settings
from exporter.snapshot import ExporterHealth
from exporter.source import JetStreamSource

PAGE = 256
SCRAPERS = 8
BARE_SERVER = Path(__file__).with_name("bare_server.py")


async def floor_fetch(nc: Client) -> int:
    """The least any exporter must do: page through streams, then each stream's consumers, decode JSON."""
    semaphore = asyncio.Semaphore(CONCURRENCY)

    await request_json(nc, "$JS.API.INFO")
    streams = await paged(nc, semaphore, "$JS.API.STREAM.LIST", "streams")
    names = [stream["config"]["name"] for stream in streams]  # type: ignore[index]
    consumers = await asyncio.gather(
        *(paged(nc, semaphore, f"$JS.API.CONSUMER.LIST.{name}", "consumers") for name in names)
    )
    return sum(len(batch) for batch in consumers)


async def full_cycle(nc: Client, settings: Settings, renderer: Renderer) -> int:
    """What the daemon does each cycle: one source per connection and one renderer for its lifetime."""
    source = JetStreamSource(nc, settings)
    snapshot = await source.fetch_snapshot(None)
    health = ExporterHealth(up=True, collection_duration_seconds=1.0, last_success_timestamp=time.time())
    exposition = await build_exposition(renderer, snapshot, health)
    return exposition.text.length


@dataclass(frozen=True)
class Cycles:
    """Median seconds, interleaved so that machine noise hits all alike."""

    floor: float
    steady: float  # one renderer across cycles, as the daemon; the data did not change in between
    changed: float  # a fresh renderer each cycle: every series re-rendered, as when all of them change
    first: float  # the first cycle after start: also the label-block memo is cold


async def side_by_side(nc: Client, settings: Settings, repeats: int) -> Cycles:
    await floor_fetch(nc)  # warm-up: server caches, imports
    renderer = Renderer()
    first = (await timed(lambda: full_cycle(nc, settings, renderer), 1))[0]
    floors: list[float] = []
    steady: list[float] = []
    changed: list[float] = []
    for _ in range(repeats):
        floors += await timed(lambda: floor_fetch(nc), 1)
        steady += await timed(lambda: full_cycle(nc, settings, renderer), 1)
        changed += await timed(lambda: full_cycle(nc, settings, Renderer()), 1)
    return Cycles(statistics.median(floors), statistics.median(steady), statistics.median(changed), first)


async def scrape_latencies(url: str, total: int) -> list[float]:
    latencies: list[float] = []
    per_scraper = total // SCRAPERS
    headers = {"Accept-Encoding": "gzip"}
    async with aiohttp.ClientSession() as session:

        async def scraper() -> None:
            for _ in range(per_scraper):
                started = time.perf_counter()
                async with session.get(url, headers=headers) as response:
                    await response.read()
                    assert response.status == 200
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(scraper() for _ in range(SCRAPERS)))
    return latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


async def wait_http(url: str, deadline_seconds: float = 60) -> None:
    deadline = time.monotonic() + deadline_seconds
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} not ready within {deadline_seconds}s")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def last_success(session: aiohttp.ClientSession, url: str) -> float | None:
    async with session.get(url) as response:
        for line in (await response.text()).splitlines():
            if line.startswith("nats_exporter_last_success_timestamp_seconds "):
                return float(line.split()[1])
    return None


async def requests_per_cycle(nc: Client, metrics_url: str, scrapers: int, cycles: int) -> float:
    """API requests between consecutive completed cycles, read from the server's api.total counter."""
    stop = asyncio.Event()

    async def hammer(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            async with session.get(metrics_url) as response:
                await response.read()

    async with aiohttp.ClientSession() as session:
        load = [asyncio.create_task(hammer(session)) for _ in range(scrapers)]
        try:
            counts = []
            seen = await last_success(session, metrics_url)
            start_total: int | None = None
            while len(counts) < cycles:
                current = await last_success(session, metrics_url)
                if current != seen:
                    seen = current
                    info = await request_json(nc, "$JS.API.INFO")
                    total = int(info["api"]["total"])  # type: ignore[index]
                    if start_total is not None:
                        counts.append(total - start_total - 1)  # minus our own INFO request
                    start_total = total
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await asyncio.gather(*load, return_exceptions=True)
    return statistics.median(counts)


async def run(streams: int, repeats: int, scrapes: int, results: Results) -> None:
    settings = Settings(
        collection=CollectionSettings(concurrency=CONCURRENCY, deadline_seconds=120, interval_seconds=300)
    )
    with NatsServerProcess(jetstream_max_memory="4GB", server_name="bench") as server:
        nc = await nats.connect(server.url)
        try:
            started = time.perf_counter()
            await build_streams(nc, 0, streams)
            results.add(
                f"built {streams} streams x {CONSUMERS_PER_STREAM} consumers "
                f"in {time.perf_counter() - started:.1f}s"
            )

            cycles = await side_by_side(nc, settings, repeats)
            floor, cycle = cycles.floor, cycles.steady
            size = await full_cycle(nc, settings, Renderer())
            results.add(
                f"(a) floor: bare paged raw-JSON fetch           {floor:8.3f} s (median of {repeats})"
            )
            results.add(
                f"(b) exporter full cycle (fetch+render+gzip)    {cycle:8.3f} s ({size / 1e6:.1f} MB text)"
            )
            results.add(
                f"    ratio (b)/(a) = {cycle / floor:.2f}   target <= 2.0   {verdict(cycle / floor <= 2.0)}"
            )
            results.add(
                f"    every series changed since the last cycle   {cycles.changed:.3f} s, "
                f"ratio {cycles.changed / floor:.2f}   {verdict(cycles.changed / floor <= 2.0)}"
            )
            results.add(
                f"    first cycle after start (cold label cache)  {cycles.first:.3f} s, "
                f"ratio {cycles.first / floor:.2f}"
            )

            await scrape_and_rss(nc, server, streams, scrapes, results)

            started = time.perf_counter()
            await build_streams(nc, streams, streams)
            results.add(f"built {streams} more streams in {time.perf_counter() - started:.1f}s")
            doubled = await side_by_side(nc, settings, repeats)
            floor_double, cycle_double = doubled.floor, doubled.steady
            ratio = cycle_double / cycle
            results.add(f"(f) full cycle at {2 * streams} x 10               {cycle_double:8.3f} s")
            # The server's own cost per request grows with the number of streams, so the floor is printed
            # too: a cycle ratio near the floor's is the server's scaling, not the exporter's.
            results.add(
                f"    floor at {2 * streams} x 10 {floor_double:.3f} s: "
                f"floor ratio {floor_double / floor:.2f}, "
                f"(b) at {2 * streams} over its floor {cycle_double / floor_double:.2f}"
            )
            results.add(f"    ratio (f) = {ratio:.2f}   target <= 2.2   {verdict(ratio <= 2.2)}")
        finally:
            await nc.close()


async def scrape_and_rss(
    nc: Client, server: NatsServerProcess, streams: int, scrapes: int, results: Results
) -> None:
    port, bare_port = free_port(), free_port()
    interval = "10s"
    exporter = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exporter",
            "--nats-url",
            server.url,
            "--web.listen-address",
            f"127.0.0.1:{port}",
            "--interval",
            interval,
            "--log-level",
            "warning",
        ],
        stdin=subprocess.DEVNULL,
    )
    try:
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        await wait_http(f"http://127.0.0.1:{port}/readyz", 120)
        async with aiohttp.ClientSession() as session, session.get(metrics_url) as response:
            body = await response.read()
        with tempfile.NamedTemporaryFile(suffix=".prom", delete=False) as handle:
            handle.write(body)
        bare = subprocess.Popen(
            [sys.executable, str(BARE_SERVER), handle.name, str(bare_port)], stdin=subprocess.DEVNULL
        )
        try:
            bare_url = f"http://127.0.0.1:{bare_port}/metrics"
            await wait_http(bare_url)
            await scrape_latencies(metrics_url, 200)  # warm-up both
            await scrape_latencies(bare_url, 200)
            ours, theirs = [], []
            for _ in range(3):  # interleaved rounds
                ours += await scrape_latencies(metrics_url, scrapes // 3)
                theirs += await scrape_latencies(bare_url, scrapes // 3)
        finally:
            stop_process(bare)
            Path(handle.name).unlink()
        p50, p99 = percentile(ours, 0.5) * 1000, percentile(ours, 0.99) * 1000
        b50, b99 = percentile(theirs, 0.5) * 1000, percentile(theirs, 0.99) * 1000
        results.add(
            f"(c) /metrics with {SCRAPERS} scrapers ({len(body) / 1e6:.1f} MB, gzip negotiated, "
            f"{len(ours)} requests each)"
        )
        results.add(f"    exporter p50 {p50:7.2f} ms  p99 {p99:7.2f} ms")
        results.add(f"    bare     p50 {b50:7.2f} ms  p99 {b99:7.2f} ms")
        results.add(f"    p99 ratio = {p99 / b99:.2f}   target <= 1.5   {verdict(p99 / b99 <= 1.5)}")

        one = await requests_per_cycle(nc, metrics_url, 1, 3)
        eight = await requests_per_cycle(nc, metrics_url, SCRAPERS, 3)
        expected = 1 + math.ceil(streams / PAGE) + streams
        results.add(
            f"(e) JetStream API requests per cycle: 1 scraper {one:.0f}, {SCRAPERS} scrapers {eight:.0f}; "
            f"1 + ceil(N/256) + N = {expected}   {verdict(one == eight == expected)}"
        )
        rss = peak_rss_mb(exporter.pid)
        results.add(f"(d) exporter peak RSS {rss:.0f} MB   target <= 150 MB   {verdict(rss <= 150)}")
    finally:
        stop_process(exporter)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000, help="N streams (each with 10 consumers)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats of (a) and (b)")
    parser.add_argument("--scrapes", type=int, default=2400, help="scrape requests per server for (c)")
    parser.add_argument("--output", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    results = Results([])
    results.header(
        "bench",
        f"python -m bench --streams {args.streams} --repeats {args.repeats} --scrapes {args.scrapes}",
    )
    asyncio.run(run(args.streams, args.repeats, args.scrapes, results))
    results.write(args.output)


if __name__ == "__main__":
    main()
