"""How long the JetStream API takes to answer each collection request while one cluster member is down.

``python -m bench.cluster_requests`` starts a 3-node loopback cluster with three R3 streams (one consumer
each) and one R1 stream on a member the client is not connected to, then times every request pattern the
source could use: healthy; with the R1 stream's only member killed; with the R3 stream leader killed
(during its election); with the meta leader killed. Prints one table per moment; the figures chose the
source's request pattern and its default request timeout (see exporter/source.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import nats
from nats.aio.client import Client

from exporter.natsserver import NatsCluster

TIMEOUT_SECONDS = 12.0


async def timed(nc: Client, api: str, payload: dict[str, Any] | None = None) -> str:
    data = json.dumps(payload).encode() if payload is not None else b""
    started = time.monotonic()
    try:
        msg = await nc.request(f"$JS.API.{api}", data, timeout=TIMEOUT_SECONDS)
    except nats.errors.Error as exc:
        return f"{time.monotonic() - started:6.2f}s  {type(exc).__name__}"
    elapsed = time.monotonic() - started
    reply = json.loads(msg.data)
    note = ""
    if "error" in reply:
        note = f"error {reply['error'].get('err_code')}"
    elif "missing" in reply or "offline" in reply:
        note = f"missing={reply.get('missing')} offline={list(reply.get('offline') or {})}"
    elif "cluster" in reply:
        note = f"leader={reply['cluster'].get('leader', '')!r}"
    return f"{elapsed:6.2f}s  {note}"


async def measure(nc: Client, label: str, streams: list[str]) -> None:
    print(f"\n## {label}")
    patterns: list[tuple[str, str, dict[str, Any] | None]] = [
        ("INFO", "INFO", None),
        ("STREAM.LIST", "STREAM.LIST", {"offset": 0}),
        ("STREAM.NAMES", "STREAM.NAMES", {"offset": 0}),
    ]
    patterns += [(f"STREAM.INFO.{s}", f"STREAM.INFO.{s}", None) for s in streams]
    patterns += [(f"CONSUMER.LIST.{s}", f"CONSUMER.LIST.{s}", {"offset": 0}) for s in streams]
    results = await asyncio.gather(*(timed(nc, api, payload) for _, api, payload in patterns))
    for (name, _, _), result in zip(patterns, results, strict=True):
        print(f"  {name:<28} {result}")


async def main() -> None:
    with NatsCluster() as cluster:
        entry = cluster.members[0]
        nc = await nats.connect(entry.url)
        js = nc.jetstream()
        r3 = ["R3_A", "R3_B", "R3_C"]
        for name in r3:
            await js.add_stream(name=name, subjects=[f"{name.lower()}.>"], num_replicas=3)
            await js.add_consumer(name, durable_name="reader")
            await js.publish(f"{name.lower()}.x", b"x")
        await js.add_stream(
            name="R1_EDGE", subjects=["edge.>"], num_replicas=1, placement={"tags": ["node:3"]}
        )
        await js.add_consumer("R1_EDGE", durable_name="reader")
        streams = [*r3, "R1_EDGE"]
        await measure(nc, "healthy", streams)

        cluster.member("n3").kill()
        killed = time.monotonic()
        await measure(nc, "n3 (R1_EDGE's only member) killed (SIGKILL)", streams)
        for after in (3, 6, 12):
            await asyncio.sleep(max(0, killed + after - time.monotonic()))
            await measure(nc, f"n3 killed, {after} s later", streams)
        cluster.member("n3").start()
        await asyncio.sleep(3)

        info = json.loads((await nc.request("$JS.API.STREAM.INFO.R3_A", b"", timeout=5)).data)
        leader = info["cluster"]["leader"]
        if leader == entry.server_name:
            await nc.request("$JS.API.STREAM.LEADER.STEPDOWN.R3_A", b"", timeout=5)
            await asyncio.sleep(5)
            leader = json.loads((await nc.request("$JS.API.STREAM.INFO.R3_A", b"", timeout=5)).data)[
                "cluster"
            ]["leader"]
        print(f"\nR3_A leader: {leader}; meta leader: {cluster.meta_leader()}")
        cluster.member(leader).kill()
        killed = time.monotonic()
        await measure(nc, f"{leader} (R3_A's leader) killed (SIGKILL)", streams)
        for after in (3, 6):
            await asyncio.sleep(max(0, killed + after - time.monotonic()))
            await measure(nc, f"{leader} killed, {after} s later", streams)
        cluster.member(leader).start()
        cluster.wait_until_formed()

        meta = cluster.wait_for_meta_leader()
        if meta == entry.server_name:
            print("\nthe meta leader is the connected server: its kill is a reconnect, not measured here")
        else:
            cluster.member(meta).kill()
            killed = time.monotonic()
            await measure(nc, f"{meta} (the meta leader) killed (SIGKILL)", streams)
            for after in (3, 6):
                await asyncio.sleep(max(0, killed + after - time.monotonic()))
                await measure(nc, f"{meta} killed, {after} s later", streams)
        await nc.close()


if __name__ == "__main__":
    asyncio.run(main())
