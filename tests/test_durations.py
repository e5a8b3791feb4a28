"""Durations as configuration, flags and the demo's platform file write them, and back to text."""

from __future__ import annotations

import pytest

from exporter.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("15s", 15.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("2h", 7200.0),
        ("1.5h", 5400.0),
        ("1h2m3.5s", 3723.5),
        ("250us", 0.00025),
        ("250µs", 0.00025),
        ("10ns", 1e-8),
        ("7d", 604800.0),
        ("30d", 30 * 86400.0),
        ("1d12h", 129600.0),
        ("10", 10.0),
        ("2.5", 2.5),
        (" 15s ", 15.0),
        ("-1s", -1.0),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "s", "d", "15x", "5x", "1m30", "15 s", "7 days", "1e3s", "inf", "nan", "1w", "m15", "--1s"]
)
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.5, "500ms"),
        (1.5, "1.5s"),
        (15, "15s"),
        (90, "1m30s"),
        (300, "5m"),
        (604, "10m4s"),
        (5400, "1h30m"),
        (7200, "2h"),
        (3723.5, "1h2m3.5s"),
        (86400, "1d"),
        (604800, "7d"),
        (30 * 86400, "30d"),
        (-300, "-5m"),
    ],
)
def test_format_duration_round_trips(seconds, text):
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds
