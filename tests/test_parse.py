"""The parser against JetStream API replies recorded from the real nats-server 2.15.1.

The fixtures in fixtures/api/ come from ``record_single_server`` and ``record_cluster`` below: the platform
spec's streams, the chat-handler consumer and real traffic. Re-record them with
``python tests/test_parse.py --record``; ``test_recorded_fixtures_have_the_live_servers_shape``
fails when the server's replies no longer have the recorded shape.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgpack
import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
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

from exporter.jsapi import NO_MESSAGE_FOUND, STREAM_NOT_FOUND, api_error_from_reply
from exporter.natsserver import NatsServerProcess
from exporter.parse import (
    StoredMessageRef,
    list_entry_name,
    oldest,
    parse_account_limit,
    parse_account_state,
    parse_consumer_state,
    parse_dead_letter_state,
    parse_direct_get_headers,
    parse_duration_seconds,
    parse_limit,
    parse_list_page,
    parse_message_get,
    parse_stream_state,
    parse_timestamp,
    subject_counts_page,
)
from exporter.snapshot import ReplicaState, SourceState

pytestmark = pytest.mark.timeout(60)

FIXTURES = Path(__file__).parent / "fixtures" / "api"
TIMESTAMP_KEYS = {
    "first_ts",
    "last_ts",
    "created",
    "ts",
    "last_active",
    "time",
    "pause_until",
    "Nats-Time-Stamp",
}

ACCOUNTS = """
accounts {
  AI: { jetstream: { max_mem: 64MB, max_file: 512MB }, users: [ {user: ai, password: ai} ] }
  OPS: { jetstream: enabled, users: [ {user: ops, password: ops} ] }
}
"""


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


# --- recording ------------------------------------------------------------------------------------------


async def record_single_server(server: NatsServerProcess) -> dict[str, Any]:
    """The spec's platform with traffic, in an account with limits; the replies, by fixture name."""
    ai = await nats.connect(server.url, user="ai", password="ai")
    ops = await nats.connect(server.url, user="ops", password="ops")
    try:
        return await _record_platform(ai, ops)
    finally:
        await ai.close()
        await ops.close()


async def _record_platform(nc: Client, ops: Client) -> dict[str, Any]:
    await provision_platform(nc)
    # Not in the spec: a stream with every limit set and direct gets allowed, so both have a recording.
    await create_stream(
        nc,
        "AUDIT",
        ["audit.>"],
        storage="memory",
        allow_direct=True,
        max_msgs=1000,
        max_bytes=1 << 20,
        max_msgs_per_subject=10,
        max_age=DAY * NS,
    )
    # A push consumer with one filter subject, paused: the other shape of consumer configuration.
    await create_consumer(
        nc,
        "COMPANIONS_CHAT",
        {
            "name": "archiver",
            "durable_name": "archiver",
            "deliver_subject": "archive.chat",
            "filter_subject": "ai.chat.user.*.greeting.*",
            "ack_policy": "none",
            "pause_until": "2099-01-01T00:00:00Z",
        },
    )
    for user in ("u1", "u2", "u3", "u4", "u5"):
        await publish(nc, f"ai.chat.user.{user}.message", chat_message(user, "hello"))
    await publish(nc, "ai.chat.user.u1.greeting.morning", chat_message("u1", "good morning"))
    await publish(nc, "ai.chat.user.u1.login", msgpack.packb({"user_id": "u1"}))
    await publish(nc, "ai.voice.user.u1.request", voice_message("u1"))
    await publish(nc, "audit.login.u1", b"login")
    await publish(nc, "audit.login.u2", b"login")
    first, second, third, fourth = await pull(nc, "COMPANIONS_CHAT", "chat-handler", 4)
    await respond(first, b"+ACK")
    await respond(second, b"-NAK")
    await pull(nc, "COMPANIONS_CHAT", "chat-handler", 1)  # the redelivery
    for failed in (third, fourth):  # the spec's dead-letter path
        await publish(nc, "ai.dlq.chat", failed.data)
        await respond(failed, b"+TERM")
    await publish(nc, "ai.dlq.voice", voice_message("u9"))

    direct = await nc.request(
        "$JS.API.DIRECT.GET.AUDIT", json.dumps({"seq": 1, "next_by_subj": "audit.>"}).encode()
    )
    direct_none = await nc.request(
        "$JS.API.DIRECT.GET.AUDIT", json.dumps({"seq": 1, "next_by_subj": "audit.none"}).encode()
    )
    raw = {
        "stream_msg_get": ("STREAM.MSG.GET.AUDIT", {"seq": 1, "next_by_subj": "audit.>"}),
        "stream_msg_get_no_message": ("STREAM.MSG.GET.AUDIT", {"seq": 1, "next_by_subj": "audit.none"}),
        "stream_list": ("STREAM.LIST", {"offset": 0}),
        "consumer_list": ("CONSUMER.LIST.COMPANIONS_CHAT", {"offset": 0}),
        "consumer_info": ("CONSUMER.INFO.COMPANIONS_CHAT.chat-handler", None),
        "consumer_list_stream_not_found": ("CONSUMER.LIST.NO_SUCH_STREAM", {"offset": 0}),
        "stream_info_dlq": ("STREAM.INFO.AI_DLQ", {"subjects_filter": ">"}),
        "stream_info_not_found": ("STREAM.INFO.NO_SUCH_STREAM", {"subjects_filter": ">"}),
        "account_info": ("INFO", None),
    }
    replies: dict[str, Any] = {}
    for name, (api, payload) in raw.items():
        data = json.dumps(payload).encode() if payload is not None else b""
        replies[name] = json.loads((await nc.request(f"$JS.API.{api}", data, timeout=5)).data)
    replies["account_info_unlimited"] = json.loads((await ops.request("$JS.API.INFO", b"", timeout=5)).data)
    replies["direct_get"] = {"headers": header_map(direct), "data": direct.data.decode()}
    replies["direct_get_no_message"] = {"headers": header_map(direct_none)}
    return replies


def header_map(msg: Msg) -> dict[str, str]:
    # nats-py keys some status headers by a str Enum; record the header names as they are on the wire.
    return {getattr(key, "value", key): value for key, value in (msg.headers or {}).items()}


async def record_cluster(base: Path) -> dict[str, Any]:
    """A cluster's replies: replica groups healthy and with one server down (``missing``, placeholders,
    an offline peer), a mirror, and sources (one filtered, one through an external API prefix)."""
    servers = three_node_cluster(base)
    try:
        nc = await nats.connect(servers[0].url)
        try:
            await wait_for(lambda: request_or_none(nc, "INFO"), timeout=20, message="a meta leader")
            await create_stream(nc, "EDGE", ["edge.>"], num_replicas=1, placement={"tags": ["node:3"]})
            await create_consumer(nc, "EDGE", {"name": "edge-reader", "durable_name": "edge-reader"})
            await create_stream(nc, "CORE", ["core.>"], num_replicas=1, placement={"tags": ["node:1"]})
            await publish_when_routed(nc, "edge.event", b"x")
            await create_stream(nc, "REPLICATED", ["replicated.>"], num_replicas=3)
            await create_consumer(nc, "REPLICATED", {"name": "reader", "durable_name": "reader"})
            for subject in ("replicated.a", "replicated.a", "replicated.b"):
                await publish_when_routed(nc, subject, b"x")
            await lead_away_from(nc, "REPLICATED", servers[2].server_name)
            await create_stream(nc, "COPY", [], placement={"tags": ["node:1"]}, mirror={"name": "REPLICATED"})
            sources = [
                {"name": "REPLICATED", "filter_subject": "replicated.a"},
                {"name": "FAR", "external": {"api": "$JS.elsewhere.API", "deliver": ""}},
            ]
            await create_stream(nc, "MERGED", [], placement={"tags": ["node:2"]}, sources=sources)

            async def copied() -> bool:
                mirror = await js_request(nc, "STREAM.INFO.COPY")
                merged = await js_request(nc, "STREAM.INFO.MERGED")
                return mirror["state"]["messages"] == 3 and merged["state"]["messages"] == 2

            await wait_for(copied, timeout=20, message="the mirror and the sources copied")
            replies = {
                "stream_info_replicated": await js_request(nc, "STREAM.INFO.REPLICATED"),
                "consumer_list_replicated": await js_request(nc, "CONSUMER.LIST.REPLICATED", {"offset": 0}),
                "stream_info_mirror": await js_request(nc, "STREAM.INFO.COPY"),
                "stream_info_sources": await js_request(nc, "STREAM.INFO.MERGED"),
            }
            servers[2].stop()
            replies["stream_list_missing"] = await js_request(nc, "STREAM.LIST", {"offset": 0})
            replies["consumer_list_missing"] = json.loads(
                (await nc.request("$JS.API.CONSUMER.LIST.EDGE", b"{}", timeout=10)).data
            )

            async def peer_offline() -> bool:
                info = await js_request(nc, "STREAM.INFO.REPLICATED")
                replies["stream_info_replica_offline"] = info
                peers = info["cluster"].get("replicas") or ()
                return any(peer.get("offline") and not peer.get("current") for peer in peers)

            await wait_for(peer_offline, timeout=30, message="the stopped peer reported offline")
        finally:
            await nc.close()
    finally:
        for server in servers:
            server.cleanup()
    return replies


def write_fixtures(replies: Mapping[str, Any]) -> None:
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for name, reply in replies.items():
        (FIXTURES / f"{name}.json").write_text(
            json.dumps(reply, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )


def shape(value: Any, key: str = "") -> Any:
    """Keys and types, recursively; maps keyed by data (subjects, metadata, headers) count as leaves."""
    if isinstance(value, dict):
        if key in {"subjects", "metadata", "headers"}:
            return "map"
        return {k: shape(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0], key)] if value else []
    return type(value).__name__


async def test_recorded_fixtures_have_the_live_servers_shape(tmp_path: Path) -> None:
    with NatsServerProcess(store_dir=tmp_path / "store", extra_config=ACCOUNTS) as server:
        live = await record_single_server(server)
    for name, reply in live.items():
        assert shape(reply) == shape(fixture(name)), name


# --- scalars ----------------------------------------------------------------------------------------------


def timestamps_in(value: Any, key: str = "") -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from timestamps_in(v, k)
    elif isinstance(value, list):
        for item in value:
            yield from timestamps_in(item, key)
    elif key in TIMESTAMP_KEYS and isinstance(value, str):
        yield value


def exact_seconds(text: str) -> Decimal:
    """Unix seconds of a UTC RFC 3339 timestamp, as an exact decimal (nanoseconds kept)."""
    whole, _, fraction = text.rstrip("Z").partition(".")
    base = datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp()
    return Decimal(int(base)) + (Decimal(f"0.{fraction}") if fraction else Decimal(0))


def test_every_recorded_timestamp_parses_to_the_nearest_float() -> None:
    texts = [text for path in sorted(FIXTURES.glob("*.json")) for text in timestamps_in(fixture(path.stem))]
    real = [text for text in texts if not text.startswith("0001-")]
    assert len(real) > 40
    assert any(len(text.rstrip("Z").partition(".")[2]) == 9 for text in real)  # nanoseconds present
    for text in real:
        assert parse_timestamp(text) == float(exact_seconds(text)), text
    assert all(parse_timestamp(text) is None for text in texts if text.startswith("0001-"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0001-01-01T00:00:00Z", None),
        (None, None),
        ("", None),
        ("1970-01-01T00:00:00Z", 0.0),
        ("2024-02-29T23:59:59.5Z", 1709251199.5),
        ("2024-03-01T01:00:00.25+01:00", 1709251200.25),  # an offset, should a server ever write one
    ],
)
def test_timestamp_edge_cases(text: str | None, expected: float | None) -> None:
    assert parse_timestamp(text) == expected


def test_unlimited_values_become_none() -> None:
    assert [parse_limit(v) for v in (-1, 0, 1, 5000)] == [None, None, 1, 5000]
    assert [parse_account_limit(v) for v in (-1, 0, 1 << 20)] == [None, 0, 1 << 20]  # 0: none allowed
    assert [parse_duration_seconds(v) for v in (None, 0, -1, 30 * NS, 1)] == [None, None, None, 30.0, 1e-9]


# --- account, streams, consumers ---------------------------------------------------------------------


def test_account_info_with_limits_and_unlimited() -> None:
    reply = fixture("account_info")
    account = parse_account_state(reply, "AI")
    assert account.account == "AI"
    assert (account.memory_bytes, account.storage_bytes) == (reply["memory"], reply["storage"])
    assert (account.max_memory_bytes, account.max_storage_bytes) == (64 * 1024 * 1024, 512 * 1024 * 1024)
    assert (account.streams, account.consumers) == (len(SPEC_STREAMS) + 1, 2)
    assert (account.api_requests, account.api_errors) == (reply["api"]["total"], reply["api"]["errors"])
    assert account.api_errors > 0  # the recording asked for a stream that does not exist
    unlimited = parse_account_state(fixture("account_info_unlimited"), "OPS")
    assert (unlimited.max_memory_bytes, unlimited.max_storage_bytes) == (None, None)
    assert (unlimited.streams, unlimited.consumers) == (0, 0)


def test_streams_of_the_platform() -> None:
    reply = fixture("stream_list")
    streams = {
        stream.name: stream for stream in (parse_stream_state(info, "AI") for info in reply["streams"])
    }
    assert set(streams) == {name for name, *_ in SPEC_STREAMS} | {"AUDIT"}
    for name, subjects, max_age, storage in SPEC_STREAMS:
        stream = streams[name]
        assert (stream.subjects, stream.max_age_seconds, stream.storage) == (
            subjects,
            float(max_age),
            storage,
        )
        assert (stream.retention, stream.replicas, stream.allow_direct) == ("limits", 1, False)
        assert (stream.max_messages, stream.max_bytes, stream.max_messages_per_subject) == (None, None, None)
    for info in reply["streams"]:
        stream, state = streams[info["config"]["name"]], info["state"]
        assert (stream.messages, stream.bytes) == (state["messages"], state["bytes"])
        assert (stream.first_seq, stream.last_seq) == (state["first_seq"], state["last_seq"])
        assert stream.first_ts == parse_timestamp(state["first_ts"])
        assert stream.last_ts == parse_timestamp(state["last_ts"])
        assert (stream.num_subjects, stream.num_deleted) == (
            state.get("num_subjects", 0),
            state.get("num_deleted", 0),
        )
        assert stream.consumer_count == state["consumer_count"]
    chat = streams["COMPANIONS_CHAT"]
    assert (chat.messages, chat.num_subjects, chat.consumer_count) == (6, 6, 2)
    assert chat.first_ts is not None
    assert chat.last_ts is not None
    assert chat.first_ts < chat.last_ts
    empty = streams["AI_PIPELINE"]
    assert (empty.messages, empty.first_ts, empty.last_ts) == (0, None, None)  # zero time -> None
    audit = streams["AUDIT"]
    assert (audit.allow_direct, audit.max_messages, audit.max_bytes) == (True, 1000, 1 << 20)
    assert (audit.max_messages_per_subject, audit.max_age_seconds, audit.storage) == (
        10,
        float(DAY),
        "memory",
    )


def test_consumers_of_the_platform() -> None:
    page = parse_list_page(fixture("consumer_list"), "consumers")
    assert (page.total, page.received, page.unavailable) == (2, 2, ())
    consumers = {c.name: c for c in (parse_consumer_state(info, "AI") for info in page.items)}
    handler = consumers["chat-handler"]
    # The spec's configuration.
    assert (handler.stream, handler.durable, handler.pull) == ("COMPANIONS_CHAT", True, True)
    assert handler.filter_subjects == tuple(CHAT_HANDLER_CONFIG["filter_subjects"])
    assert (handler.ack_policy, handler.deliver_policy) == ("explicit", "new")
    assert (handler.max_deliver, handler.ack_wait_seconds, handler.max_ack_pending) == (3, 30.0, 1000)
    # The recorded traffic: 5 messages, 4 delivered, 1 acked, 1 nak'd and redelivered, 2 terminated.
    assert (handler.num_pending, handler.num_ack_pending, handler.num_redelivered) == (1, 1, 1)
    assert (handler.delivered_consumer_seq, handler.delivered_stream_seq) == (5, 4)
    assert handler.ack_floor_stream_seq == 1
    assert handler.delivered_last_active is not None
    assert handler.ack_floor_last_active is not None
    assert handler.lag_seconds is None  # outstanding work: the source measures it
    assert parse_consumer_state(fixture("consumer_info"), "AI") == handler  # same state, other endpoint

    archiver = consumers["archiver"]
    assert (archiver.durable, archiver.pull, archiver.paused) == (True, False, True)
    assert archiver.filter_subjects == ("ai.chat.user.*.greeting.*",)
    assert (archiver.ack_policy, archiver.max_ack_pending, archiver.max_deliver) == ("none", None, None)
    assert (archiver.delivered_last_active, archiver.ack_floor_last_active) == (None, None)
    assert archiver.num_pending == 1
    info = next(entry for entry in page.items if entry["name"] == "archiver")
    assert archiver.ack_wait_seconds == (
        info["config"]["ack_wait"] / NS if "ack_wait" in info["config"] else None
    )


def test_nothing_outstanding_means_zero_lag_without_a_lookup() -> None:
    info = json.loads(json.dumps(fixture("consumer_info")))
    info["num_pending"] = info["num_ack_pending"] = 0
    assert parse_consumer_state(info, "AI").lag_seconds == 0.0


# --- clustered: replica groups, mirrors and sources -------------------------------------------------------


def test_replica_group_lists_every_peer_leader_first() -> None:
    stream = parse_stream_state(fixture("stream_info_replicated"), "AI")
    assert (stream.replicas, stream.leader, stream.replicas_current) == (3, "n1", 3)
    assert stream.peers == (
        ReplicaState("n1", current=True, lag_operations=0),
        ReplicaState("n2", current=True, lag_operations=0),
        ReplicaState("n3", current=True, lag_operations=0),
    )


def test_an_offline_peer_is_not_current_and_keeps_its_series() -> None:
    healthy = parse_stream_state(fixture("stream_info_replicated"), "AI")
    degraded = parse_stream_state(fixture("stream_info_replica_offline"), "AI")
    assert [peer.server for peer in degraded.peers] == [peer.server for peer in healthy.peers]
    assert [peer.current for peer in degraded.peers] == [True, True, False]
    assert degraded.replicas_current == 2
    # A peer that is behind reports its lag in operations; the leader is never behind.
    reply = fixture("stream_info_replica_offline")
    reply["cluster"]["replicas"][0] |= {"current": False, "lag": 42}
    behind = parse_stream_state(reply, "AI")
    assert [(peer.current, peer.lag_operations) for peer in behind.peers] == [
        (True, 0),
        (False, 42),
        (False, 0),
    ]
    assert behind.replicas_current == 1


def test_without_a_leader_no_replica_is_current() -> None:
    placeholder = next(
        entry for entry in fixture("stream_list_missing")["streams"] if entry["config"]["name"] == "EDGE"
    )
    stream = parse_stream_state(placeholder, "AI")
    assert (stream.leader, stream.replicas, stream.replicas_current) == ("", 1, 0)
    assert stream.peers == (ReplicaState("n3", current=False),)
    kept = parse_stream_state(fixture("stream_info_replicated"), "AI").unreachable()
    assert (kept.leader, kept.replicas_current, len(kept.peers)) == ("", 0, 3)
    assert not any(peer.current for peer in kept.peers)


def test_r1_stream_and_unclustered_server() -> None:
    r1 = parse_stream_state(fixture("stream_info_mirror"), "AI")
    assert (r1.replicas, r1.replicas_current, r1.peers) == (1, 1, (ReplicaState("n1", current=True),))
    single = parse_stream_state(fixture("stream_list")["streams"][0], "AI")
    assert (single.peers, single.replicas_current) == ((), single.replicas)  # no cluster block at all


def test_consumer_replicas_as_the_stream_and_current() -> None:
    info = fixture("consumer_list_replicated")["consumers"][0]
    assert info["config"].get("num_replicas", 0) == 0  # configured "as the stream"
    reader = parse_consumer_state(info, "AI", stream_replicas=3)
    assert (reader.replicas, reader.replicas_current) == (3, 3)
    info["cluster"]["replicas"][1] |= {"current": False, "offline": True}
    assert parse_consumer_state(info, "AI", stream_replicas=3).replicas_current == 2
    info["cluster"].pop("leader")
    assert parse_consumer_state(info, "AI", stream_replicas=3).replicas_current == 0
    single = parse_consumer_state(fixture("consumer_info"), "AI")
    assert (single.replicas, single.replicas_current) == (1, 1)
    assert single.unreachable().replicas_current == 0


def test_mirror_and_sources() -> None:
    mirror_info = fixture("stream_info_mirror")
    (mirror,) = parse_stream_state(mirror_info, "AI").sources
    assert mirror == SourceState(
        kind="mirror",
        name="REPLICATED",
        filter_subject="",
        external_api="",
        lag_messages=mirror_info["mirror"]["lag"],
        active_seconds=mirror_info["mirror"]["active"] / NS,
    )
    mirror_info["mirror"]["lag"] = 17
    assert parse_stream_state(mirror_info, "AI").sources[0].lag_messages == 17

    far, local = parse_stream_state(fixture("stream_info_sources"), "AI").sources  # by name
    assert (local.kind, local.name, local.filter_subject, local.external_api) == (
        "source",
        "REPLICATED",
        "replicated.a",
        "",
    )
    assert local.active_seconds is not None
    assert (far.kind, far.name, far.external_api) == ("source", "FAR", "$JS.elsewhere.API")
    assert far.active_seconds is None  # never heard from: the server says -1
    assert parse_stream_state(fixture("stream_info_replicated"), "AI").sources == ()


# --- lists, missing entries, errors ---------------------------------------------------------------------


def test_stream_list_page() -> None:
    page = parse_list_page(fixture("stream_list"), "streams")
    assert (page.total, page.received, len(page.items), page.unavailable) == (8, 8, 8, ())
    assert [list_entry_name(item) for item in page.items] == sorted(list_entry_name(i) for i in page.items)


def test_missing_entries_are_named_and_their_placeholders_dropped() -> None:
    streams = fixture("stream_list_missing")
    page = parse_list_page(streams, "streams")
    assert page.unavailable == ("EDGE",)
    assert [list_entry_name(item) for item in page.items] == ["COPY", "CORE", "MERGED", "REPLICATED"]
    assert (page.total, page.received) == (5, 5)  # the placeholder still counts for paging
    consumers = fixture("consumer_list_missing")
    assert consumers["consumers"][0]["name"] == ""  # the server's placeholder has no name
    page = parse_list_page(consumers, "consumers")
    assert (page.unavailable, page.items, page.received) == (("edge-reader",), (), 1)


def test_offline_map_counts_as_unavailable() -> None:
    # Same reply shape, with the "offline" map newer servers add (name -> reason) instead of "missing".
    reply = fixture("stream_list_missing")
    reply["offline"] = dict.fromkeys(reply.pop("missing"), "unsupported feature")
    page = parse_list_page(reply, "streams")
    assert page.unavailable == ("EDGE",)
    assert [list_entry_name(item) for item in page.items] == ["COPY", "CORE", "MERGED", "REPLICATED"]


@pytest.mark.parametrize(
    ("name", "err_code", "code"),
    [
        ("consumer_list_stream_not_found", STREAM_NOT_FOUND, 404),
        ("stream_info_not_found", STREAM_NOT_FOUND, 404),
        ("stream_msg_get_no_message", NO_MESSAGE_FOUND, 404),
    ],
)
def test_error_replies_become_typed_errors(name: str, err_code: int, code: int) -> None:
    reply = fixture(name)
    error = api_error_from_reply("$JS.API.X", reply)
    assert error is not None
    assert (error.err_code, error.code, error.description) == (err_code, code, reply["error"]["description"])
    assert str(error) == f"$JS.API.X: {reply['error']['description']} (code {code}, err_code {err_code})"
    assert api_error_from_reply("$JS.API.X", fixture("stream_list")) is None


# --- dead letters and message look-ups ---------------------------------------------------------------------


def test_dead_letter_stream_counts_per_subject() -> None:
    reply = fixture("stream_info_dlq")
    counts = subject_counts_page(reply)
    assert dict(counts) == {"ai.dlq.chat": 2, "ai.dlq.voice": 1}
    state = parse_dead_letter_state(reply, counts, "AI")
    assert (state.stream, state.exists, state.account) == ("AI_DLQ", True, "AI")
    assert state.subject_counts == (("ai.dlq.chat", 2), ("ai.dlq.voice", 1))
    assert state.first_ts == parse_timestamp(reply["state"]["first_ts"])
    assert state.first_ts is not None


def test_direct_get_and_message_get_read_the_same_message() -> None:
    direct = parse_direct_get_headers(fixture("direct_get")["headers"])
    stored = parse_message_get(fixture("stream_msg_get"))
    assert direct == stored
    assert direct is not None
    assert direct.seq == 1
    assert direct.timestamp == parse_timestamp(fixture("stream_msg_get")["message"]["time"])
    assert parse_direct_get_headers(fixture("direct_get_no_message")["headers"]) is None


def test_direct_get_unexpected_status_is_an_error() -> None:
    with pytest.raises(ValueError, match="status 408"):
        parse_direct_get_headers({"Status": "408", "Description": "Request Timeout"})


def test_oldest_of_several_lookups() -> None:
    early, late = StoredMessageRef(seq=4, timestamp=10.0), StoredMessageRef(seq=9, timestamp=12.0)
    assert oldest([late, None, early]) == early
    assert oldest([None, None]) is None


if __name__ == "__main__" and sys.argv[1:] in (["--record"], ["--record-cluster"]):
    # --record-cluster re-records only the cluster's replies, leaving the single server's as they are.

    async def _record(*, single_server: bool) -> None:
        import tempfile  # noqa: PLC0415 (only the recorder needs it)

        replies: dict[str, Any] = {}
        with tempfile.TemporaryDirectory() as base:
            if single_server:
                with NatsServerProcess(store_dir=Path(base) / "single", extra_config=ACCOUNTS) as server:
                    replies.update(await record_single_server(server))
            replies.update(await record_cluster(Path(base) / "cluster"))
        write_fixtures(replies)
        print(f"recorded {len(replies)} replies in {FIXTURES}")

    asyncio.run(_record(single_server=sys.argv[1] == "--record"))
