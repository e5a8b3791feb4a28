"""Benchmark harness: ``python -m bench`` (or ``make bench``).

Builds N streams x 10 consumers in a real nats-server and measures, side by side in one run:
(a) the floor: a bare paged raw-JSON fetch of the same data with the same concurrency;
(b) the exporter's full cycle: fetch, snapshot, render both formats, compress;
(c) /metrics latency p50/p99 with 8 concurrent scrapers, exporter vs a bare aiohttp handler serving the
    same bytes (both in their own processes);
(d) the exporter process's peak RSS;
(e) JetStream API requests per cycle with 1 and with 8 scrapers (read from the server's own counter);
(f) the growth of the cycle over its floor from one size to the next (--streams takes several sizes).
Prints a table of figures and ratios against the targets; --output writes it to a file as well.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import os
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


async def requests_per_cycle(
    nc: Client, metrics_url: str, scrapers: int, cycles: int, within_seconds: float
) -> float:
    """API requests between consecutive completed cycles, read from the server's api.total counter.

    NaN when fewer than ``cycles`` completed within ``within_seconds`` (a machine too busy for the deadline).
    """
    stop = asyncio.Event()

    async def hammer(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            async with session.get(metrics_url) as response:
                await response.read()

    async with aiohttp.ClientSession() as session:
        load = [asyncio.create_task(hammer(session)) for _ in range(scrapers)]
        try:
            counts: list[int] = []
            seen = await last_success(session, metrics_url)
            start_total: int | None = None
            deadline = time.monotonic() + within_seconds
            while len(counts) < cycles and time.monotonic() < deadline:
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
    return statistics.median(counts) if len(counts) == cycles else math.nan


@dataclass(frozen=True)
class SizeResult:
    streams: int
    cycles: Cycles
    rss_mb: float
    p99_ratio: float


def consumers_at(streams: int) -> int:
    return streams * CONSUMERS_PER_STREAM


async def run(sizes: list[int], repeats: int, scrapes: int, results: Results) -> None:
    settings = Settings(
        collection=CollectionSettings(concurrency=CONCURRENCY, deadline_seconds=600, interval_seconds=900)
    )
    measured: list[SizeResult] = []
    with NatsServerProcess(jetstream_max_memory="8GB", server_name="bench") as server:
        nc = await nats.connect(server.url)
        try:
            built = 0
            for streams in sizes:
                started = time.perf_counter()
                await build_streams(nc, built, streams - built)
                built = streams
                results.add(
                    f"## {streams} streams x {CONSUMERS_PER_STREAM} consumers "
                    f"(built in {time.perf_counter() - started:.1f}s)"
                )
                measured.append(await measure_size(nc, server, settings, streams, repeats, scrapes, results))
                # (e) once: the count is a formula of N, and the cycles it waits for are long at scale
                if streams == sizes[0]:
                    await count_requests(nc, server, streams, results)
        finally:
            await nc.close()
    summarize(measured, results)


async def measure_size(  # noqa: PLR0917 (one bench step: every argument is the run's own)
    nc: Client,
    server: NatsServerProcess,
    settings: Settings,
    streams: int,
    repeats: int,
    scrapes: int,
    results: Results,
) -> SizeResult:
    cycles = await side_by_side(nc, settings, repeats)
    floor, cycle = cycles.floor, cycles.steady
    size = await full_cycle(nc, settings, Renderer())
    results.add(f"(a) floor: bare paged raw-JSON fetch           {floor:8.3f} s (median of {repeats})")
    results.add(f"(b) exporter full cycle (fetch+render+gzip)    {cycle:8.3f} s ({size / 1e6:.1f} MB text)")
    results.add(f"    ratio (b)/(a) = {cycle / floor:.2f}   target <= 1.5   {verdict(cycle / floor <= 1.5)}")
    results.add(
        f"    every series changed since the last cycle   {cycles.changed:.3f} s, "
        f"ratio {cycles.changed / floor:.2f}   {verdict(cycles.changed / floor <= 1.5)}"
    )
    results.add(
        f"    first cycle after start (cold label cache)  {cycles.first:.3f} s, "
        f"ratio {cycles.first / floor:.2f}"
    )
    # The daemon's interval and deadline follow the measured cycle, so that it completes several cycles
    # (steady-state memory, not only the first) without being cut off on a busy machine.
    interval = max(20, math.ceil(6 * cycles.changed))
    rss, p99_ratio = await scrape_and_rss(server, streams, scrapes, interval, results)
    return SizeResult(streams, cycles, rss, p99_ratio)


def summarize(measured: list[SizeResult], results: Results) -> None:
    """The table across sizes and the growth of the exporter's own share between consecutive sizes."""
    results.add("## summary")
    results.add(
        "| streams x 10 | floor s | cycle s | cycle/floor | changed/floor | peak RSS MB | p99 ratio |"
    )
    results.add("|---|---|---|---|---|---|---|")
    for size in measured:
        c = size.cycles
        results.add(
            f"| {size.streams} | {c.floor:.3f} | {c.steady:.3f} | {c.steady / c.floor:.2f} | "
            f"{c.changed / c.floor:.2f} | {size.rss_mb:.0f} | {size.p99_ratio:.2f} |"
        )
    for small, large in itertools.pairwise(measured):
        growth = (large.cycles.steady / large.cycles.floor) / (small.cycles.steady / small.cycles.floor)
        # the exporter's own seconds per consumer (cycle minus floor): flat when its share grows linearly
        own_small = (small.cycles.steady - small.cycles.floor) / consumers_at(small.streams) * 1e6
        own_large = (large.cycles.steady - large.cycles.floor) / consumers_at(large.streams) * 1e6
        results.add(
            f"(f) {large.streams} over {small.streams}: cycle/floor grows {growth:.2f}x "
            f"(target <= 1.15)   {verdict(growth <= 1.15)}; exporter's own share "
            f"{own_small:.1f} -> {own_large:.1f} us per consumer; the floor grows "
            f"{large.cycles.floor / small.cycles.floor:.2f}x for {large.streams / small.streams:.1f}x streams"
        )
    largest = measured[-1]
    results.add(
        f"(d) peak RSS at {largest.streams} x 10: {largest.rss_mb:.0f} MB "
        f"({largest.rss_mb * 1024 / consumers_at(largest.streams):.1f} KB per consumer)"
        f"   target <= 300 MB at 10000 x 10   {verdict(largest.rss_mb <= 300)}"
    )


def start_exporter(server: NatsServerProcess, port: int, interval: int) -> subprocess.Popen[bytes]:
    environment = {**os.environ, "NATS_EXPORTER_DEADLINE": f"{interval * 3 // 4}s"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exporter",
            "--nats-url",
            server.url,
            "--web.listen-address",
            f"127.0.0.1:{port}",
            "--interval",
            f"{interval}s",
            "--log-level",
            "warning",
        ],
        stdin=subprocess.DEVNULL,
        env=environment,
    )


async def count_requests(nc: Client, server: NatsServerProcess, streams: int, results: Results) -> None:
    port = free_port()
    interval = 20
    exporter = start_exporter(server, port, interval)
    try:
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        await wait_http(f"http://127.0.0.1:{port}/readyz", 300)
        one = await requests_per_cycle(nc, metrics_url, 1, 3, 8 * interval)
        eight = await requests_per_cycle(nc, metrics_url, SCRAPERS, 3, 8 * interval)
        expected = 1 + math.ceil(streams / PAGE) + streams
        results.add(
            f"(e) JetStream API requests per cycle: 1 scraper {one:.0f}, {SCRAPERS} scrapers {eight:.0f}; "
            f"1 + ceil(N/256) + N = {expected}   {verdict(one == eight == expected)}"
        )
    finally:
        stop_process(exporter)


async def scrape_and_rss(
    server: NatsServerProcess, streams: int, scrapes: int, interval: int, results: Results
) -> tuple[float, float]:
    """(c) and (d): the daemon as its own process, its /metrics against a bare server of the same bytes."""
    port, bare_port = free_port(), free_port()
    exporter = start_exporter(server, port, interval)
    # Larger bodies take longer per request: about the same bytes are moved at every size.
    scrapes = max(SCRAPERS * 30, scrapes * 1000 // streams)
    try:
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        await wait_http(f"http://127.0.0.1:{port}/readyz", 600)
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

        await wait_cycles(metrics_url, 2, interval)
        rss = peak_rss_mb(exporter.pid)
        results.add(
            f"(d) exporter peak RSS {rss:.0f} MB after at least 3 cycles "
            f"({rss * 1024 / consumers_at(streams):.1f} KB per consumer, interval {interval}s)"
        )
    finally:
        stop_process(exporter)
    return rss, p99 / b99


async def wait_cycles(metrics_url: str, cycles: int, interval: int) -> None:
    """Until the daemon completed ``cycles`` more cycles: its peak includes steady state, not only start."""
    async with aiohttp.ClientSession() as session:
        seen = await last_success(session, metrics_url)
        deadline = time.monotonic() + (cycles + 1) * interval * 2
        while cycles and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            current = await last_success(session, metrics_url)
            if current != seen:
                seen, cycles = current, cycles - 1


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--streams",
        type=lambda text: sorted({int(part) for part in text.split(",")}),
        default=[1000, 2000],
        help="comma-separated stream counts (each stream with 10 consumers), measured in one run",
    )
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats of (a) and (b)")
    parser.add_argument("--scrapes", type=int, default=2400, help="scrape requests per server for (c)")
    parser.add_argument("--output", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    results = Results([])
    results.header(
        "bench",
        f"python -m bench --streams {','.join(map(str, args.streams))} --repeats {args.repeats} "
        f"--scrapes {args.scrapes}",
    )
    asyncio.run(run(args.streams, args.repeats, args.scrapes, results))
    results.write(args.output)


if __name__ == "__main__":
    main()
