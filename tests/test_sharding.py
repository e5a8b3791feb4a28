"""collection.shard: N replicas together export exactly what one unsharded exporter exports.

Against one real server with 30 streams (each with a durable consumer) and a dead-letter stream, three
shards are collected and rendered as three daemons would: their data series are disjoint and their union
equals one unsharded exposition, series for series; each replica lists only its own streams' consumers.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from support.apitap import ApiTap
from support.exposition import SeriesKey, data_series, render_as_daemon
from support.scraping import scrape_text
from support.spec_platform import create_consumer, create_stream, publish
from support.waiting import wait_for

from exporter.app import ExporterApp
from exporter.collectionplan import WHOLE_SYSTEM_SCOPES, rendered_families
from exporter.metrics import FAMILIES
from exporter.natsserver import NatsServerProcess
from exporter.scope import ScopedSource
from exporter.settings import CollectionSettings, NatsSettings, Settings, WebSettings
from exporter.sharding import in_shard, shard_of
from exporter.stages import StageTimings

pytestmark = pytest.mark.timeout(90)

SHARDS = 3
STREAMS = [f"S{n:02d}" for n in range(30)]
DEAD_LETTERS = "DLQ"
# Values the collection itself moves between two cycles: the account's API counters count the exporter's
# own requests, and lag is measured against the time of each cycle.
MOVING = {
    "nats_account_jetstream_api_requests_total",
    "nats_account_jetstream_api_errors_total",
    "nats_consumer_lag_seconds",
    "nats_stream_ephemeral_consumers_lag_seconds",
}


def sharded(shard: tuple[int, int] | None) -> Settings:
    return Settings(collection=CollectionSettings(shard=shard), dead_letter_streams=(DEAD_LETTERS,))


# --- the hash -----------------------------------------------------------------------------------------------


def test_the_shard_of_a_stream_is_stable_and_each_stream_has_exactly_one() -> None:
    # Pinned: a different hash would move every stream to another replica on upgrade.
    assert [shard_of("$G", name, SHARDS) for name in ("ORDERS", "COMPANIONS_CHAT", "AI_DLQ")] == [0, 1, 2]
    assert shard_of("A", "S", 1) == 0
    for name in STREAMS:
        owners = [k for k in range(SHARDS) if in_shard((k, SHARDS), "$G", name)]
        assert owners == [shard_of("$G", name, SHARDS)]
        assert in_shard(None, "$G", name)
    # The account is part of the key: the same stream name in two accounts may land apart.
    assert {shard_of(account, "ORDERS", 16) for account in ("A", "B", "C", "D", "E")} != {
        shard_of("A", "ORDERS", 16)
    }


def test_only_shard_0_renders_the_account_and_server_families() -> None:
    whole_system = {family.name for family in FAMILIES if family.scope in WHOLE_SYSTEM_SCOPES}
    assert {
        "nats_server_info",
        "nats_account_jetstream_streams",
        "nats_jetstream_meta_cluster_size",
    } <= whole_system
    first = {family.name for family in rendered_families(sharded((0, SHARDS)))}
    others = {family.name for family in rendered_families(sharded((2, SHARDS)))}
    assert first == {family.name for family in FAMILIES}
    assert others == first - whole_system
    assert {"nats_up", "nats_exporter_collection_duration_seconds"} <= others


# --- against a real server ----------------------------------------------------------------------------------


async def provision(nc: Client) -> None:
    for name in STREAMS:
        await create_stream(nc, name, [f"{name.lower()}.>"])
        await publish(nc, f"{name.lower()}.a", b"x")
        await create_consumer(
            nc, name, {"name": "reader", "durable_name": "reader", "ack_policy": "explicit"}
        )
    await create_stream(nc, DEAD_LETTERS, ["dead.>"])
    await publish(nc, "dead.x", b"letter")


async def exposition(nc: Client, tap: ApiTap, settings: Settings) -> tuple[dict[SeriesKey, float], list[str]]:
    source = ScopedSource(nc, settings)
    snapshot, requests = await tap.cycle_requests(
        nc, source.fetch_snapshot(None, StageTimings(time.monotonic))
    )
    return data_series(render_as_daemon(settings, snapshot)), requests


def stable(series: dict[SeriesKey, float]) -> dict[SeriesKey, float]:
    return {key: value for key, value in series.items() if key[0] not in MOVING}


def assert_union_equals(shards: list[dict[SeriesKey, float]], whole: dict[SeriesKey, float]) -> None:
    keys: list[Any] = [key for series in shards for key in series]
    assert len(keys) == len(set(keys)), "a series is exported by two replicas"
    union = {key: value for series in shards for key, value in series.items()}
    assert set(union) == set(whole)
    assert stable(union) == stable(whole)


async def test_three_shards_together_equal_one_unsharded_exposition(nats_server: NatsServerProcess) -> None:
    nc = await nats.connect(nats_server.url)
    tap = await ApiTap.attach(nats_server.url)
    try:
        await provision(nc)
        whole, whole_requests = await exposition(nc, tap, sharded(None))
        shards: list[dict[SeriesKey, float]] = []
        request_counts = [len(whole_requests)]
        for index in range(SHARDS):
            series, requests = await exposition(nc, tap, sharded((index, SHARDS)))
            shards.append(series)
            request_counts.append(len(requests))
            own = {name for name in STREAMS if shard_of("$G", name, SHARDS) == index}
            assert own, "30 streams leave no shard empty"
            listed = {subject.rsplit(".", 1)[1] for subject in requests if ".CONSUMER.LIST." in subject}
            assert listed == own | (
                {DEAD_LETTERS} if shard_of("$G", DEAD_LETTERS, SHARDS) == index else set()
            )
            assert ("$JS.API.STREAM.INFO.DLQ" in requests) == (shard_of("$G", DEAD_LETTERS, SHARDS) == index)
    finally:
        await tap.close()
        await nc.close()

    assert_union_equals(shards, whole)
    # The figures the report quotes (run with -s to see them).
    print(
        f"sharding: data series unsharded {len(whole)}, per shard {[len(series) for series in shards]}; "
        f"API requests a cycle unsharded {request_counts[0]}, per shard {request_counts[1:]}"
    )


# --- the cluster scope: every account through the system account ------------------------------------------

SYSTEM_ACCOUNTS = """
accounts {
  SYS: { users: [ {user: "sys", password: "sys"} ] }
  A: { jetstream: enabled, users: [ {user: "a", password: "a"} ] }
  B: { jetstream: enabled, users: [ {user: "b", password: "b"} ] }
}
system_account: SYS
"""


async def test_cluster_scope_shards_streams_of_every_account(tmp_path: Any) -> None:
    with NatsServerProcess(store_dir=tmp_path / "store", extra_config=SYSTEM_ACCOUNTS) as server:
        for account in ("A", "B"):
            nc = await nats.connect(server.url, user=account.lower(), password=account.lower())
            for n in range(8):
                name = f"{account}{n}"
                await create_stream(nc, name, [f"{name.lower()}.>"])
                await publish(nc, f"{name.lower()}.a", b"x")
                durable = {"name": "reader", "durable_name": "reader", "ack_policy": "explicit"}
                await create_consumer(nc, name, durable)
                # An ephemeral consumer as well: summed per stream (the default) in every shard alike.
                await create_consumer(nc, name, {"name": f"eph{n}", "ack_policy": "explicit"})
            await nc.close()
        nc = await nats.connect(server.url, user="sys", password="sys")
        try:
            cluster = CollectionSettings(scope="cluster")
            whole = await cluster_exposition(nc, Settings(collection=cluster))
            shards = [
                await cluster_exposition(nc, Settings(collection=replace(cluster, shard=(k, SHARDS))))
                for k in range(SHARDS)
            ]
        finally:
            await nc.close()
    assert {labels for name, labels in whole if name == "nats_stream_ephemeral_consumers"}
    assert_union_equals(shards, whole)
    for index, series in enumerate(shards):
        streams = {dict(labels)["stream"] for _, labels in series if "stream" in dict(labels)}
        assert all(shard_of(name[0], name, SHARDS) == index for name in streams)
        assert bool({name for name, _ in series if name.startswith("nats_server_")}) == (index == 0)


async def cluster_exposition(nc: Client, settings: Settings) -> dict[SeriesKey, float]:
    snapshot = await ScopedSource(nc, settings).fetch_snapshot(None, StageTimings(time.monotonic))
    return data_series(render_as_daemon(settings, snapshot))


# --- the daemon ---------------------------------------------------------------------------------------------


async def test_sharded_daemons_serve_one_copy_of_every_series(nats_server: NatsServerProcess) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        await provision(nc)
    finally:
        await nc.close()
    apps: list[ExporterApp] = []
    try:
        for shard in (None, (0, 2), (1, 2)):
            settings = replace(
                sharded(shard),
                nats=NatsSettings(servers=(nats_server.url,)),
                web=WebSettings(listen_address="127.0.0.1:0"),
            )
            app = ExporterApp(settings)
            apps.append(app)
            await app.start()
        await wait_for(
            lambda: all(app.ready for app in apps), timeout=30, message="every exporter to collect"
        )
        whole, *shards = [data_series(await scrape_text(app.port)) for app in apps]
    finally:
        for app in apps:
            await app.stop()
    assert_union_equals(shards, whole)
    assert {name for name, _ in shards[1] if name.startswith(("nats_account_", "nats_server_"))} == set()
