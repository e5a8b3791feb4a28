"""io.nats.monitor.* metadata -> thresholds, as ``nats server check stream/consumer`` read it."""

from __future__ import annotations

import pytest

from exporter.demo.platform import parse_platform
from exporter.errors import ConfigError
from exporter.monitoring import (
    consumer_monitoring,
    label_collisions,
    metadata_label_name,
    metadata_label_values,
    parse_monitor_duration,
    stream_monitoring,
)
from exporter.parse import parse_consumer_state, parse_stream_state
from exporter.snapshot import Threshold

ON = {"io.nats.monitor.enabled": "true"}


def thresholds(monitoring) -> dict[tuple[str, str], float]:
    return {(t.check, t.severity): t.value for t in monitoring.thresholds}


def test_every_stream_key_becomes_its_check_and_severity() -> None:
    metadata = {
        **ON,
        "io.nats.monitor.msgs-warn": "100",
        "io.nats.monitor.msgs-critical": "10",
        "io.nats.monitor.subjects-warn": "500",
        "io.nats.monitor.subjects-critical": "1000",
        "io.nats.monitor.lag-critical": "200",
        "io.nats.monitor.seen-critical": "5m",
        "io.nats.monitor.min-sources": "2",
        "io.nats.monitor.max-sources": "4",
        "io.nats.monitor.peer-expect": "3",
        "io.nats.monitor.peer-lag-critical": "50",
        "io.nats.monitor.peer-seen-critical": "1h30m",
    }
    monitoring = stream_monitoring(metadata)
    assert monitoring.problems == ()
    assert thresholds(monitoring) == {
        ("msgs", "warning"): 100,
        ("msgs", "critical"): 10,
        ("subjects_max", "warning"): 500,
        ("subjects_max", "critical"): 1000,
        ("lag", "critical"): 200,
        ("seen", "critical"): 300,
        ("sources_min", "critical"): 2,
        ("sources_max", "critical"): 4,
        ("peers", "critical"): 3,
        ("peer_lag", "critical"): 50,
        ("peer_seen", "critical"): 5400,
    }


def test_every_consumer_key_becomes_its_check_with_durations_in_seconds() -> None:
    metadata = {
        **ON,
        "io.nats.monitor.outstanding-ack-critical": "500",
        "io.nats.monitor.waiting-critical": "20",
        "io.nats.monitor.unprocessed-critical": "1000",
        "io.nats.monitor.last-delivery-critical": "2d",
        "io.nats.monitor.last-ack-critical": "90s",
        "io.nats.monitor.redelivery-critical": "5",
    }
    assert thresholds(consumer_monitoring(metadata)) == {
        ("outstanding_ack", "critical"): 500,
        ("waiting", "critical"): 20,
        ("unprocessed", "critical"): 1000,
        ("last_delivery", "critical"): 2 * 86400,
        ("last_ack", "critical"): 90,
        ("redelivery", "critical"): 5,
    }


def test_subjects_warn_at_or_above_critical_is_a_floor() -> None:
    metadata = {**ON, "io.nats.monitor.subjects-warn": "10", "io.nats.monitor.subjects-critical": "2"}
    assert thresholds(stream_monitoring(metadata)) == {
        ("subjects_min", "warning"): 10,
        ("subjects_min", "critical"): 2,
    }
    only_critical = {**ON, "io.nats.monitor.subjects-critical": "7"}
    assert thresholds(stream_monitoring(only_critical)) == {("subjects_max", "critical"): 7}


@pytest.mark.parametrize("enabled", [None, "false", "0", "F"])
def test_nothing_is_exported_unless_monitoring_is_enabled(enabled: str | None) -> None:
    metadata = {"io.nats.monitor.msgs-critical": "10"}
    if enabled is not None:
        metadata["io.nats.monitor.enabled"] = enabled
    monitoring = stream_monitoring(metadata)
    assert monitoring.thresholds == ()
    assert monitoring.problems == ()


@pytest.mark.parametrize("enabled", ["1", "t", "T", "TRUE", "true", "True"])
def test_enabled_accepts_what_go_parse_bool_accepts(enabled: str) -> None:
    metadata = {"io.nats.monitor.enabled": enabled, "io.nats.monitor.lag-critical": "3"}
    assert thresholds(stream_monitoring(metadata)) == {("lag", "critical"): 3}


def test_zero_or_less_switches_a_check_off() -> None:
    metadata = {**ON, "io.nats.monitor.msgs-critical": "0", "io.nats.monitor.peer-expect": "-1"}
    assert stream_monitoring(metadata) == stream_monitoring({**ON})
    assert stream_monitoring(metadata).thresholds == ()


def test_unreadable_values_are_reported_and_ignored_and_the_rest_kept() -> None:
    metadata = {
        **ON,
        "io.nats.monitor.msgs-critical": "ten",
        "io.nats.monitor.lag-critical": "-5",  # an unsigned key, as strconv.ParseUint reads it
        "io.nats.monitor.seen-critical": "5 minutes",
        "io.nats.monitor.msgs-warn": "100",
    }
    monitoring = stream_monitoring(metadata)
    assert thresholds(monitoring) == {("msgs", "warning"): 100}
    assert len(monitoring.problems) == 3
    assert any("io.nats.monitor.msgs-critical='ten'" in problem for problem in monitoring.problems)
    unreadable_enabled = consumer_monitoring({"io.nats.monitor.enabled": "yes"})
    assert unreadable_enabled.thresholds == ()
    assert unreadable_enabled.problems == ("io.nats.monitor.enabled='yes': expected true or false",)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0),
        ("90s", 90),
        ("1h30m", 5400),
        ("1.5h", 5400),
        ("500ms", 0.5),
        ("1w", 604800),
        ("1M", 30 * 86400),
        ("1y2d", 367 * 86400),
        ("2D", 2 * 86400),
    ],
)
def test_durations_read_as_the_nats_tools_read_them(text: str, seconds: float) -> None:
    assert parse_monitor_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "5x", "m", "1h 30m", "five minutes"])
def test_durations_the_nats_tools_refuse_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_monitor_duration(text)


def test_metadata_label_names_are_valid_and_collisions_found() -> None:
    assert metadata_label_name("team") == "metadata_team"
    assert metadata_label_name("io.nats.monitor/owner-1") == "metadata_io_nats_monitor_owner_1"
    assert label_collisions(("team", "owner")) == {}
    assert label_collisions(("a.b", "a-b", "c")) == {"metadata_a_b": ("a.b", "a-b")}
    assert metadata_label_values({"team": "chat"}, ("team", "owner")) == ("chat", "")
    assert metadata_label_values(None, ("team",)) == ("",)


def test_parse_reads_metadata_of_stream_and_consumer_info() -> None:
    stream_info = {
        "config": {
            "name": "COMPANIONS_CHAT",
            "metadata": {**ON, "io.nats.monitor.msgs-critical": "1", "team": "companions"},
        },
        "state": {"messages": 0, "bytes": 0, "first_seq": 0, "last_seq": 0},
    }
    stream = parse_stream_state(stream_info, "$G", ("team", "owner"))
    assert stream.thresholds == (Threshold("msgs", "critical", 1.0),)
    assert stream.metadata_labels == ("companions", "")
    consumer_info = {
        "stream_name": "COMPANIONS_CHAT",
        "name": "chat-handler",
        "config": {"metadata": {**ON, "io.nats.monitor.waiting-critical": "x"}},
    }
    consumer = parse_consumer_state(consumer_info, "$G")
    assert consumer.thresholds == ()
    assert consumer.metadata_labels == ()
    assert consumer.metadata_problems == ("io.nats.monitor.waiting-critical='x': expected a whole number",)


def test_the_platform_file_refuses_metadata_the_nats_tools_could_not_read() -> None:
    text = """
streams:
  - name: COMPANIONS_CHAT
    subjects: ["ai.chat.>"]
    metadata:
      io.nats.monitor.enabled: "true"
      io.nats.monitor.seen-critical: soon
"""
    with pytest.raises(ConfigError, match=r"streams\[0\]\.metadata.*seen-critical='soon'"):
        parse_platform(text, source="platform.yaml")
    not_text = text.replace("soon", "[1, 2]")
    with pytest.raises(ConfigError, match="expected a text or whole-number value"):
        parse_platform(not_text, source="platform.yaml")
    fine = parse_platform(text.replace("soon", "5m"), source="platform.yaml")
    assert dict(fine.streams[0].metadata)["io.nats.monitor.seen-critical"] == "5m"
