"""Hostile and unusual input on the event subjects, against real nats-servers.

Anyone allowed to publish in the account can publish on ``$JS.EVENT.>``: a flood of spoofed advisories,
payloads built to break a JSON parser, and advisories naming streams and consumers that do not exist must
cost the exporter some events (counted), never its connection, its collection or unbounded memory.
Elections are counted through the loss of the server the exporter is connected to, and sampled
acknowledgements of a real consumer fill the processing-time histograms.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from support.cluster import three_node_cluster
from support.scraping import sample, scrape
from support.waiting import wait_for

from exporter.advisories import EVENT_KINDS
from exporter.app import ExporterApp
from exporter.connection import connect_nats
from exporter.intake import EventIntake
from exporter.settings import AckLatencySettings, CollectionSettings, NatsSettings, Settings, WebSettings

ACCOUNT = "$G"
STREAM, CONSUMER = "ORDERS", "worker"
KINDS = {kind.name: kind for kind in EVENT_KINDS}
NAK = KINDS["ADVISORY.CONSUMER.MSG_NAKED"]
FLOOD = 50_000  # bounded: a few seconds of publishing on this machine


def nak_advisory(stream: str, consumer: str) -> tuple[str, bytes]:
    """A NAK advisory as the server writes it, on the subject it uses: anyone can publish the same."""
    payload = {
        "type": NAK.type,
        "id": "spoofed",
        "timestamp": "2026-11-29T12:00:00Z",
        "stream": stream,
        "consumer": consumer,
        "consumer_seq": 1,
        "stream_seq": 1,
        "deliveries": 1,
    }
    return f"{NAK.prefix}.{stream}.{consumer}", json.dumps(payload).encode()


async def js(nc: Client, subject: str, payload: dict[str, object] | None = None) -> dict[str, object]:
    reply = json.loads((await nc.request(subject, json.dumps(payload or {}).encode(), timeout=5)).data)
    assert "error" not in reply, reply
    result: dict[str, object] = reply
    return result


async def create_orders(nc: Client, *, replicas: int = 1, sample_freq: str = "") -> None:
    config: dict[str, object] = {"name": STREAM, "subjects": ["orders.>"], "num_replicas": replicas}
    await js(nc, f"$JS.API.STREAM.CREATE.{STREAM}", config)
    consumer: dict[str, object] = {
        "durable_name": CONSUMER,
        "ack_policy": "explicit",
        "num_replicas": replicas,
        "ack_wait": 30_000_000_000,
    }
    if sample_freq:
        consumer["sample_freq"] = sample_freq
    await js(nc, f"$JS.API.CONSUMER.CREATE.{STREAM}.{CONSUMER}", {"stream_name": STREAM, "config": consumer})


def total_naks(intake: EventIntake) -> int:
    return sum(counts.naks for counts in intake.counts().values())


@pytest.fixture
async def intakes() -> AsyncIterator[list[EventIntake]]:
    made: list[EventIntake] = []
    try:
        yield made
    finally:
        for intake in made:
            await intake.close()


async def subscribed(intakes: list[EventIntake], nc: Client, **limits: int) -> EventIntake:
    intake = EventIntake(ACCOUNT, **limits)
    intake.retain([(ACCOUNT, STREAM)], [(ACCOUNT, STREAM, CONSUMER)])
    await intake.subscribe(nc)
    intakes.append(intake)
    return intake


async def flood(nc: Client, advisories: list[tuple[str, bytes]]) -> None:
    for subject, data in advisories:
        await nc.publish(subject, data)
    await nc.flush(timeout=30)


# -- floods ----------------------------------------------------------------------------------------------


async def test_a_flood_for_unknown_consumers_is_dropped_counted_and_bounded(nc, exporter_nc, intakes):
    intake = await subscribed(intakes, exporter_nc, queue_limit=64, unknown_limit=100)
    await flood(nc, [nak_advisory(STREAM, f"spoof-{n}") for n in range(FLOOD)])
    # Every advisory is accounted for: kept for one of the 100 admitted unknown consumers, or dropped.
    # Equality also proves that neither the client nor the server threw any away unseen.
    await wait_for(
        lambda: total_naks(intake) + intake.dropped == FLOOD, timeout=60, message="every advisory accounted"
    )
    assert exporter_nc.is_connected
    assert exporter_nc.stats["reconnects"] == 0  # the server never cut the exporter as a slow consumer
    assert intake.state_size == 200  # 100 counters + 100 admitted names, whatever the flood's size
    assert intake.dropped >= FLOOD - 100
    intake.retain([(ACCOUNT, STREAM)], [(ACCOUNT, STREAM, CONSUMER)])  # the next cycle
    assert intake.state_size == 0


async def test_a_flood_beyond_the_queue_is_dropped_and_counted_not_fatal(nc, exporter_nc, intakes):
    intake = await subscribed(intakes, exporter_nc, queue_limit=64)
    advisory = nak_advisory(STREAM, CONSUMER)  # a known consumer: only the queue can refuse these
    await flood(nc, [advisory] * FLOOD)
    await wait_for(
        lambda: total_naks(intake) + intake.dropped == FLOOD, timeout=60, message="every advisory accounted"
    )
    assert intake.dropped > 0  # the 64-event queue overflowed: the rest was dropped, not buffered
    assert total_naks(intake) > 0
    assert exporter_nc.is_connected
    assert exporter_nc.stats["reconnects"] == 0


async def test_the_exporter_stays_up_through_a_flood(nats_server, nc, tmp_path: Path):
    await create_orders(nc)
    settings = Settings(
        nats=NatsSettings(servers=(nats_server.url,), connect_timeout_seconds=1.0),
        web=WebSettings(listen_address="127.0.0.1:0"),
        collection=CollectionSettings(interval_seconds=0.5, deadline_seconds=2.0),
    )
    app = ExporterApp(settings)
    await app.start()
    try:

        async def up_with_series() -> bool:
            status, samples = await scrape(app.port)
            labels = {"account": ACCOUNT, "stream": STREAM, "consumer": CONSUMER}
            return (
                status == 200
                and sample(samples, "nats_up") == 1
                and (sample(samples, "nats_consumer_naks_total", **labels) is not None)
            )

        await wait_for(up_with_series, timeout=20, message="the first collection")
        await flood(nc, [nak_advisory(STREAM, f"spoof-{n}") for n in range(FLOOD)])

        async def up_and_dropping() -> bool:
            status, samples = await scrape(app.port)
            dropped = sample(samples, "nats_exporter_dropped_advisories_total") or 0
            # At most 1,000 unknown consumers are admitted per cycle (the flood spans a few); the rest are
            # dropped. The count is rendered by a cycle that ran after the flood, and succeeded.
            return status == 200 and sample(samples, "nats_up") == 1 and dropped >= FLOOD // 2

        await wait_for(up_and_dropping, timeout=60, message="nats_up 1 and the flood counted as dropped")
        _, samples = await scrape(app.port)
        consumers = {
            dict(labels).get("consumer") for name, labels in samples if name == "nats_consumer_naks_total"
        }
        assert consumers == {CONSUMER}  # no spoofed consumer is exported
        assert sample(samples, "nats_exporter_collection_errors_total", stage="connect") in (None, 0)
    finally:
        await app.stop()


# -- payloads built to break a parser ----------------------------------------------------------------------


async def test_hostile_payloads_are_counted_as_malformed_exactly_and_logged_once(
    nc, exporter_nc, intakes, caplog
):
    intake = await subscribed(intakes, exporter_nc)
    subject, genuine = nak_advisory(STREAM, CONSUMER)
    hostile = [
        b"[" * 100_000,  # nesting far beyond the size limit
        b"[" * 4_000 + b"]" * 4_000,  # within the size limit: the parser's recursion limit
        b"9" * 200_000,  # a number far beyond the size limit
        b"9" * 5_000,  # within it: more digits than int() accepts
        nak_advisory(STREAM, "someone-else")[1],  # the payload names another consumer than the subject
    ]
    rounds = 40
    with caplog.at_level(logging.WARNING, logger="exporter.advisories"):
        for _ in range(rounds):
            for data in hostile:
                await nc.publish(subject, data)
        await nc.publish(subject, genuine)
        await nc.flush()
        await wait_for(lambda: total_naks(intake) == 1, message="the genuine advisory")
        await intake.drained()
    assert intake.malformed == rounds * len(hostile)
    assert intake.dropped == 0
    assert intake.counts() == {(ACCOUNT, STREAM, CONSUMER): intake.counts()[ACCOUNT, STREAM, CONSUMER]}
    assert len(caplog.records) == 1  # one line for the kind; the rest only add to the counter
    assert exporter_nc.is_connected


# -- elections through the loss of the connected server -----------------------------------------------


async def test_elections_are_counted_after_the_connected_server_is_lost(tmp_path: Path, intakes):
    servers = three_node_cluster(tmp_path)
    urls = tuple(server.url for server in servers)
    admin: Client | None = None
    exporter: Client | None = None
    try:
        admin = await nats.connect(list(urls))
        await wait_for(lambda: stream_created(admin), timeout=30, message="an R3 stream and consumer")
        exporter = await connect_nats(NatsSettings(servers=urls))
        intake = await subscribed(intakes, exporter)
        connected = next(
            s for s in servers if exporter.connected_url and s.url.endswith(f":{exporter.connected_url.port}")
        )
        await asyncio.to_thread(connected.stop)
        await wait_for(
            lambda: exporter.is_connected and exporter.stats["reconnects"] >= 1,
            timeout=30,
            message="the exporter reconnected to another server",
        )
        stream_key, consumer_key = (ACCOUNT, STREAM), (ACCOUNT, STREAM, CONSUMER)

        async def stepped_down() -> bool:
            return await succeeded(admin, f"$JS.API.STREAM.LEADER.STEPDOWN.{STREAM}")

        await wait_for(stepped_down, timeout=30, interval=0.5, message="a stream leader step-down")
        await wait_for(
            lambda: (
                stream_key in intake.stream_counts()
                and intake.stream_counts()[stream_key].leader_elections >= 1
            ),
            timeout=30,
            message="the stream's election counted",
        )

        async def consumer_stepped_down() -> bool:
            return await succeeded(admin, f"$JS.API.CONSUMER.LEADER.STEPDOWN.{STREAM}.{CONSUMER}")

        await wait_for(consumer_stepped_down, timeout=30, interval=0.5, message="a consumer leader step-down")
        await wait_for(
            lambda: consumer_key in intake.counts() and intake.counts()[consumer_key].leader_elections >= 1,
            timeout=30,
            message="the consumer's election counted",
        )
        assert intake.malformed == 0
    finally:
        for client in (exporter, admin):
            if client is not None:
                await client.close()
        for server in servers:
            server.cleanup()


async def succeeded(nc: Client, subject: str) -> bool:
    """Whether a JetStream API request succeeded: not while the group (or the client) has no leader."""
    try:
        reply = json.loads((await nc.request(subject, b"", timeout=5)).data)
    except nats.errors.Error:
        return False  # the admin connection may be reconnecting from the lost server too
    return bool(reply.get("success"))


async def stream_created(nc: Client) -> bool:
    try:
        await create_orders(nc, replicas=3)
    except (AssertionError, nats.errors.Error):
        return False  # the meta group is still electing its leader
    return True


# -- processing time from a real consumer with sample_freq -----------------------------------------------


async def test_sampled_acks_of_a_real_consumer_fill_the_histograms(nc, exporter_nc, intakes):
    await create_orders(nc, sample_freq="100%")
    intake = await subscribed(intakes, exporter_nc)
    js_context = nc.jetstream()
    for n in range(3):
        await js_context.publish(f"orders.{n}", b"order")
    sub = await js_context.pull_subscribe_bind(durable=CONSUMER, stream=STREAM)
    first = await sub.fetch(3, timeout=5)
    assert len(first) == 3
    await first[0].nak()
    for msg in first[1:]:
        await msg.ack_sync()
    (again,) = await sub.fetch(1, timeout=5)
    assert again.metadata.num_delivered == 2
    await again.ack_sync()
    key = (ACCOUNT, STREAM, CONSUMER)
    await wait_for(
        lambda: key in intake.ack_histograms() and intake.ack_histograms()[key].latency_seconds.count == 3,
        message="three sampled acknowledgements",
    )
    histograms = intake.ack_histograms()[key]
    assert histograms.latency_seconds.sum > 0
    assert histograms.deliveries.cumulative_counts[:2] == (2, 3)  # two at the first try, one at the second
    assert intake.malformed == 0


async def test_the_exporter_exports_sampled_acks_with_the_configured_buckets(nats_server, nc):
    await create_orders(nc, sample_freq="100%")
    settings = Settings(
        nats=NatsSettings(servers=(nats_server.url,), connect_timeout_seconds=1.0),
        web=WebSettings(listen_address="127.0.0.1:0"),
        collection=CollectionSettings(interval_seconds=0.5, deadline_seconds=2.0),
        ack_latency=AckLatencySettings(buckets=(0.5, 60.0)),
    )
    app = ExporterApp(settings)
    await app.start()
    labels = {"account": ACCOUNT, "stream": STREAM, "consumer": CONSUMER}
    try:
        await wait_for(lambda: up_is_one(app.port), timeout=20, message="the first collection")
        await nc.jetstream().publish("orders.1", b"order")
        sub = await nc.jetstream().pull_subscribe_bind(durable=CONSUMER, stream=STREAM)
        (msg,) = await sub.fetch(1, timeout=5)
        await msg.ack_sync()

        async def sampled() -> bool:
            _, samples = await scrape(app.port)
            return sample(samples, "nats_consumer_ack_latency_seconds_count", **labels) == 1

        await wait_for(sampled, timeout=20, message="the sampled acknowledgement exported")
        _, samples = await scrape(app.port)
        bounds = {
            dict(series)["le"]
            for name, series in samples
            if name == "nats_consumer_ack_latency_seconds_bucket"
        }
        assert bounds == {"0.5", "60.0", "+Inf"}
        assert sample(samples, "nats_consumer_ack_deliveries_bucket", **labels, le="1.0") == 1
    finally:
        await app.stop()


async def up_is_one(port: int) -> bool:
    status, samples = await scrape(port)
    return status == 200 and sample(samples, "nats_up") == 1
