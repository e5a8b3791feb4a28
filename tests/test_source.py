"""The JetStream source against a real nats-server: the platform spec's streams and chat-handler consumer.

Every value the source reports is compared with the server's own STREAM.INFO / CONSUMER.INFO / INFO JSON.
Requests are counted with a "tap": a plain subscription on ``$JS.API.>`` sees every API request the
account makes; a sentinel published after the cycle on the source's connection marks the end, because
one connection's messages reach a subscriber in order.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import threading
import time
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgpack
import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from support.apitap import ApiTap
from support.cluster import lead_away_from, three_node_cluster
from support.jetstream import js_request
from support.spec_platform import (
    CHAT_HANDLER_CONFIG,
    DAY,
    NS,
    SPEC_STREAMS,
    chat_message,
    create_consumer,
    create_stream,
    provision_platform,
    publish,
    publish_when_routed,
    pull,
    request_or_none,
    respond,
    voice_message,
)
from support.waiting import wait_for

from exporter.natsserver import NatsServerProcess
from exporter.settings import CollectionSettings, FilterSettings, NatsSettings, Settings
from exporter.snapshot import ConsumerState, Snapshot, StreamState
from exporter.source import CollectionError, JetStreamSource

pytestmark = pytest.mark.timeout(60)

# Parsed and expected times are both the float nearest to the exact time; the tolerance only absorbs the
# rounding of differences such as collected_at - timestamp.
TIMESTAMP_TOLERANCE = 1e-6


async def stored_time(nc: Client, stream: str, seq: int) -> float:
    reply = await js_request(nc, f"STREAM.MSG.GET.{stream}", {"seq": seq})
    return expected_timestamp(reply["message"]["time"])  # type: ignore[return-value]


# --- independent reading of the server's JSON, to compare against ------------------------------------


def expected_timestamp(text: str | None) -> float | None:
    """The float nearest to an RFC 3339 UTC time, computed exactly (nanoseconds kept) with Decimal."""
    if text is None or text.startswith("0001-01-01"):
        return None
    whole, _, fraction = text.rstrip("Z").partition(".")
    seconds = int(datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp())
    return float(Decimal(seconds) + (Decimal(f"0.{fraction}") if fraction else Decimal(0)))


def expected_limit(value: int) -> int | None:
    return None if value <= 0 else value


def assert_close(actual: float | None, expected: float | None) -> None:
    if expected is None:
        assert actual is None
    else:
        assert actual is not None
        assert abs(actual - expected) <= TIMESTAMP_TOLERANCE, (actual, expected)


def assert_stream_matches(stream: StreamState, info: Mapping[str, Any], account: str) -> None:
    config, state = info["config"], info["state"]
    assert stream.account == account
    assert stream.name == config["name"]
    assert stream.subjects == tuple(config["subjects"])
    assert stream.storage == config["storage"]
    assert stream.retention == config["retention"]
    assert stream.replicas == config["num_replicas"]
    assert stream.allow_direct == config["allow_direct"]
    assert stream.max_messages == expected_limit(config["max_msgs"])
    assert stream.max_bytes == expected_limit(config["max_bytes"])
    assert stream.max_age_seconds == (config["max_age"] / NS if config["max_age"] > 0 else None)
    assert stream.max_messages_per_subject == expected_limit(config["max_msgs_per_subject"])
    assert stream.messages == state["messages"]
    assert stream.bytes == state["bytes"]
    assert stream.first_seq == state["first_seq"]
    assert_close(stream.first_ts, expected_timestamp(state["first_ts"]))
    assert stream.last_seq == state["last_seq"]
    assert_close(stream.last_ts, expected_timestamp(state["last_ts"]))
    assert stream.num_subjects == state.get("num_subjects", 0)
    assert stream.num_deleted == state.get("num_deleted", 0)
    assert stream.consumer_count == state["consumer_count"]


def assert_consumer_matches(consumer: ConsumerState, info: Mapping[str, Any], account: str) -> None:
    config = info["config"]
    assert consumer.account == account
    assert consumer.stream == info["stream_name"]
    assert consumer.name == info["name"]
    assert consumer.durable == ("durable_name" in config)
    assert consumer.pull == ("deliver_subject" not in config)
    assert consumer.ack_policy == config["ack_policy"]
    assert consumer.deliver_policy == config["deliver_policy"]
    expected_filters = tuple(config.get("filter_subjects", ())) or (
        (config["filter_subject"],) if config.get("filter_subject") else ()
    )
    assert consumer.filter_subjects == expected_filters
    assert consumer.max_deliver == expected_limit(config["max_deliver"])
    assert consumer.max_ack_pending == expected_limit(config.get("max_ack_pending", 0))
    assert consumer.ack_wait_seconds == (config["ack_wait"] / NS if config.get("ack_wait") else None)
    assert consumer.num_pending == info["num_pending"]
    assert consumer.num_ack_pending == info["num_ack_pending"]
    assert consumer.num_redelivered == info["num_redelivered"]
    assert consumer.num_waiting == info["num_waiting"]
    assert consumer.delivered_consumer_seq == info["delivered"]["consumer_seq"]
    assert consumer.delivered_stream_seq == info["delivered"]["stream_seq"]
    assert_close(consumer.delivered_last_active, expected_timestamp(info["delivered"].get("last_active")))
    assert consumer.ack_floor_consumer_seq == info["ack_floor"]["consumer_seq"]
    assert consumer.ack_floor_stream_seq == info["ack_floor"]["stream_seq"]
    assert_close(consumer.ack_floor_last_active, expected_timestamp(info["ack_floor"].get("last_active")))
    assert consumer.paused == info.get("paused", False)


def settings(**collection: Any) -> Settings:
    return Settings(collection=CollectionSettings(**collection))


# --- the platform: values equal the server's -------------------------------------------------------


async def test_snapshot_equals_what_the_server_reports(nats_server: NatsServerProcess, nc: Client) -> None:
    await provision_platform(nc)
    # Published before the consumer exists as well as after: "deliver new" must not count the first.
    await publish(nc, "ai.chat.user.u0.message", chat_message("u0", "before"))
    await js_request(nc, "CONSUMER.DELETE.COMPANIONS_CHAT.chat-handler")
    await create_consumer(nc, "COMPANIONS_CHAT", CHAT_HANDLER_CONFIG)
    for user in ("u1", "u2", "u3", "u4"):
        await publish(nc, f"ai.chat.user.{user}.message", chat_message(user, "hello"))
    await publish(nc, "ai.chat.user.u1.greeting.morning", chat_message("u1", "good morning"))
    await publish(nc, "ai.chat.user.u1.login", msgpack.packb({"user_id": "u1"}))
    await publish(nc, "ai.voice.user.u1.request", voice_message("u1"))
    await publish(nc, "ai.chat.response.stream.r1", msgpack.packb({"type": "chunk", "content": "hi"}))
    first, second, _third = await pull(nc, "COMPANIONS_CHAT", "chat-handler", 3)
    await respond(first, b"+ACK")
    await respond(second, b"-NAK")
    await pull(nc, "COMPANIONS_CHAT", "chat-handler", 1)  # the nak'd message again: one redelivery

    before = await js_request(nc, "INFO")
    snapshot = await JetStreamSource(nc, Settings()).fetch_snapshot(None)
    after = await js_request(nc, "INFO")

    (server,) = snapshot.servers
    assert (server.server_name, server.version) == (nats_server.server_name, "2.15.1")
    assert snapshot.partial_errors == ()
    (account,) = snapshot.accounts
    assert account is not None
    assert account.account == "$G"  # from $SYS.REQ.USER.INFO: this server has no accounts configured
    assert (account.memory_bytes, account.storage_bytes) == (after["memory"], after["storage"])
    assert (account.streams, account.consumers) == (after["streams"], after["consumers"]) == (7, 1)
    assert account.max_memory_bytes is None  # -1: unlimited
    assert account.max_storage_bytes is None
    assert before["api"]["total"] < account.api_requests < after["api"]["total"]
    assert account.api_errors == before["api"]["errors"]

    assert [stream.name for stream in snapshot.streams] == sorted(name for name, *_ in SPEC_STREAMS)
    for stream in snapshot.streams:
        assert_stream_matches(stream, await js_request(nc, f"STREAM.INFO.{stream.name}"), "$G")
    chat = next(stream for stream in snapshot.streams if stream.name == "COMPANIONS_CHAT")
    assert (chat.messages, chat.max_age_seconds, chat.storage) == (6, 30 * DAY, "file")

    (handler,) = snapshot.consumers
    assert_consumer_matches(handler, await js_request(nc, "CONSUMER.INFO.COMPANIONS_CHAT.chat-handler"), "$G")
    # The spec's configuration and the traffic above, read back.
    assert handler.filter_subjects == ("ai.chat.user.*.message",)
    assert (handler.max_deliver, handler.ack_wait_seconds, handler.ack_policy) == (3, 30.0, "explicit")
    assert (handler.deliver_policy, handler.durable, handler.pull) == ("new", True, True)
    assert (handler.num_pending, handler.num_ack_pending, handler.num_redelivered) == (1, 2, 1)
    assert handler.ack_floor_stream_seq == 2  # "before" (seq 1) was never the consumer's; u1's was acked
    assert handler.lag_seconds is not None
    assert handler.lag_seconds > 0


# --- paging and the request budget ------------------------------------------------------------------


async def test_pages_beyond_256_streams_and_consumers_within_the_request_budget(
    nats_server: NatsServerProcess, nc: Client
) -> None:
    names = [f"S{index:03d}" for index in range(299)]
    for chunk in range(0, len(names), 50):
        await asyncio.gather(
            *(create_stream(nc, name, [f"s.{name}"], storage="memory") for name in names[chunk : chunk + 50])
        )
    await create_stream(nc, "WIDE", ["wide.>"], storage="memory")
    consumers = [f"c{index:03d}" for index in range(300)]
    for chunk in range(0, len(consumers), 50):
        await asyncio.gather(
            *(
                create_consumer(nc, "WIDE", {"name": name, "durable_name": name, "ack_policy": "explicit"})
                for name in consumers[chunk : chunk + 50]
            )
        )
    tap = await ApiTap.attach(nats_server.url)
    try:
        source = JetStreamSource(nc, Settings())
        snapshot, requests = await tap.cycle_requests(nc, source.fetch_snapshot(None))
        assert [stream.name for stream in snapshot.streams] == [*names, "WIDE"]
        assert [consumer.name for consumer in snapshot.consumers] == consumers
        streams = len(names) + 1
        # 1 INFO + ceil(300/256) stream pages + one consumer list per stream + WIDE's second page.
        assert len(requests) == 1 + math.ceil(streams / 256) + streams + 1
        assert requests.count("$JS.API.STREAM.LIST") == 2
        assert requests.count("$JS.API.CONSUMER.LIST.WIDE") == 2

        # The account is resolved once per source: the next cycle makes exactly the same requests.
        _, again = await tap.cycle_requests(nc, source.fetch_snapshot(snapshot))
        assert sorted(again) == sorted(requests)
    finally:
        await tap.close()


async def test_include_and_exclude_filters_choose_streams_and_consumers(
    nats_server: NatsServerProcess, nc: Client
) -> None:
    await provision_platform(nc)
    await create_consumer(nc, "COMPANIONS_CHAT", {"name": "archiver-1", "durable_name": "archiver-1"})
    await create_consumer(nc, "AI_DLQ", {"name": "dlq-reader", "durable_name": "dlq-reader"})
    filters = FilterSettings(
        stream_include=re.compile("COMPANIONS_.*|AI_DLQ"),
        stream_exclude=re.compile("COMPANIONS_LOGINS"),
        consumer_exclude=re.compile("archiver-.*"),
    )
    tap = await ApiTap.attach(nats_server.url)
    try:
        source = JetStreamSource(nc, Settings(filters=filters))
        snapshot, requests = await tap.cycle_requests(nc, source.fetch_snapshot(None))
    finally:
        await tap.close()
    assert [stream.name for stream in snapshot.streams] == ["AI_DLQ", "COMPANIONS_CHAT"]
    assert [(c.stream, c.name) for c in snapshot.consumers] == [
        ("AI_DLQ", "dlq-reader"),
        ("COMPANIONS_CHAT", "chat-handler"),
    ]
    # Excluded streams cost no request at all.
    assert sorted(subject for subject in requests if ".CONSUMER.LIST." in subject) == [
        "$JS.API.CONSUMER.LIST.AI_DLQ",
        "$JS.API.CONSUMER.LIST.COMPANIONS_CHAT",
    ]


# --- JetStream domain --------------------------------------------------------------------------------


async def test_jetstream_domain_prefix() -> None:
    with NatsServerProcess(jetstream_domain="hub") as server:
        nc = await nats.connect(server.url)
        try:
            await provision_platform(nc)
            await publish(nc, "ai.chat.user.u1.message", chat_message("u1", "hi"))
            hub = Settings(nats=NatsSettings(domain="hub"))
            snapshot = await JetStreamSource(nc, hub).fetch_snapshot(None)
            assert [server.domain for server in snapshot.servers] == ["hub"]
            assert len(snapshot.streams) == len(SPEC_STREAMS)
            (handler,) = snapshot.consumers
            assert handler.num_pending == 1
            assert handler.lag_seconds is not None  # the look-up goes through the prefix as well

            # The server answers its own domain's prefix only: another domain proves the prefix is used.
            elsewhere = Settings(nats=NatsSettings(domain="elsewhere"))
            with pytest.raises(CollectionError) as failure:
                await JetStreamSource(nc, elsewhere).fetch_snapshot(None)
            assert failure.value.stage == "account"
            assert "$JS.elsewhere.API.INFO: no responders" in str(failure.value)
        finally:
            await nc.close()


# --- a stream deleted during the cycle ----------------------------------------------------------------


def delete_stream_now(url: str, name: str) -> None:
    """Delete a stream from another thread and wait for it, blocking the caller's event loop meanwhile."""

    async def delete() -> None:
        admin = await nats.connect(url)
        try:
            await js_request(admin, f"STREAM.DELETE.{name}")
        finally:
            await admin.close()

    worker = threading.Thread(target=asyncio.run, args=(delete(),))
    worker.start()
    worker.join(timeout=10)


async def test_stream_deleted_during_the_cycle_is_left_out(
    nats_server: NatsServerProcess, nc: Client
) -> None:
    await create_stream(nc, "ALPHA", ["alpha.>"], storage="memory")
    await create_stream(nc, "OMEGA", ["omega.>"], storage="memory")
    await create_consumer(nc, "ALPHA", {"name": "a", "durable_name": "a"})
    await create_consumer(nc, "OMEGA", {"name": "o", "durable_name": "o"})

    # With one request in flight, OMEGA's consumer list is sent only after ALPHA's reply. A subscription
    # on the source's own connection sees ALPHA's request before its reply arrives, and deletes OMEGA
    # right then, blocking the loop: OMEGA was listed, then vanished before its consumers were read.
    listed: list[str] = []

    async def delete_omega(msg: Msg) -> None:
        listed.append(msg.subject)
        if msg.subject.endswith("CONSUMER.LIST.ALPHA"):
            delete_stream_now(nats_server.url, "OMEGA")

    watcher = await nc.subscribe("$JS.API.CONSUMER.LIST.*", cb=delete_omega)
    await nc.flush()
    snapshot = await JetStreamSource(nc, settings(concurrency=1)).fetch_snapshot(None)
    await watcher.unsubscribe()

    assert listed == ["$JS.API.CONSUMER.LIST.ALPHA", "$JS.API.CONSUMER.LIST.OMEGA"]  # OMEGA: not found
    assert [stream.name for stream in snapshot.streams] == ["ALPHA"]
    assert [consumer.name for consumer in snapshot.consumers] == ["a"]
    assert snapshot.partial_errors == ()
    (account,) = snapshot.accounts
    assert account.streams == 2  # INFO came first: the deletion happened inside the cycle


# --- missing and offline entries (clustered) --------------------------------------------------------------


def meta_leader(server: NatsServerProcess) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.monitor_port}/jsz", timeout=5) as response:
        return str(json.loads(response.read())["meta_cluster"]["leader"])


async def test_missing_streams_and_consumers_keep_their_previous_values(tmp_path: Any) -> None:
    servers = three_node_cluster(tmp_path)
    connections: list[Client] = []
    try:
        nc = await nats.connect(servers[0].url)
        connections.append(nc)
        await wait_for(lambda: request_or_none(nc, "INFO"), timeout=20, message="a JetStream meta leader")
        leader = await asyncio.to_thread(meta_leader, servers[0])
        victim = next(server for server in servers if server.server_name != leader)
        survivor = next(server for server in servers if server is not victim)
        tag = f"node:{victim.server_name[1:]}"

        # EDGE lives on the victim only: the whole stream goes missing.
        await create_stream(nc, "EDGE", ["edge.>"], num_replicas=1, placement={"tags": [tag]})
        await create_consumer(nc, "EDGE", {"name": "edge-reader", "durable_name": "edge-reader"})
        await publish_when_routed(nc, "edge.event", b"on the victim")
        # SHARED has three replicas and a leader elsewhere; one single-replica consumer sits on the victim.
        await create_stream(nc, "SHARED", ["shared.>"], num_replicas=3)
        await publish_when_routed(nc, "shared.event", b"everywhere")
        on_victim = None
        for attempt in range(30):  # a single-replica consumer lands on one of the three peers
            created = await create_consumer(
                nc,
                "SHARED",
                {"name": f"solo-{attempt}", "durable_name": f"solo-{attempt}", "num_replicas": 1},
            )
            if created.get("cluster", {}).get("leader") == victim.server_name:
                on_victim = f"solo-{attempt}"
                break
        assert on_victim is not None

        await lead_away_from(nc, "SHARED", victim.server_name)
        source_nc = await nats.connect(survivor.url)
        connections.append(source_nc)
        source = JetStreamSource(source_nc, Settings())
        before = await source.fetch_snapshot(None)
        assert [stream.name for stream in before.streams] == ["EDGE", "SHARED"]

        victim.stop()
        after = await source.fetch_snapshot(before)
        assert after.partial_errors == ("streams",)  # EDGE's STREAM.INFO: counted, the cycle goes on
        edge = {stream.name: stream for stream in after.streams}["EDGE"]
        assert edge == before.streams[0].unreachable()
        assert (edge.last_seq, edge.leader, edge.replicas_current) == (before.streams[0].last_seq, "", 0)
        kept = {(c.stream, c.name): c for c in before.consumers}
        now = {(c.stream, c.name): c for c in after.consumers}
        assert now.keys() == kept.keys()
        assert now["EDGE", "edge-reader"] == kept["EDGE", "edge-reader"].unreachable()
        assert now["SHARED", on_victim] == kept["SHARED", on_victim].unreachable()
        assert now["EDGE", "edge-reader"].num_pending == 1  # not the placeholder's zeroed state

        # With no previous values there is nothing to keep: missing entries are left out, never zeroed.
        fresh = await JetStreamSource(source_nc, Settings()).fetch_snapshot(None)
        assert fresh.partial_errors == ("streams",)
        assert [stream.name for stream in fresh.streams] == ["SHARED"]
        assert on_victim not in {c.name for c in fresh.consumers}
        assert all(c.name and c.stream == "SHARED" for c in fresh.consumers)
    finally:
        for connection in connections:
            await connection.close()
        for server in servers:
            server.cleanup()


# --- dead letters -------------------------------------------------------------------------------------


async def test_dead_letter_depth_per_subject_and_missing_stream(
    nats_server: NatsServerProcess, nc: Client, caplog: pytest.LogCaptureFixture
) -> None:
    await provision_platform(nc)
    for user in ("u1", "u2", "u3"):
        await publish(nc, f"ai.chat.user.{user}.message", chat_message(user, "fails"))
    # The spec's handler: after the final failure, republish to ai.dlq.<kind> and terminate.
    for msg in await pull(nc, "COMPANIONS_CHAT", "chat-handler", 3):
        await publish(nc, "ai.dlq.chat", msg.data)
        await respond(msg, b"+TERM")
    await publish(nc, "ai.dlq.voice", voice_message("u9"))

    source = JetStreamSource(nc, Settings(dead_letter_streams=("AI_DLQ", "AI_DLQ_EU")))
    with caplog.at_level(logging.INFO, logger="exporter.source"):
        first = await source.fetch_snapshot(None)
        second = await source.fetch_snapshot(first)
    dlq, missing = second.dead_letters
    assert (dlq.stream, dlq.exists) == ("AI_DLQ", True)
    assert dlq.subject_counts == (("ai.dlq.chat", 3), ("ai.dlq.voice", 1))
    assert_close(dlq.first_ts, await stored_time(nc, "AI_DLQ", 1))
    assert (missing.stream, missing.exists, missing.subject_counts, missing.first_ts) == (
        "AI_DLQ_EU",
        False,
        (),
        None,
    )
    assert second.partial_errors == ()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "AI_DLQ_EU" in r.getMessage()]
    assert len(warnings) == 1  # once when it goes missing, not every cycle

    caplog.clear()
    await create_stream(nc, "AI_DLQ_EU", ["eu.dlq.>"], storage="memory")
    with caplog.at_level(logging.INFO, logger="exporter.source"):
        third = await source.fetch_snapshot(second)
    assert third.dead_letters[1].exists is True
    assert third.dead_letters[1].subject_counts == ()
    assert any(r.levelno == logging.INFO and "AI_DLQ_EU" in r.getMessage() for r in caplog.records)


# --- lag ------------------------------------------------------------------------------------------------


def lag_of(snapshot: Snapshot, stream: str, consumer: str) -> float | None:
    return next(c.lag_seconds for c in snapshot.consumers if (c.stream, c.name) == (stream, consumer))


async def test_lag_is_the_age_of_the_oldest_unacknowledged_message(
    nats_server: NatsServerProcess, nc: Client
) -> None:
    await provision_platform(nc)
    published_at = time.time()
    await publish(nc, "ai.chat.user.u1.message", chat_message("u1", "first"))
    await publish(nc, "ai.chat.user.u2.greeting.hi", chat_message("u2", "not the handler's"))
    await publish(nc, "ai.chat.user.u2.message", chat_message("u2", "second"))
    first_time = await stored_time(nc, "COMPANIONS_CHAT", 1)
    third_time = await stored_time(nc, "COMPANIONS_CHAT", 3)
    source = JetStreamSource(nc, Settings())
    tap = await ApiTap.attach(nats_server.url)
    try:
        unread = await source.fetch_snapshot(None)
        lag = lag_of(unread, "COMPANIONS_CHAT", "chat-handler")
        assert lag is not None
        assert abs(lag - (unread.collected_at - first_time)) <= TIMESTAMP_TOLERANCE
        assert 0 <= lag <= unread.collected_at - published_at + 0.05

        # Delivered, first acknowledged: the oldest unacknowledged is now the third stored message
        # (the greeting in between does not match the filter).
        first, second = await pull(nc, "COMPANIONS_CHAT", "chat-handler", 2)
        await respond(first, b"+ACK")
        delivered = await source.fetch_snapshot(unread)
        lag = lag_of(delivered, "COMPANIONS_CHAT", "chat-handler")
        assert lag is not None
        assert abs(lag - (delivered.collected_at - third_time)) <= TIMESTAMP_TOLERANCE

        # All acknowledged: 0, and no look-up request at all.
        await respond(second, b"+ACK")
        idle, requests = await tap.cycle_requests(nc, source.fetch_snapshot(delivered))
        assert lag_of(idle, "COMPANIONS_CHAT", "chat-handler") == 0.0
        assert not [subject for subject in requests if "MSG.GET" in subject or "DIRECT.GET" in subject]
        assert idle.lag_lookups_skipped == 0
    finally:
        await tap.close()


@pytest.mark.parametrize("allow_direct", [True, False], ids=["direct-get", "msg-get"])
async def test_lag_with_several_filter_subjects_takes_the_earliest_and_skips_deleted(
    nats_server: NatsServerProcess, nc: Client, allow_direct
) -> None:
    await create_stream(nc, "TASKS", ["tasks.>"], storage="file", allow_direct=allow_direct)
    await create_consumer(
        nc, "TASKS", {"name": "multi", "durable_name": "multi", "filter_subjects": ["tasks.a", "tasks.b"]}
    )
    await create_consumer(nc, "TASKS", {"name": "everything", "durable_name": "everything"})
    await publish(nc, "tasks.c", b"matches only the unfiltered consumer")  # seq 1
    await publish(nc, "tasks.b", b"oldest for multi")  # seq 2
    await publish(nc, "tasks.a", b"newer")  # seq 3
    times = {seq: await stored_time(nc, "TASKS", seq) for seq in (1, 2, 3)}
    lookup_api = "DIRECT.GET" if allow_direct else "STREAM.MSG.GET"

    source = JetStreamSource(nc, Settings())
    tap = await ApiTap.attach(nats_server.url)
    try:
        snapshot, requests = await tap.cycle_requests(nc, source.fetch_snapshot(None))
        lookups = [subject for subject in requests if "GET" in subject]
        assert lookups == [f"$JS.API.{lookup_api}.TASKS"] * 3  # one per filter subject, one for ">"
        multi = lag_of(snapshot, "TASKS", "multi")
        everything = lag_of(snapshot, "TASKS", "everything")
        assert multi is not None
        assert everything is not None
        assert abs(multi - (snapshot.collected_at - times[2])) <= TIMESTAMP_TOLERANCE
        assert abs(everything - (snapshot.collected_at - times[1])) <= TIMESTAMP_TOLERANCE

        # A message deleted in between is skipped: the next matching one is the oldest.
        await js_request(nc, "STREAM.MSG.DELETE.TASKS", {"seq": 2})
        after_delete = await source.fetch_snapshot(snapshot)
        multi = lag_of(after_delete, "TASKS", "multi")
        assert multi is not None
        assert abs(multi - (after_delete.collected_at - times[3])) <= TIMESTAMP_TOLERANCE

        # Nothing left to find although the consumer still counts a pending message: 0, not an error.
        await js_request(nc, "STREAM.MSG.DELETE.TASKS", {"seq": 3})
        await js_request(nc, "STREAM.MSG.DELETE.TASKS", {"seq": 1})
        emptied = await source.fetch_snapshot(after_delete)
        assert lag_of(emptied, "TASKS", "multi") == 0.0
        assert emptied.partial_errors == ()
    finally:
        await tap.close()


async def test_lag_lookup_cap_skips_and_counts_then_rotates(
    nats_server: NatsServerProcess, nc: Client
) -> None:
    await create_stream(nc, "QUEUE", ["queue.>"], storage="memory")
    names = [f"worker-{index}" for index in range(5)]
    for name in names:
        await create_consumer(nc, "QUEUE", {"name": name, "durable_name": name})
    await publish(nc, "queue.job", b"job")
    await create_consumer(nc, "QUEUE", {"name": "idle", "durable_name": "idle", "deliver_policy": "new"})

    capped = Settings(
        nats=NatsSettings(account="platform"), collection=CollectionSettings(lag_lookups_per_cycle=2)
    )
    source = JetStreamSource(nc, capped)
    tap = await ApiTap.attach(nats_server.url)
    measured: set[str] = set()
    previous = None
    try:
        for _ in range(3):
            snapshot, requests = await tap.cycle_requests(nc, source.fetch_snapshot(previous))
            previous = snapshot
            lags = {c.name: c.lag_seconds for c in snapshot.consumers}
            assert lags.pop("idle") == 0.0  # nothing outstanding: costs no look-up
            assert sum(lag is not None for lag in lags.values()) == 2
            assert snapshot.lag_lookups_skipped == 3
            assert len([subject for subject in requests if "MSG.GET" in subject]) == 2
            measured.update(name for name, lag in lags.items() if lag is not None)
            assert {c.account for c in snapshot.consumers} == {"platform"}
    finally:
        await tap.close()
    assert measured == set(names)  # the cap does not starve the same consumers every cycle


async def test_a_consumer_too_wide_for_the_cap_does_not_starve_the_others(nc: Client) -> None:
    await create_stream(nc, "QUEUE", ["queue.>"], storage="memory")
    wide = {"filter_subjects": ["queue.a", "queue.b", "queue.c"]}  # 3 look-ups: more than a cycle allows
    await create_consumer(nc, "QUEUE", {"name": "aaa-wide", "durable_name": "aaa-wide", **wide})
    names = [f"worker-{index}" for index in range(4)]
    for name in names:
        await create_consumer(nc, "QUEUE", {"name": name, "durable_name": name})
    await publish(nc, "queue.a", b"job")

    capped = Settings(
        nats=NatsSettings(account="platform"), collection=CollectionSettings(lag_lookups_per_cycle=2)
    )
    source = JetStreamSource(nc, capped)
    measured: set[str] = set()
    previous = None
    for _ in range(2):
        previous = await source.fetch_snapshot(previous)
        lags = {c.name: c.lag_seconds for c in previous.consumers}
        assert lags["aaa-wide"] is None
        measured.update(name for name, lag in lags.items() if lag is not None)
    assert measured == set(names)


# --- failures --------------------------------------------------------------------------------------------

PERMISSION_USERS = """
accounts {
  AI: {
    jetstream: enabled
    users: [
      {user: admin, password: admin}
      {user: nolist, password: nolist, permissions: {publish: {deny: ["$JS.API.STREAM.LIST"]}}}
      {user: noconsumers, password: noconsumers, permissions: {publish: {deny: ["$JS.API.CONSUMER.LIST.>"]}}}
      {user: nolookup, password: nolookup, permissions: {publish: {deny: ["$JS.API.STREAM.MSG.GET.>"]}}}
      {user: nostreaminfo, password: nostreaminfo, permissions: {publish: {deny: ["$JS.API.STREAM.INFO.>"]}}}
      {user: nouserinfo, password: nouserinfo, permissions: {publish: {deny: ["$SYS.REQ.USER.INFO"]}}}
    ]
  }
  NOJS: { users: [ {user: nojs, password: nojs} ] }
}
"""


@pytest.fixture
def permission_server(tmp_path: Any) -> Any:
    with NatsServerProcess(store_dir=tmp_path / "store", extra_config=PERMISSION_USERS) as server:
        yield server


async def provision_as_admin(server: NatsServerProcess) -> None:
    admin = await nats.connect(server.url, user="admin", password="admin")
    try:
        await provision_platform(admin)
        await publish(admin, "ai.chat.user.u1.message", chat_message("u1", "waiting"))
        await publish(admin, "ai.dlq.chat", chat_message("u2", "dead"))
    finally:
        await admin.close()


# Requests refused by a permission are never answered: a 1s deadline (0.5s per request) keeps this quick.
FAST_FAILING = Settings(collection=CollectionSettings(deadline_seconds=1.0), dead_letter_streams=("AI_DLQ",))


@pytest.mark.parametrize(
    ("user", "stage", "says"),
    [
        ("nojs", "account", "JetStream is not enabled for the exporter's account"),
        ("nolist", "streams", "$JS.API.STREAM.LIST: no reply within 0.5s"),
        ("noconsumers", "consumers", "$JS.API.CONSUMER.LIST."),
    ],
)
async def test_failures_raise_collection_error_with_the_stage(
    permission_server: NatsServerProcess, user: str, stage: str, says: str
) -> None:
    await provision_as_admin(permission_server)
    connection = await nats.connect(permission_server.url, user=user, password=user)
    try:
        with pytest.raises(CollectionError) as failure:
            await JetStreamSource(connection, FAST_FAILING).fetch_snapshot(None)
    finally:
        await connection.close()
    assert failure.value.stage == stage
    assert says in str(failure.value)
    assert user not in str(failure.value)  # no credentials in what the user sees


@pytest.mark.parametrize(("user", "stage"), [("nolookup", "lag"), ("nostreaminfo", "dlq")])
async def test_lag_and_dead_letter_failures_are_partial(
    permission_server: NatsServerProcess, user: str, stage: str
) -> None:
    await provision_as_admin(permission_server)
    connection = await nats.connect(permission_server.url, user=user, password=user)
    try:
        source = JetStreamSource(connection, FAST_FAILING)
        snapshot = await source.fetch_snapshot(None)
    finally:
        await connection.close()
    assert snapshot.partial_errors == (stage,)
    assert [account.account for account in snapshot.accounts] == ["AI"]  # resolved with $SYS.REQ.USER.INFO
    assert len(snapshot.streams) == len(SPEC_STREAMS)
    (handler,) = snapshot.consumers
    assert handler.lag_seconds is None if stage == "lag" else handler.lag_seconds is not None
    assert [dlq.stream for dlq in snapshot.dead_letters] == ([] if stage == "dlq" else ["AI_DLQ"])


async def test_cancellation_leaves_no_task_or_request_behind(permission_server: NatsServerProcess) -> None:
    await provision_as_admin(permission_server)
    connection = await nats.connect(permission_server.url, user="noconsumers", password="noconsumers")
    try:
        # Consumer lists are never answered; the caller's deadline ends the cycle mid-flight.
        source = JetStreamSource(connection, Settings(dead_letter_streams=("AI_DLQ",)))
        await connection.request("$SYS.REQ.USER.INFO", b"", timeout=5)  # nats-py's reply subscription
        before = asyncio.all_tasks()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await source.fetch_snapshot(None)
        assert asyncio.all_tasks() - before == set()
        assert connection._resp_map == {}
    finally:
        await connection.close()


async def test_account_label_falls_back_once_when_the_server_will_not_say(
    permission_server: NatsServerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    await provision_as_admin(permission_server)
    connection = await nats.connect(permission_server.url, user="nouserinfo", password="nouserinfo")
    try:
        source = JetStreamSource(connection, FAST_FAILING)
        with caplog.at_level(logging.WARNING, logger="exporter.source"):
            first = await source.fetch_snapshot(None)
            second = await source.fetch_snapshot(first)
    finally:
        await connection.close()
    assert [account.account for account in (*first.accounts, *second.accounts)] == ["$G", "$G"]
    fallbacks = [r.getMessage() for r in caplog.records if "nats.account" in r.getMessage()]
    expected = (
        "could not ask the server for the exporter's account (TimeoutError); labelling it '$G': "
        "set nats.account in the configuration to choose the label"
    )
    assert fallbacks == [expected]  # asked once per source, not every cycle


async def test_closed_connection_is_a_collection_error(nats_server: NatsServerProcess) -> None:
    connection = await nats.connect(nats_server.url)
    await connection.close()
    with pytest.raises(CollectionError) as failure:
        await JetStreamSource(connection, Settings()).fetch_snapshot(None)
    assert failure.value.stage == "account"
    assert "not connected" in str(failure.value)
