"""The cluster scope against a real 3-node cluster with a system account and two JetStream accounts."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import nats
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.js.api import ConsumerConfig, StreamConfig
from support.spec_platform import publish_when_routed
from support.system_cluster import SYSTEM_USER, system_cluster, wait_for_meta_leader

from exporter.cluster_source import JSZ_SUBJECT, ClusterSource
from exporter.natsserver import NatsServerProcess
from exporter.scope import ScopeError, choose_scope
from exporter.settings import CollectionSettings, LabelSettings, Settings
from exporter.snapshot import Snapshot, Threshold
from exporter.source import CollectionError

ACCOUNTS = ("A", "B")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[NatsServerProcess]]:
    with system_cluster(tmp_path_factory.mktemp("cluster-scope"), ACCOUNTS) as started:
        asyncio.run(_provision(started.members[0].url))
        yield started.members


async def _provision(url: str) -> None:
    """Per account: an R3 stream with two consumers and an R1 stream with one; a few messages each."""
    for account in ACCOUNTS:
        user = account.lower()
        nc = await nats.connect(url, user=user, password=user)
        js = nc.jetstream()
        await wait_for_meta_leader(js)
        for stream, replicas in ((f"{account}_R3", 3), (f"{account}_R1", 1)):
            metadata = {
                "team": f"team-{user}",
                "io.nats.monitor.enabled": "true",
                "io.nats.monitor.msgs-critical": "1",
            }
            await js.add_stream(
                StreamConfig(name=stream, subjects=[f"{stream}.>"], num_replicas=replicas, metadata=metadata)
            )
            for index in range(5):
                # The stream was created a moment ago: its interest may not have reached this server yet.
                await publish_when_routed(nc, f"{stream}.m", f"{index}".encode())
            for consumer in ("work", "audit")[: 2 if replicas == 3 else 1]:
                await js.add_consumer(stream, ConsumerConfig(durable_name=consumer, ack_policy="explicit"))
        await nc.close()


@pytest.fixture
async def system_connection(cluster: list[NatsServerProcess]) -> AsyncIterator[Client]:
    nc = await nats.connect([server.url for server in cluster], **SYSTEM_USER)
    try:
        yield nc
    finally:
        await nc.close()


def cluster_settings(**collection: Any) -> Settings:
    return Settings(collection=replace(CollectionSettings(), **{"scope": "cluster", **collection}))


def leader_jsz(server: NatsServerProcess, account: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{server.monitor_port}/jsz?acc={account}&streams=true&consumers=true&config=true"
    with urllib.request.urlopen(url, timeout=5) as response:
        reply: dict[str, Any] = json.loads(response.read())
    return reply


def by_name(cluster: list[NatsServerProcess]) -> dict[str, NatsServerProcess]:
    return {server.server_name: server for server in cluster}


async def test_every_account_and_server_is_read_with_values_from_each_leader(
    cluster: list[NatsServerProcess], system_connection: Client
) -> None:
    snapshot = await ClusterSource(system_connection, cluster_settings()).fetch_snapshot(None)

    assert [server.server_name for server in snapshot.servers] == ["n1", "n2", "n3"]
    assert snapshot.servers_responded == 3
    assert [account.account for account in snapshot.accounts] == ["A", "B"]
    assert [s.server for s in snapshot.jetstream_servers] == ["n1", "n2", "n3"]
    assert snapshot.meta_cluster is not None
    assert [peer.server for peer in snapshot.meta_cluster.peers] == ["n1", "n2", "n3"]
    assert {(s.account, s.name) for s in snapshot.streams} == {
        (account, f"{account}_{kind}") for account in ACCOUNTS for kind in ("R1", "R3")
    }
    assert len(snapshot.consumers) == 6  # one series each: leaders only
    servers = by_name(cluster)
    for stream in snapshot.streams:
        own = leader_jsz(servers[stream.leader], stream.account)
        (detail,) = [
            s for a in own["account_details"] for s in a.get("stream_detail", []) if s["name"] == stream.name
        ]
        assert (stream.messages, stream.last_seq) == (
            detail["state"]["messages"],
            detail["state"]["last_seq"],
        )
    for consumer in snapshot.consumers:
        own = leader_jsz(servers[consumer.leader], consumer.account)
        (info,) = [
            c
            for a in own["account_details"]
            for s in a.get("stream_detail", [])
            for c in s.get("consumer_detail", [])
            if (s["name"], c["name"]) == (consumer.stream, consumer.name)
        ]
        assert info["cluster"]["leader"] == consumer.leader
        assert consumer.num_pending == info["num_pending"] == 5  # a follower's copy would say 0
        assert consumer.lag_seconds is None  # needs a look-up inside the account


async def test_metadata_labels_thresholds_and_consumer_replicas_read_as_in_the_account_scope(
    system_connection: Client,
) -> None:
    settings = replace(cluster_settings(), labels=LabelSettings(from_metadata=("team",)))
    snapshot = await ClusterSource(system_connection, settings).fetch_snapshot(None)
    assert snapshot.metadata_label_keys == ("team",)
    for stream in snapshot.streams:
        assert stream.metadata_labels == (f"team-{stream.account.lower()}",)
        assert Threshold(check="msgs", severity="critical", value=1.0) in stream.thresholds
    # A consumer configured with 0 replicas has its stream's.
    assert {(c.stream, c.replicas) for c in snapshot.consumers if c.name == "work"} == {
        (f"{account}_{kind}", replicas) for account in ACCOUNTS for kind, replicas in (("R3", 3), ("R1", 1))
    }


async def test_paging_reads_every_account_with_one_account_per_page(
    cluster: list[NatsServerProcess], system_connection: Client
) -> None:
    source = ClusterSource(system_connection, cluster_settings(expected_servers=3), accounts_per_page=1)
    snapshot = await source.fetch_snapshot(None)
    assert [account.account for account in snapshot.accounts] == ["A", "B"]
    assert len(snapshot.streams) == 4
    assert len(snapshot.consumers) == 6


async def test_account_filter_applies_before_streams(
    cluster: list[NatsServerProcess], system_connection: Client
) -> None:
    import re  # noqa: PLC0415 (only this test builds a pattern)

    settings = cluster_settings()
    settings = replace(settings, filters=replace(settings.filters, account_exclude=re.compile("B")))
    snapshot = await ClusterSource(system_connection, settings).fetch_snapshot(None)
    assert [account.account for account in snapshot.accounts] == ["A"]
    assert {stream.account for stream in snapshot.streams} == {"A"}


async def test_an_unusable_reply_is_a_partial_error_never_fatal(
    cluster: list[NatsServerProcess], system_connection: Client
) -> None:
    impostor = await nats.connect(cluster[1].url, **SYSTEM_USER)
    try:
        answers = iter([b"not json", json.dumps({"server": {"name": "x"}, "error": {"code": 500}}).encode()])

        async def answer(msg: Any) -> None:
            await msg.respond(next(answers, b"[]"))

        await impostor.subscribe(JSZ_SUBJECT, cb=answer)
        await impostor.flush()
        for _ in range(2):  # a reply that is not JSON, then an error object
            # A new source does not know the cluster's size yet, so it waits for every reply.
            snapshot = await ClusterSource(system_connection, cluster_settings()).fetch_snapshot(None)
            assert snapshot.partial_errors == ("servers",)
            assert snapshot.servers_responded == 3
            assert len(snapshot.streams) == 4
    finally:
        await impostor.close()


async def test_no_server_answering_is_a_collection_error(cluster: list[NatsServerProcess]) -> None:
    # An ordinary account has no responders on the system subject: the cycle fails with the stage named.
    nc = await nats.connect(cluster[0].url, user="a", password="a")
    try:
        with pytest.raises(CollectionError) as failure:
            await ClusterSource(nc, cluster_settings(request_timeout_seconds=1.0)).fetch_snapshot(None)
    finally:
        await nc.close()
    assert failure.value.stage == "servers"


async def test_streams_of_a_killed_server_keep_their_values_until_their_new_leader_reports(
    cluster: list[NatsServerProcess], system_connection: Client
) -> None:
    source = ClusterSource(system_connection, cluster_settings())
    before = await source.fetch_snapshot(None)
    victim_name = next(s.leader for s in before.streams if s.name == "A_R1")
    victim = by_name(cluster)[victim_name]
    victim.stop()
    try:
        during = await _wait_for_snapshot(source, before, lambda s: s.servers_responded == 2)
        keys = [(s.account, s.name) for s in during.streams]
        assert sorted(keys) == sorted((s.account, s.name) for s in before.streams)  # no gap, no duplicate
        kept = {s.name: s for s in during.streams}["A_R1"]
        assert kept == {s.name: s for s in before.streams}["A_R1"]  # its only replica is down: last values
        for stream in during.streams:
            if stream.replicas == 3 and stream.leader != victim_name:
                assert stream.messages == 5
        assert len(during.consumers) == len(before.consumers)
    finally:
        victim.start()
    after = await _wait_for_snapshot(source, before, lambda s: s.servers_responded == 3)
    assert sorted((s.account, s.name) for s in after.streams) == sorted(
        (s.account, s.name) for s in before.streams
    )


async def _wait_for_snapshot(source: ClusterSource, previous: Snapshot, condition: Any) -> Snapshot:
    """Cycles, each fed the last (as the collection loop does), until ``condition`` holds (deadline 30 s)."""
    async with asyncio.timeout(30):
        while True:
            try:
                previous = await source.fetch_snapshot(previous)
            except CollectionError:
                pass  # the connection was on the killed server and is moving: the next cycle reads again
            else:
                if condition(previous):
                    return previous
            await asyncio.sleep(0.2)


@pytest.mark.parametrize(
    ("user", "configured", "chosen"),
    [
        ("sys", "auto", "cluster"),
        ("a", "auto", "account"),
        ("sys", "cluster", "cluster"),
        ("a", "account", "account"),
    ],
)
async def test_scope_follows_the_users_account(
    cluster: list[NatsServerProcess], user: str, configured: str, chosen: str
) -> None:
    nc = await nats.connect(cluster[0].url, user=user, password=user)
    try:
        assert await choose_scope(nc, cluster_settings(scope=configured)) == chosen
    finally:
        await nc.close()


@pytest.mark.parametrize(("user", "configured"), [("sys", "account"), ("a", "cluster")])
async def test_a_scope_that_cannot_work_is_refused_with_what_to_change(
    cluster: list[NatsServerProcess], user: str, configured: str
) -> None:
    nc = await nats.connect(cluster[0].url, user=user, password=user)
    try:
        with pytest.raises(ScopeError, match=f"collection.scope is {configured}, but"):
            await choose_scope(nc, cluster_settings(scope=configured))
    finally:
        await nc.close()
