"""Monitoring metadata against a real nats-server: thresholds and metadata labels set with nats-py's
``metadata`` (as ``nats stream add --metadata`` sets them) come out of one collection as series."""

from __future__ import annotations

import logging

import pytest
from nats.aio.client import Client
from nats.js.api import ConsumerConfig, StreamConfig
from prometheus_client.parser import text_string_to_metric_families

from exporter.demo.platform import load_platform
from exporter.demo.provisioning import apply_platform
from exporter.jsapi import JetStreamApi
from exporter.metrics import render_exposition
from exporter.settings import LabelSettings, Settings
from exporter.snapshot import ExporterHealth, Snapshot
from exporter.source import JetStreamSource

pytestmark = pytest.mark.timeout(60)

HEALTH = ExporterHealth(up=True, collection_duration_seconds=0.1, last_success_timestamp=None)
WITH_TEAM = Settings(labels=LabelSettings(from_metadata=("team", "app.kubernetes.io/name")))


def series(snapshot: Snapshot) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = render_exposition(snapshot, HEALTH).decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def labelled(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str) -> dict[frozenset, float]:
    return {labels: value for (series_name, labels), value in found.items() if series_name == name}


async def test_thresholds_and_metadata_labels_from_a_real_server(nc: Client) -> None:
    js = nc.jetstream()
    await js.add_stream(
        StreamConfig(
            name="COMPANIONS_CHAT",
            subjects=["ai.chat.user.*.message"],
            metadata={
                "team": "companions",
                "io.nats.monitor.enabled": "true",
                "io.nats.monitor.msgs-critical": "1",
                "io.nats.monitor.subjects-warn": "500",
                "io.nats.monitor.subjects-critical": "1000",
                "io.nats.monitor.seen-critical": "5m",
            },
        )
    )
    # Thresholds without io.nats.monitor.enabled are not exported; a stream without metadata has none.
    await js.add_stream(
        StreamConfig(
            name="AI_PIPELINE", subjects=["ai.pipeline.>"], metadata={"io.nats.monitor.msgs-critical": "1"}
        )
    )
    await js.add_stream(StreamConfig(name="AI_DLQ", subjects=["ai.dlq.>"]))
    await js.add_consumer(
        "COMPANIONS_CHAT",
        ConsumerConfig(
            durable_name="chat-handler",
            metadata={
                "app.kubernetes.io/name": "chat",
                "io.nats.monitor.enabled": "true",
                "io.nats.monitor.outstanding-ack-critical": "800",
                "io.nats.monitor.last-ack-critical": "10m",
            },
        ),
    )

    snapshot = await JetStreamSource(nc, WITH_TEAM).fetch_snapshot(None)
    assert snapshot.partial_errors == ()
    found = series(snapshot)

    base = {"account": "$G", "stream": "COMPANIONS_CHAT"}
    assert labelled(found, "nats_stream_threshold") == {
        frozenset({**base, "check": "msgs", "severity": "critical"}.items()): 1,
        frozenset({**base, "check": "subjects_max", "severity": "warning"}.items()): 500,
        frozenset({**base, "check": "subjects_max", "severity": "critical"}.items()): 1000,
        frozenset({**base, "check": "seen", "severity": "critical"}.items()): 300,
    }
    consumer = {**base, "consumer": "chat-handler"}
    assert labelled(found, "nats_consumer_threshold") == {
        frozenset({**consumer, "check": "outstanding_ack", "severity": "critical"}.items()): 800,
        frozenset({**consumer, "check": "last_ack", "severity": "critical"}.items()): 600,
    }
    stream_info = {dict(labels)["stream"]: dict(labels) for labels in labelled(found, "nats_stream_info")}
    assert stream_info["COMPANIONS_CHAT"]["metadata_team"] == "companions"
    assert stream_info["COMPANIONS_CHAT"]["metadata_app_kubernetes_io_name"] == ""
    assert stream_info["AI_DLQ"]["metadata_team"] == ""
    (consumer_info,) = (dict(labels) for labels in labelled(found, "nats_consumer_info"))
    assert consumer_info["metadata_app_kubernetes_io_name"] == "chat"
    assert consumer_info["metadata_team"] == ""
    # Metadata labels are on the *_info series only.
    for name, labels in found:
        if not name.endswith("_info"):
            assert not any(label.startswith("metadata_") for label, _ in labels), name


async def test_an_unreadable_value_is_ignored_counted_each_cycle_and_logged_once(
    nc: Client, caplog: pytest.LogCaptureFixture
) -> None:
    js = nc.jetstream()
    metadata = {
        "io.nats.monitor.enabled": "true",
        "io.nats.monitor.msgs-critical": "ten",
        "io.nats.monitor.msgs-warn": "5",
    }
    await js.add_stream(
        StreamConfig(name="COMPANIONS_LOGINS", subjects=["ai.chat.user.*.login"], metadata=metadata)
    )
    source = JetStreamSource(nc, Settings())
    with caplog.at_level(logging.WARNING, logger="exporter.source"):
        first = await source.fetch_snapshot(None)
        second = await source.fetch_snapshot(first)
    assert first.partial_errors == second.partial_errors == ("metadata",)
    warnings = [
        record.getMessage() for record in caplog.records if "monitoring metadata" in record.getMessage()
    ]
    expected = (
        "ignoring unreadable monitoring metadata of stream 'COMPANIONS_LOGINS': "
        "io.nats.monitor.msgs-critical='ten': expected a whole number of 0 or more"
    )
    assert warnings == [expected]
    assert labelled(series(second), "nats_stream_threshold") == {
        frozenset(
            {"account": "$G", "stream": "COMPANIONS_LOGINS", "check": "msgs", "severity": "warning"}.items()
        ): 5
    }
    # Fixed on the server: the stage stops failing.
    info = await js.stream_info("COMPANIONS_LOGINS")
    info.config.metadata = {**metadata, "io.nats.monitor.msgs-critical": "1"}
    await js.update_stream(info.config)
    third = await source.fetch_snapshot(second)
    assert third.partial_errors == ()
    assert len(labelled(series(third), "nats_stream_threshold")) == 2


async def test_the_platform_file_provisions_the_thresholds_the_demo_shows(nc: Client) -> None:
    api = JetStreamApi(nc, domain=None, timeout_seconds=5.0)
    await apply_platform(api, load_platform())
    # Metadata someone else set survives a second provisioning, which then changes nothing.
    js = nc.jetstream()
    info = await js.stream_info("COMPANIONS_CHAT")
    info.config.metadata = {**(info.config.metadata or {}), "owner": "someone"}
    await js.update_stream(info.config)
    report = await apply_platform(api, load_platform())
    assert report.count("updated") == 0, report.render()
    assert (await js.stream_info("COMPANIONS_CHAT")).config.metadata["owner"] == "someone"

    snapshot = await JetStreamSource(nc, Settings(labels=LabelSettings(("team",)))).fetch_snapshot(None)
    found = series(snapshot)
    consumer = {"account": "$G", "stream": "COMPANIONS_CHAT", "consumer": "chat-handler"}
    assert labelled(found, "nats_consumer_threshold") == {
        frozenset({**consumer, "check": check, "severity": "critical"}.items()): value
        for check, value in (
            ("unprocessed", 1000),
            ("outstanding_ack", 800),
            ("redelivery", 50),
            ("last_ack", 600),
        )
    }
    checks = {dict(labels)["check"] for labels in labelled(found, "nats_stream_threshold")}
    assert checks == {"subjects_max", "msgs"}
    teams = {
        dict(labels)["stream"]: dict(labels)["metadata_team"]
        for labels in labelled(found, "nats_stream_info")
    }
    assert teams["COMPANIONS_CHAT"] == "companions"
    assert teams["AI_PIPELINE"] == "ai-platform"
