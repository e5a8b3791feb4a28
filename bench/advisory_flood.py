"""Flood a running exporter with spoofed NAK advisories for unique consumers; print what it reports.

    .venv/bin/python -m bench.advisory_flood 300000

Starts a nats-server (one stream, one consumer) and the exporter as a separate process (so its resident
memory is its own), waits for the first collection, publishes N advisories as fast as one client can,
then reads /metrics and the exporter's resident memory for 10 s.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import nats

from exporter.natsserver import NatsServerProcess, free_port

WATCHED = ("nats_up ", "nats_exporter_dropped_advisories_total ", "nats_exporter_malformed_advisories_total ")


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def exported(port: int) -> dict[str, float]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    found: dict[str, float] = {"naks_series": 0}
    for line in text.splitlines():
        if line.startswith(WATCHED):
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
        elif line.startswith("nats_consumer_naks_total{"):
            found["naks_series"] += 1
    return found


def spoofed(n: int) -> tuple[str, bytes]:
    payload = {
        "type": "io.nats.jetstream.advisory.v1.nak",
        "id": "spoofed",
        "timestamp": "2026-11-29T12:00:00Z",
        "stream": "ORDERS",
        "consumer": f"spoof-{n}",
        "consumer_seq": 1,
        "stream_seq": 1,
        "deliveries": 1,
    }
    return f"$JS.EVENT.ADVISORY.CONSUMER.MSG_NAKED.ORDERS.spoof-{n}", json.dumps(payload).encode()


async def wait_for_first_cycle(port: int) -> dict[str, float]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            found = await exported(port)
        except aiohttp.ClientError:
            found = {}
        if found.get("nats_up") == 1 and found.get("naks_series"):
            return found
        await asyncio.sleep(0.1)
    raise SystemExit("the exporter did not collect within 30 s")


async def flood(count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, NatsServerProcess(store_dir=Path(tmp) / "store") as server:
        nc = await nats.connect(server.url)
        stream = {"name": "ORDERS", "subjects": ["orders.>"]}
        await nc.request("$JS.API.STREAM.CREATE.ORDERS", json.dumps(stream).encode(), timeout=5)
        consumer = {"stream_name": "ORDERS", "config": {"durable_name": "worker", "ack_policy": "explicit"}}
        await nc.request("$JS.API.CONSUMER.CREATE.ORDERS.worker", json.dumps(consumer).encode(), timeout=5)
        port = free_port()
        log_path = Path(tmp) / "exporter.log"
        with log_path.open("w") as log:
            exporter = subprocess.Popen(
                [sys.executable, "-m", "exporter", "--nats-url", server.url, "--interval", "1s",
                 "--web.listen-address", f"127.0.0.1:{port}", "--log-level", "warning"],
                stderr=log,
            )  # fmt: skip
        try:
            before = await wait_for_first_cycle(port)
            print(f"before: {before}; RSS {resident_mb(exporter.pid):.0f} MB")
            started = time.monotonic()
            for n in range(count):
                await nc.publish(*spoofed(n))
            await nc.flush(timeout=60)
            print(f"published {count} advisories in {time.monotonic() - started:.1f} s")
            peak = 0.0
            for _ in range(100):
                peak = max(peak, resident_mb(exporter.pid))
                await asyncio.sleep(0.1)
            after = await exported(port)
            print(f"after:  {after}; RSS {resident_mb(exporter.pid):.0f} MB, peak {peak:.0f} MB")
            lines = log_path.read_text().splitlines()
            print(f"exporter log: {len(lines)} lines")
        finally:
            exporter.terminate()
            exporter.wait(10)
            await nc.close()


if __name__ == "__main__":
    asyncio.run(flood(int(sys.argv[1]) if len(sys.argv) > 1 else 300_000))
