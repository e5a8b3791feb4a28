"""metrics.exclude: excluded families are not rendered, and what only they need is not even read."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from support.apitap import ApiTap
from support.exposition import render_as_daemon, series_of
from support.spec_platform import create_consumer, create_stream, publish

from exporter.cli import build_parser
from exporter.collectionplan import rendered_families
from exporter.config import settings_from_args
from exporter.errors import ConfigError
from exporter.metrics import FAMILIES
from exporter.natsserver import NatsServerProcess
from exporter.settings import MetricsSettings, Settings
from exporter.source import JetStreamSource

pytestmark = pytest.mark.timeout(60)


def load_yaml(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return settings_from_args(build_parser().parse_args([f"--config={path}"]), {})


def excluding(*patterns: str) -> Settings:
    return Settings(metrics=MetricsSettings(exclude=tuple(re.compile(p) for p in patterns)))


# --- configuration ----------------------------------------------------------------------------------------


def test_names_and_patterns_exclude_families_from_the_rendering(tmp_path: Path) -> None:
    patterns = ["nats_stream_info", "nats_(stream|consumer)_.*_timestamp_seconds", "nats_consumer_max_.*"]
    settings = load_yaml(tmp_path, f"metrics:\n  exclude: {patterns}\n")
    names = {family.name for family in rendered_families(settings)}
    expected = {family.name for family in FAMILIES if not any(re.fullmatch(p, family.name) for p in patterns)}
    assert names == expected
    assert "nats_stream_first_message_timestamp_seconds" not in names
    assert "nats_consumer_max_deliver" not in names
    assert {"nats_stream_messages_total", "nats_dlq_oldest_message_timestamp_seconds"} <= names


@pytest.mark.parametrize(
    ("pattern", "named"),
    [
        ("nats_up", "nats_up"),
        ("nats_exporter_.*", "nats_exporter_"),
        # A broad pattern that also reaches a health family is refused rather than silently narrowed.
        (".*_timestamp_seconds", "nats_exporter_last_success_timestamp_seconds"),
    ],
)
def test_health_families_cannot_be_excluded(pattern: str, named: str) -> None:
    with pytest.raises(ConfigError) as refused:
        settings_from_args(build_parser().parse_args([]), {"NATS_EXPORTER_METRICS_EXCLUDE": pattern})
    assert refused.value.key == "metrics.exclude"
    assert named in refused.value.message
    assert "cannot be excluded" in refused.value.message


def test_an_exclusion_matching_no_family_is_refused() -> None:
    with pytest.raises(ConfigError, match="matches no metric family"):
        settings_from_args(
            build_parser().parse_args([]), {"NATS_EXPORTER_METRICS_EXCLUDE": "nats_stream_mesages_total"}
        )


# --- less work, against a real server ---------------------------------------------------------------------


async def provision(nc: Client) -> None:
    await create_stream(nc, "WORK", ["work.>"])
    await create_stream(nc, "DLQ", ["dead.>"])
    for n in range(3):
        await publish(nc, f"work.{n}", b"job")
        await publish(nc, f"dead.{n}", b"letter")
    await create_consumer(nc, "WORK", {"name": "worker", "durable_name": "worker", "ack_policy": "explicit"})


async def one_cycle(url: str, nc: Client, settings: Settings) -> tuple[dict[Any, float], list[str]]:
    tap = await ApiTap.attach(url)
    try:
        snapshot, requests = await tap.cycle_requests(nc, JetStreamSource(nc, settings).fetch_snapshot(None))
    finally:
        await tap.close()
    return series_of(render_as_daemon(settings, snapshot)), requests


def lookups(requests: list[str]) -> list[str]:
    return [subject for subject in requests if ".MSG.GET." in subject or ".DIRECT.GET." in subject]


async def test_excluded_lag_and_dead_letter_families_cost_no_request(nats_server: NatsServerProcess) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        await provision(nc)
        everything = Settings(dead_letter_streams=("DLQ",))
        series, requests = await one_cycle(nats_server.url, nc, everything)
        names = {name for name, _ in series}
        assert {"nats_consumer_lag_seconds", "nats_dlq_messages"} <= names
        assert lookups(requests)
        assert "$JS.API.STREAM.INFO.DLQ" in requests

        fewer = excluding("nats_consumer_lag_seconds", "nats_dlq_.*")
        fewer = Settings(dead_letter_streams=("DLQ",), metrics=fewer.metrics)
        series, requests = await one_cycle(nats_server.url, nc, fewer)
        names = {name for name, _ in series}
        assert not names & {"nats_consumer_lag_seconds", "nats_dlq_messages", "nats_dlq_stream_present"}
        assert "nats_consumer_pending_messages" in names
        assert lookups(requests) == []
        assert "$JS.API.STREAM.INFO.DLQ" not in requests
    finally:
        await nc.close()
