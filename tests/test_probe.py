"""The end-to-end probe against real nats-servers: healthy, refused by a full stream, across a restart, and
through the exporter's /metrics."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import DiscardPolicy, StorageType, StreamConfig
from support.scraping import sample, scrape
from support.waiting import wait_for

from exporter.app import ExporterApp
from exporter.natsserver import NatsCluster, NatsServerProcess
from exporter.probe import Probe
from exporter.settings import CollectionSettings, NatsSettings, ProbeSettings, Settings, WebSettings
from exporter.stages import ProbeStage

# Short enough for a failed probe to finish quickly, long enough for a busy shared machine.
PROBE = ProbeSettings(enabled=True, stream="PROBE_TEST", subject="probe.test", timeout_seconds=2.0)


def new_probe(settings: ProbeSettings = PROBE) -> Probe:
    return Probe(settings, domain=None, interval_seconds=1.0)


def failures(probe: Probe) -> dict[str, int]:
    return dict(probe.health().failures)


def no_failures_but(**counts: int) -> dict[str, int]:
    return {str(stage): counts.get(str(stage), 0) for stage in ProbeStage}


@pytest.fixture
async def nc(nats_server: NatsServerProcess) -> AsyncIterator[Client]:
    client = await nats.connect(
        nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1, connect_timeout=2
    )
    try:
        yield client
    finally:
        await client.close()


async def test_a_healthy_probe_creates_its_stream_and_measures_both_latencies(nc: Client) -> None:
    probe = new_probe()
    try:
        assert await probe.run(nc)
        assert await probe.run(nc)
    finally:
        await probe.close()
    health = probe.health()
    assert health.up
    assert health.publish_ack_seconds.count == 2
    assert health.round_trip_seconds.count == 2
    assert health.round_trip_seconds.sum >= health.publish_ack_seconds.sum > 0
    assert health.failures == no_failures_but()
    info = await nc.jetstream().stream_info(PROBE.stream)
    assert info.config.subjects == [PROBE.subject]
    assert info.config.storage == StorageType.MEMORY
    assert info.config.max_age == PROBE.max_age_seconds
    assert info.state.messages == 2


async def test_a_stream_at_its_limit_with_discard_new_fails_at_publish(nc: Client) -> None:
    js = nc.jetstream()
    # The probe uses the stream it finds (it never changes or deletes it): one message, already stored.
    await js.add_stream(
        StreamConfig(name=PROBE.stream, subjects=[PROBE.subject], max_msgs=1, discard=DiscardPolicy.NEW)
    )
    await js.publish(PROBE.subject, b"filler")
    probe = new_probe()
    try:
        assert not await probe.run(nc)
        assert not await probe.run(nc)
    finally:
        await probe.close()
    health = probe.health()
    assert not health.up
    assert health.failures == no_failures_but(publish=2)
    assert health.publish_ack_seconds.count == 0
    assert (await js.stream_info(PROBE.stream)).state.messages == 1


async def test_the_probe_fails_while_the_server_is_down_and_recovers_after_its_restart(
    nats_server: NatsServerProcess, nc: Client, caplog: pytest.LogCaptureFixture
) -> None:
    probe = new_probe()  # a memory stream: the restart loses it, and the probe creates it again
    caplog.set_level(logging.INFO, logger="exporter.probe")
    try:
        assert await probe.run(nc)
        nats_server.stop()
        assert not await probe.run(nc)
        assert not probe.health().up
        nats_server.start()
        await wait_for(lambda: probe.run(nc), timeout=30, message="the probe to succeed after the restart")
    finally:
        await probe.close()
    health = probe.health()
    assert health.up
    failed = {stage: count for stage, count in health.failures.items() if count}
    assert failed, "the outage was not counted"
    assert set(failed) <= {ProbeStage.CONNECT, ProbeStage.SETUP, ProbeStage.PUBLISH}
    # One line per change of state: succeeded, failed (once, however many runs), succeeded again.
    lines = [record.getMessage() for record in caplog.records if record.name == "exporter.probe"]
    changes = [line for line in lines if line.startswith("probe ")]
    assert len(changes) <= 1 + len(failed) + 1, changes
    assert changes[0].startswith("probe succeeded")
    assert changes[-1].startswith("probe succeeded")


async def test_a_deleted_probe_stream_fails_one_probe_then_is_created_again(nc: Client) -> None:
    probe = new_probe()
    try:
        assert await probe.run(nc)
        await nc.jetstream().delete_stream(PROBE.stream)
        assert not await probe.run(nc)
        assert probe.health().failures == no_failures_but(publish=1)
        assert await probe.run(nc)
    finally:
        await probe.close()
    assert (await nc.jetstream().stream_info(PROBE.stream)).state.messages == 1


async def test_a_replicated_probe_stream_without_quorum_fails_at_publish_then_recovers(
    tmp_path: Path,
) -> None:
    settings = replace(PROBE, storage="file", replicas=3, timeout_seconds=5.0)
    with NatsCluster(tmp_path) as cluster:
        cluster.start()
        kept, *stopped = cluster.members
        # Connected to one member only, so that the client stays on the member that keeps running.
        nc = await nats.connect(kept.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
        probe = new_probe(settings)
        try:
            # The first set-up may wait for the new cluster to place an R3 stream.
            await wait_for(lambda: probe.run(nc), timeout=30, message="a first successful R3 probe")
            before = failures(probe)
            for member in stopped:
                member.stop()

            async def failed() -> bool:
                return not await probe.run(nc)

            await wait_for(failed, timeout=30, message="a failed probe without quorum")
            assert await failed()  # and the next one fails the same way
            after = failures(probe)
            assert not probe.health().up
            assert after[ProbeStage.PUBLISH] - before[ProbeStage.PUBLISH] >= 2
            assert after == {**before, ProbeStage.PUBLISH: after[ProbeStage.PUBLISH]}  # only publish failed
            for member in stopped:
                member.start()
            await wait_for(lambda: probe.run(nc), timeout=60, message="the probe to recover with its quorum")
        finally:
            await probe.close()
            await nc.close()


async def test_without_a_connection_the_probe_fails_at_connect() -> None:
    probe = new_probe()
    assert not await probe.run(None)
    assert probe.health().failures == no_failures_but(connect=1)


async def test_a_stream_on_another_subject_fails_at_publish_and_the_stream_is_kept(nc: Client) -> None:
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=PROBE.stream, subjects=["elsewhere"]))
    probe = new_probe()
    try:
        assert not await probe.run(nc)
    finally:
        await probe.close()
    assert probe.health().failures == no_failures_but(publish=1)
    assert (await js.stream_info(PROBE.stream)).config.subjects == ["elsewhere"]


async def test_the_exporter_exports_the_probe_beside_collection(nats_server: NatsServerProcess) -> None:
    settings = Settings(
        nats=NatsSettings(servers=(nats_server.url,)),
        web=WebSettings(listen_address="127.0.0.1:0"),
        collection=CollectionSettings(
            interval_seconds=0.5, deadline_seconds=0.4, request_timeout_seconds=0.4
        ),
        probe=replace(PROBE, storage="file"),
    )
    app = ExporterApp(settings)
    await app.start()
    try:

        async def probed() -> bool:
            _, samples = await scrape(app.port)
            count = sample(samples, "nats_probe_round_trip_seconds_count")
            return sample(samples, "nats_probe_up") == 1 and count is not None and count > 0

        await wait_for(probed, timeout=20, message="nats_probe_up 1 with a round trip observed")
        _, samples = await scrape(app.port)
        assert sample(samples, "nats_up") == 1
        assert (sample(samples, "nats_probe_publish_ack_seconds_count") or 0) > 0
        for stage in ProbeStage:
            assert sample(samples, "nats_probe_failures_total", stage=str(stage)) == 0

        async def collected() -> bool:  # the probe stream is collected like any other stream
            _, samples = await scrape(app.port)
            return (
                sample(samples, "nats_stream_messages_total", account="$G", stream=PROBE.stream) is not None
            )

        await wait_for(collected, timeout=20, message="the probe stream in the collected streams")
    finally:
        await app.stop()


async def test_a_disabled_probe_exports_nothing(nats_server: NatsServerProcess) -> None:
    settings = Settings(
        nats=NatsSettings(servers=(nats_server.url,)),
        web=WebSettings(listen_address="127.0.0.1:0"),
        collection=CollectionSettings(
            interval_seconds=0.5, deadline_seconds=0.4, request_timeout_seconds=0.4
        ),
    )
    app = ExporterApp(settings)
    await app.start()
    try:
        await wait_for(lambda: app.ready, timeout=20, message="the first collection")
        _, samples = await scrape(app.port)
        assert not [name for name, _ in samples if name.startswith("nats_probe_")]
    finally:
        await app.stop()


async def test_a_failing_probe_leaves_collection_up(nats_server: NatsServerProcess, nc: Client) -> None:
    await nc.jetstream().add_stream(
        StreamConfig(name=PROBE.stream, subjects=[PROBE.subject], max_msgs=1, discard=DiscardPolicy.NEW)
    )
    await nc.jetstream().publish(PROBE.subject, b"filler")
    settings = Settings(
        nats=NatsSettings(servers=(nats_server.url,)),
        web=WebSettings(listen_address="127.0.0.1:0"),
        collection=CollectionSettings(
            interval_seconds=0.5, deadline_seconds=0.4, request_timeout_seconds=0.4
        ),
        probe=PROBE,
    )
    app = ExporterApp(settings)
    await app.start()
    try:

        async def probe_failed_twice() -> bool:
            _, samples = await scrape(app.port)
            return (sample(samples, "nats_probe_failures_total", stage="publish") or 0) >= 2

        await wait_for(probe_failed_twice, timeout=20, message="two failed probes in /metrics")
        _, samples = await scrape(app.port)
        assert sample(samples, "nats_probe_up") == 0
        assert sample(samples, "nats_up") == 1
        assert sample(samples, "nats_probe_round_trip_seconds_count") == 0
    finally:
        await app.stop()
