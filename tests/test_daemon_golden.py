"""The whole daemon, byte for byte: ExporterApp against recorded JetStream replies, /metrics as committed.

A real nats-server without JetStream carries the traffic; a stand-in answers ``$JS.API.>`` with replies
recorded from nats-server. The wall clock, the duration timer and the build info are fixed, so the
exposition is the same on every run. ``UPDATE_GOLDEN=1`` rewrites the committed files; review the diff.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from nats.aio.client import Client
from support.jetstream_stand_in import RecordedJetStream, no_consumers, recorded
from support.scraping import scrape_text
from support.waiting import wait_for

from exporter.app import ExporterApp
from exporter.jsapi import DeniedSubjects
from exporter.metrics import BuildInfo, Renderer
from exporter.natsserver import NatsServerProcess
from exporter.server import OPENMETRICS_CONTENT_TYPE
from exporter.settings import CollectionSettings, NatsSettings, Settings, WebSettings
from exporter.source import JetStreamSource

GOLDEN_DIR = Path(__file__).parent / "golden"
NOW = 1_795_800_000.0  # the fixed wall clock: Unix seconds, after every timestamp in the recordings
BUILD = BuildInfo(version="0.0.0-golden", python_version="3.x", nats_py_version="2.x")


def fixed(value: float) -> Callable[[], float]:
    return lambda: value


class StandInSource(JetStreamSource):
    """The real source, dating its data with the fixed clock (lag is measured against it)."""

    def __init__(self, nc: Client, settings: Settings, denied: DeniedSubjects) -> None:
        super().__init__(nc, settings, denied, clock=fixed(NOW))


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[ExporterApp]:
    server = NatsServerProcess(store_dir=tmp_path / "store", jetstream=False)
    server.start()
    replies = {
        "INFO": recorded("account_info"),
        "STREAM.LIST": recorded("stream_list"),
        "CONSUMER.LIST.COMPANIONS_CHAT": recorded("consumer_list"),
        "STREAM.INFO.AI_DLQ": recorded("stream_info_dlq"),
        "STREAM.MSG.GET.COMPANIONS_CHAT": recorded("stream_msg_get"),
    }
    settings = Settings(
        nats=NatsSettings(servers=(server.url,), connect_timeout_seconds=2.0),
        web=WebSettings(listen_address="127.0.0.1:0"),
        # One cycle is all the test reads: the next would start only after the test has finished.
        collection=CollectionSettings(interval_seconds=300.0, deadline_seconds=10.0),
        dead_letter_streams=("AI_DLQ",),
    )
    app = ExporterApp(
        settings, source=StandInSource, renderer=Renderer(BUILD), clock=fixed(NOW), timer=fixed(0.0)
    )
    try:
        async with RecordedJetStream(server.url, replies, {"CONSUMER.LIST.": no_consumers()}):
            await app.start()
            try:
                await wait_for(lambda: app.ready, timeout=20, message="the first collection served")
                yield app
            finally:
                await app.stop()
    finally:
        server.cleanup()


@pytest.mark.parametrize(
    ("filename", "accept"),
    [("daemon.txt", "text/plain"), ("daemon.om.txt", OPENMETRICS_CONTENT_TYPE)],
)
async def test_daemon_exposition_is_the_committed_one(
    daemon: ExporterApp, filename: str, accept: str
) -> None:
    exposition = await scrape_text(daemon.port, accept)
    golden = GOLDEN_DIR / filename
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(exposition, encoding="utf-8")
    assert exposition == golden.read_text(encoding="utf-8"), f"{golden} differs: rerun with UPDATE_GOLDEN=1"
