"""Scrape load against collection: ``python -m bench.load`` (or ``make bench-load``).

Runs the exporter as its own process against N streams x 5 consumers with a 2 s interval and records
every collection cycle, side by side in one run: a quiet phase, a phase with many continuous scrapers
(each fetching /metrics again as soon as the last body arrived, gzip negotiated, as Prometheus does),
and a quiet phase again. Cycles are read from the exporter's own gauges: the duration of each cycle,
and failed cycles from ``nats_exporter_collection_errors_total`` (a timeout is stage="timeout").
The targets: no failed cycle under load, and the median cycle under load at most 1.5x the quiet one.
Where the time goes: CPU seconds per phase of the exporter's main thread (NATS client and collection),
its other threads (the HTTP server, rendering workers), nats-server and the scrapers (this process).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import nats

from bench.__main__ import Results, build_streams, verdict, wait_http
from exporter.natsserver import NatsServerProcess, free_port, stop_process

INTERVAL = "2s"
POLL_SECONDS = 0.25
TARGET_RATIO = 1.5
_DURATION = re.compile(rb"^nats_exporter_collection_duration_seconds (\S+)$", re.MULTILINE)
_SUCCESS = re.compile(rb"^nats_exporter_last_success_timestamp_seconds (\S+)$", re.MULTILINE)
_ERRORS = re.compile(rb'^nats_exporter_collection_errors_total\{stage="([^"]+)"\} (\S+)$', re.MULTILINE)


def cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of a process, by thread id."""
    ticks = os.sysconf("SC_CLK_TCK")
    seconds: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        seconds[int(task.name)] = (int(fields[11]) + int(fields[12])) / ticks
    return seconds


@dataclass(frozen=True)
class CpuSnapshot:
    exporter_main: float
    exporter_others: float
    nats_server: float
    scrapers: float

    @classmethod
    def take(cls, exporter: int, nats_server: int) -> CpuSnapshot:
        threads = cpu_seconds(exporter)
        main = threads.pop(exporter, 0.0)
        return cls(
            main,
            sum(threads.values()),
            sum(cpu_seconds(nats_server).values()),
            sum(cpu_seconds(os.getpid()).values()),
        )

    def since(self, earlier: CpuSnapshot) -> CpuSnapshot:
        return CpuSnapshot(
            self.exporter_main - earlier.exporter_main,
            self.exporter_others - earlier.exporter_others,
            self.nats_server - earlier.nats_server,
            self.scrapers - earlier.scrapers,
        )


@dataclass
class Phase:
    """The cycles seen during one phase of the run."""

    name: str
    durations: list[float] = field(default_factory=list)
    failures: dict[str, float] = field(default_factory=dict)
    scrapes: int = 0
    scrape_errors: int = 0
    cpu: CpuSnapshot | None = None
    wall: float = 0.0

    @property
    def median(self) -> float:
        return statistics.median(self.durations) if self.durations else float("nan")

    @property
    def failed(self) -> float:
        return sum(self.failures.values())


@dataclass(frozen=True)
class Reading:
    duration: float | None
    last_success: float | None
    errors: dict[str, float]


async def read_health(session: aiohttp.ClientSession, url: str) -> Reading:
    async with session.get(url, headers={"Accept-Encoding": "gzip"}) as response:
        body = await response.read()
    duration, success = _DURATION.search(body), _SUCCESS.search(body)
    return Reading(
        float(duration.group(1)) if duration else None,
        float(success.group(1)) if success else None,
        {stage.decode(): float(value) for stage, value in _ERRORS.findall(body)},
    )


async def observe(url: str, phase: Phase, seconds: float) -> None:
    """Record each completed cycle (a new last-success timestamp or a new error) for ``seconds``."""
    async with aiohttp.ClientSession() as session:
        first = await read_health(session, url)
        seen, errors = first.last_success, first.errors
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await asyncio.sleep(POLL_SECONDS)
            reading = await read_health(session, url)
            if reading.last_success != seen and reading.duration is not None:
                phase.durations.append(reading.duration)
                seen = reading.last_success
            for stage, value in reading.errors.items():
                increase = value - errors.get(stage, 0.0)
                if increase > 0:
                    phase.failures[stage] = phase.failures.get(stage, 0.0) + increase
            errors = reading.errors


async def scrape_continuously(url: str, phase: Phase, stop: asyncio.Event) -> None:
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(auto_decompress=False, timeout=timeout) as session:
        while not stop.is_set():
            try:
                async with session.get(url, headers={"Accept-Encoding": "gzip"}) as response:
                    await response.read()
                phase.scrapes += 1
            except (aiohttp.ClientError, TimeoutError):
                phase.scrape_errors += 1


async def loaded(url: str, phase: Phase, scrapers: int, seconds: float) -> None:
    stop = asyncio.Event()
    load = [asyncio.create_task(scrape_continuously(url, phase, stop)) for _ in range(scrapers)]
    try:
        await observe(url, phase, seconds)
    finally:
        stop.set()
        await asyncio.gather(*load, return_exceptions=True)


async def measured(pids: tuple[int, int], phase: Phase, work: Coroutine[Any, Any, None]) -> None:
    before, started = CpuSnapshot.take(*pids), time.monotonic()
    await work
    phase.cpu, phase.wall = CpuSnapshot.take(*pids).since(before), time.monotonic() - started


async def run(args: argparse.Namespace, results: Results) -> None:
    streams, consumers, scrapers, seconds = args.streams, args.consumers, args.scrapers, args.seconds
    source: Path | None = args.exporter_source
    with NatsServerProcess(jetstream_max_memory="4GB", server_name="bench-load") as server:
        nc = await nats.connect(server.url)
        try:
            await build_streams(nc, 0, streams, consumers)
        finally:
            await nc.close()
        results.add(f"built {streams} streams x {consumers} consumers; interval {INTERVAL}")
        port = free_port()
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
                INTERVAL,
                "--log-level",
                "warning",
            ],
            stdin=subprocess.DEVNULL,
            env=os.environ | {"PYTHONPATH": str(source)} if source is not None else None,
            cwd=source,
        )
        try:
            url = f"http://127.0.0.1:{port}/metrics"
            await wait_http(f"http://127.0.0.1:{port}/readyz", 120)
            quiet, busy, quiet_again = Phase("quiet"), Phase(f"{scrapers} scrapers"), Phase("quiet again")
            pids = (exporter.pid, server.pid or 0)
            await measured(pids, quiet, observe(url, quiet, seconds / 2))
            await measured(pids, busy, loaded(url, busy, scrapers, seconds))
            await measured(pids, quiet_again, observe(url, quiet_again, seconds / 2))
        finally:
            stop_process(exporter)
    for phase in (quiet, busy, quiet_again):
        failures = ", ".join(f"{stage} {count:.0f}" for stage, count in sorted(phase.failures.items()))
        scrapes = f", {phase.scrapes} scrapes ({phase.scrape_errors} failed)" if phase.scrapes else ""
        results.add(
            f"{phase.name:<14} {len(phase.durations):3d} cycles, median {phase.median:.3f} s, "
            f"max {max(phase.durations, default=float('nan')):.3f} s, "
            f"failed cycles {phase.failed:.0f}{f' ({failures})' if failures else ''}{scrapes}"
        )
        if phase.cpu is not None:
            cpu = phase.cpu
            results.add(
                f"{'':14} CPU s per wall s: exporter main thread {cpu.exporter_main / phase.wall:.2f}, "
                f"other threads {cpu.exporter_others / phase.wall:.2f}, "
                f"nats-server {cpu.nats_server / phase.wall:.2f}, scrapers {cpu.scrapers / phase.wall:.2f}"
            )
    baseline = statistics.median(quiet.durations + quiet_again.durations)
    ratio = busy.median / baseline
    results.add(
        f"cycle under load / quiet = {busy.median:.3f} / {baseline:.3f} = {ratio:.2f}   "
        f"target <= {TARGET_RATIO}   {verdict(ratio <= TARGET_RATIO)}"
    )
    results.add(f"failed cycles under load {busy.failed:.0f}   target 0   {verdict(busy.failed == 0)}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000, help="N streams")
    parser.add_argument("--consumers", type=int, default=5, help="consumers per stream")
    parser.add_argument("--scrapers", type=int, default=50, help="continuous scrapers in the loaded phase")
    parser.add_argument("--seconds", type=float, default=60, help="length of the loaded phase")
    parser.add_argument(
        "--exporter-source", type=Path, help="run the exporter from this checkout (to compare versions)"
    )
    parser.add_argument("--output", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    results = Results([])
    results.add(
        f"# bench.load {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on {platform.node()}: {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {platform.machine()}"
    )
    results.add(
        f"# command: python -m bench.load --streams {args.streams} --consumers {args.consumers} "
        f"--scrapers {args.scrapers} --seconds {args.seconds:g}"
        + (f" --exporter-source {args.exporter_source}" if args.exporter_source else "")
    )
    asyncio.run(run(args, results))
    if args.output:
        args.output.write_text("\n".join(results.lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
