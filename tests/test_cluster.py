"""Collection from a real 3-node cluster while members fail: nothing blinds the exporter.

One cluster serves every test of the module (starting one costs about a second; elections cost more), and
each test leaves every member running. The exporter collects every second from n1 and is scraped every
0.2 s; every scrape must be 200 with ``nats_up 1`` while a member other than n1 is down.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from support.cluster import (
    Watch,
    create_placed_stream,
    fast_settings,
    lead_away_from,
    restart_all,
    stream_info,
    watched_exporter,
)
from support.spec_platform import create_consumer, publish_when_routed
from support.waiting import wait_for

from exporter.natsserver import NatsCluster
from exporter.settings import FilterSettings, Settings
from exporter.source import JetStreamSource

pytestmark = pytest.mark.timeout(120)

ENTRY = "n1"  # the exporter's server, never killed, except where a test picks another one for the exporter
ACCOUNT = "$G"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with NatsCluster(Path(tmp_path_factory.mktemp("cluster"))) as started:
        yield started


@pytest.fixture
async def nc(cluster: NatsCluster) -> AsyncIterator[Client]:
    restart_all(cluster)
    connection = await nats.connect(servers=cluster.urls)
    try:
        yield connection
    finally:
        await connection.close()
        restart_all(cluster)


async def replicated_stream(nc: Client, name: str, messages: int) -> None:
    """An R3 stream with an R3 consumer and ``messages`` messages, led by a member other than n1."""
    await create_placed_stream(nc, name, [f"{name.lower()}.>"], num_replicas=3)
    await create_consumer(nc, name, {"name": "reader", "durable_name": "reader"})
    for _ in range(messages):
        await publish_when_routed(nc, f"{name.lower()}.event", b"x")
    await lead_away_from(nc, name, ENTRY)


def assert_always_up(watch: Watch) -> None:
    """Every scrape 200, and nats_up 1 from the first successful collection on."""
    assert set(watch.statuses) == {200}
    assert set(watch.up[watch.up.index(1.0) :]) == {1.0}, watch.up


def stream_value(watch: Watch, family: str, stream: str, **labels: str) -> float | None:
    return watch.value(family, account=ACCOUNT, stream=stream, **labels)


async def matches_leader(nc: Client, watch: Watch, stream: str) -> bool:
    info = await stream_info(nc, stream)
    if info is None:
        return False
    return stream_value(watch, "nats_stream_messages_total", stream) == info["state"]["last_seq"] and (
        stream_value(watch, "nats_stream_stored_messages", stream) == info["state"]["messages"]
    )


def all_current(watch: Watch, stream: str, peers: int) -> bool:
    return stream_value(watch, "nats_stream_replicas_current", stream) == peers and all(
        watch.latest[("nats_stream_replica_current", series)] == 1
        for series in watch.series("nats_stream_replica_current", stream=stream)
    )


async def test_a_killed_follower_and_the_r1_stream_on_it(cluster: NatsCluster, nc: Client) -> None:
    await replicated_stream(nc, "ORDERS", messages=3)
    info = await stream_info(nc, "ORDERS")
    assert info is not None
    follower = next(m for m in cluster.members if m.server_name not in (ENTRY, info["cluster"]["leader"]))
    # EDGE's only replica is on the follower: while it is down, EDGE cannot be read at all.
    await create_placed_stream(
        nc, "EDGE", ["edge.>"], num_replicas=1, placement={"tags": [f"node:{follower.server_name[1:]}"]}
    )
    await create_consumer(nc, "EDGE", {"name": "edge-reader", "durable_name": "edge-reader"})
    await publish_when_routed(nc, "edge.event", b"x")
    peers = {m.server_name for m in cluster.members}

    async with watched_exporter(fast_settings(cluster.member(ENTRY))) as watch:
        await wait_for(lambda: all_current(watch, "ORDERS", 3), timeout=20, message="ORDERS fully current")
        await wait_for(
            lambda: stream_value(watch, "nats_stream_messages_total", "EDGE") == 1, message="EDGE collected"
        )
        assert {
            dict(s)["server"] for s in watch.series("nats_stream_replica_current", stream="ORDERS")
        } == peers
        assert stream_value(watch, "nats_stream_replica_current", "EDGE", server=follower.server_name) == 1
        edge_before = {key: v for key, v in watch.latest.items() if ("stream", "EDGE") in key[1]}
        edge_values = {
            key: v
            for key, v in edge_before.items()
            if "replica" not in key[0] and not key[0].endswith("_info")
        }

        follower.kill()
        killed_scrapes = len(watch.statuses)
        # The leader marks the killed follower not current after about 10 s; until then its series stays.
        await wait_for(
            lambda: (
                stream_value(watch, "nats_stream_replica_current", "ORDERS", server=follower.server_name) == 0
            ),
            timeout=40,
            message="the killed follower reported not current",
        )
        assert stream_value(watch, "nats_stream_replicas_current", "ORDERS") == 2
        assert {
            dict(s)["server"] for s in watch.series("nats_stream_replica_current", stream="ORDERS")
        } == peers
        await wait_for(lambda: matches_leader(nc, watch, "ORDERS"), message="ORDERS equal to its leader's")
        # EDGE keeps its last values (one series each), with no replica current.
        for key, kept in edge_values.items():
            assert watch.latest[key] == kept, key
        assert stream_value(watch, "nats_stream_replicas_current", "EDGE") == 0
        assert stream_value(watch, "nats_stream_replica_current", "EDGE", server=follower.server_name) == 0
        assert (watch.value("nats_exporter_collection_errors_total", stage="streams") or 0) >= 1
        assert len(watch.statuses) > killed_scrapes
        assert_always_up(watch)

        follower.start()
        await wait_for(lambda: all_current(watch, "ORDERS", 3), timeout=30, message="ORDERS current again")
        await wait_for(
            lambda: stream_value(watch, "nats_stream_replicas_current", "EDGE") == 1,
            timeout=30,
            message="EDGE back",
        )
        assert_always_up(watch)


async def test_a_killed_stream_leader(cluster: NatsCluster, nc: Client) -> None:
    await replicated_stream(nc, "PAYMENTS", messages=5)
    info = await stream_info(nc, "PAYMENTS")
    assert info is not None
    leader = cluster.member(info["cluster"]["leader"])

    async with watched_exporter(fast_settings(cluster.member(ENTRY))) as watch:
        await wait_for(lambda: all_current(watch, "PAYMENTS", 3), timeout=20, message="PAYMENTS current")
        assert watch.series("nats_stream_info", stream="PAYMENTS", leader=leader.server_name)
        total = stream_value(watch, "nats_stream_messages_total", "PAYMENTS")
        assert total == info["state"]["last_seq"] == 5

        leader.kill()

        def new_leader() -> bool:
            series = watch.series("nats_stream_info", stream="PAYMENTS")
            return len(series) == 1 and dict(series[0])["leader"] not in ("", leader.server_name)

        await wait_for(new_leader, timeout=40, message="the new leader in nats_stream_info")
        for family in ("nats_stream_messages_total", "nats_stream_stored_messages", "nats_stream_info"):
            assert len(watch.series(family, stream="PAYMENTS")) == 1, family
        # Neither reset nor doubled:
        assert stream_value(watch, "nats_stream_messages_total", "PAYMENTS") == total
        await wait_for(lambda: matches_leader(nc, watch, "PAYMENTS"), message="values equal the new leader's")
        assert stream_value(watch, "nats_stream_replicas_current", "PAYMENTS") in (2, 3)
        assert_always_up(watch)

        leader.start()
        await wait_for(
            lambda: all_current(watch, "PAYMENTS", 3), timeout=30, message="PAYMENTS current again"
        )
        await wait_for(
            lambda: stream_value(watch, "nats_consumer_replicas_current", "PAYMENTS", consumer="reader") == 3,
            timeout=30,
            message="the consumer's replicas current again",
        )
        assert_always_up(watch)


async def test_mirror_lag_and_source_info(cluster: NatsCluster, nc: Client) -> None:
    await create_placed_stream(nc, "ORIGIN", ["origin.>"], num_replicas=3)
    for _ in range(4):
        await publish_when_routed(nc, "origin.event", b"x")
    await create_placed_stream(nc, "COPY", [], num_replicas=1, mirror={"name": "ORIGIN"})

    async def mirrored(watch: Watch) -> bool:
        info: dict[str, Any] | None = await stream_info(nc, "COPY")
        if info is None or info["state"]["messages"] != 4:
            return False
        return (
            stream_value(watch, "nats_stream_source_lag_messages", "COPY", source="ORIGIN")
            == info["mirror"]["lag"]
            and stream_value(watch, "nats_stream_messages_total", "COPY") == 4
        )

    async with watched_exporter(fast_settings(cluster.member(ENTRY))) as watch:
        await wait_for(lambda: mirrored(watch), timeout=20, message="the mirror caught up, lag reported")
        info_series = watch.series("nats_stream_source_info", stream="COPY")
        assert [dict(s) for s in info_series] == [
            {
                "account": ACCOUNT,
                "stream": "COPY",
                "source": "ORIGIN",
                "kind": "mirror",
                "filter_subject": "",
                "external_api": "",
            }
        ]
        active = stream_value(
            watch, "nats_stream_source_last_active_timestamp_seconds", "COPY", source="ORIGIN"
        )
        collected = watch.value("nats_exporter_last_success_timestamp_seconds")
        assert active is not None
        assert collected is not None
        assert active <= collected + 1
        assert watch.series("nats_stream_source_lag_messages", stream="ORIGIN") == []  # not a mirror
        assert_always_up(watch)


async def test_a_killed_meta_leader(cluster: NatsCluster, nc: Client) -> None:
    meta = cluster.wait_for_meta_leader()
    entry = next(member for member in cluster.members if member.server_name != meta)
    await create_placed_stream(nc, "AUDIT", ["audit.>"], num_replicas=3)
    await publish_when_routed(nc, "audit.event", b"x")

    async with watched_exporter(fast_settings(entry)) as watch:
        await wait_for(lambda: all_current(watch, "AUDIT", 3), timeout=20, message="AUDIT current")
        cluster.member(meta).kill()
        killed = time.monotonic()
        await wait_for(
            lambda: cluster.meta_leader() not in (None, meta), timeout=40, message="a new meta leader"
        )
        await wait_for(lambda: matches_leader(nc, watch, "AUDIT"), timeout=20, message="AUDIT read again")
        await wait_for(lambda: watch.times[-1] > time.monotonic() - 0.5, message="a fresh scrape")
        print(f"meta leader {meta} killed: nats_up back to 1 after {watch.first_up_after(killed)} s")
        assert_always_up(watch)


async def test_the_connected_server_killed(cluster: NatsCluster, nc: Client) -> None:
    await create_placed_stream(nc, "EVENTS", ["events.>"], num_replicas=3)
    await publish_when_routed(nc, "events.event", b"x")
    entry = cluster.member("n2")

    async with watched_exporter(fast_settings(entry)) as watch:
        await wait_for(lambda: all_current(watch, "EVENTS", 3), timeout=20, message="EVENTS current")
        entry.kill()
        killed, scrapes = time.monotonic(), len(watch.up)

        def reconnected() -> bool:
            series = watch.series("nats_server_info")
            return len(series) == 1 and dict(series[0])["server_name"] != entry.server_name

        await wait_for(reconnected, timeout=30, message="collecting from another member")
        await wait_for(lambda: watch.up[-1] == 1.0, timeout=30, message="nats_up 1 after the reconnect")
        down = watch.up[scrapes:].count(0.0)
        print(
            f"connected server killed: {down} scrapes with nats_up 0, up after {watch.first_up_after(killed)}"
        )
        assert len(watch.series("nats_stream_messages_total", stream="EVENTS")) == 1
        await wait_for(lambda: matches_leader(nc, watch, "EVENTS"), timeout=20, message="EVENTS read again")
        assert set(watch.statuses) == {200}


async def test_request_budget_and_replica_counts(cluster: NatsCluster, nc: Client) -> None:
    """1 INFO + 1 STREAM.NAMES page + STREAM.INFO and CONSUMER.LIST per selected stream, nothing else."""
    for index, replicas in enumerate((3, 1, 1)):
        name = f"BUDGET_{index}"
        await create_placed_stream(nc, name, [f"budget.{index}.>"], num_replicas=replicas)
        await create_consumer(nc, name, {"name": "reader", "durable_name": "reader"})
    source_nc = await nats.connect(cluster.member(ENTRY).url)
    tap = await nats.connect(cluster.member(ENTRY).url)
    try:
        requests: list[str] = []
        sentinels: list[Msg] = []

        async def record(msg: Msg) -> None:  # nobody else asks the API during this test
            requests.append(msg.subject)

        async def mark(msg: Msg) -> None:
            sentinels.append(msg)

        await tap.subscribe("$JS.API.>", cb=record)
        await tap.subscribe("budget.sentinel", cb=mark)
        await tap.flush()
        selected = Settings(filters=FilterSettings(stream_include=re.compile("BUDGET_.*")))
        snapshot = await JetStreamSource(source_nc, selected).fetch_snapshot(None)
        await source_nc.publish("budget.sentinel", b"")
        await source_nc.flush()
        await wait_for(lambda: bool(sentinels), message="the sentinel after the cycle")
    finally:
        await tap.close()
        await source_nc.close()

    names = [f"BUDGET_{index}" for index in range(3)]
    expected = ["$JS.API.INFO", "$JS.API.STREAM.NAMES"]
    expected += [f"$JS.API.{api}.{name}" for name in names for api in ("STREAM.INFO", "CONSUMER.LIST")]
    assert sorted(requests) == sorted(expected)
    assert snapshot.partial_errors == ()
    streams = {stream.name: stream for stream in snapshot.streams}
    assert [(streams[name].replicas, len(streams[name].peers)) for name in names] == [(3, 3), (1, 1), (1, 1)]
    for name in names:
        info = await stream_info(nc, name)
        assert info is not None
        stream = streams[name]
        assert stream.peers[0].server == stream.leader == info["cluster"]["leader"]
        assert {peer.server for peer in stream.peers[1:]} == {
            r["name"] for r in info["cluster"].get("replicas", ())
        }
    readers = {consumer.stream: consumer for consumer in snapshot.consumers}
    assert [(readers[name].replicas, readers[name].replicas_current) for name in names] == [
        (3, 3),
        (1, 1),
        (1, 1),
    ]


SYSTEM_ACCOUNT = """
accounts {
  SYS { users: [{ user: sys, password: sys }] }
  APP { jetstream: enabled, users: [{ user: app, password: app }] }
}
system_account: SYS
"""


async def test_a_cluster_with_a_system_account(tmp_path: Path) -> None:
    """The launcher's extra configuration reaches every member: all three answer a system-account ping."""
    with NatsCluster(tmp_path, extra_config=SYSTEM_ACCOUNT) as cluster:
        system = await nats.connect(cluster.member("n2").url, user="sys", password="sys")
        app = await nats.connect(cluster.member("n3").url, user="app", password="app")
        try:
            answered: set[str] = set()

            async def collect(msg: Msg) -> None:
                answered.add(json.loads(msg.data)["server"]["name"])

            inbox = system.new_inbox()
            await system.subscribe(inbox, cb=collect)
            await system.publish("$SYS.REQ.SERVER.PING", b"", reply=inbox)
            await wait_for(lambda: answered == {"n1", "n2", "n3"}, message="every member's ping reply")
            reply = json.loads((await app.request("$JS.API.INFO", b"", timeout=5)).data)
            assert "error" not in reply
        finally:
            await system.close()
            await app.close()
