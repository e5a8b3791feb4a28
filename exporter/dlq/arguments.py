"""The inspector's own flag types: time bounds and sequence lists (shared ones are in exporter.argtypes)."""

from __future__ import annotations

import argparse
import datetime as dt
from dataclasses import dataclass
from typing import Final

from exporter.durations import parse_duration

MAX_SEQUENCES: Final = 10_000  # one --seq list, so a typo like 1-99999999 cannot start a storm


@dataclass(frozen=True, slots=True)
class TimeBound:
    """``--since``/``--until``: an absolute time, or a duration meaning "that long ago"."""

    text: str
    absolute: float | None = None
    ago_seconds: float | None = None

    def resolve(self, now: float) -> float:
        if self.absolute is not None:
            return self.absolute
        return now - (self.ago_seconds or 0.0)


def parse_time_bound(text: str) -> TimeBound:
    """An RFC 3339 time with its offset (``2026-02-01T14:30:00Z``) or a duration ago (``90m``, ``2d12h``)."""
    stripped = text.strip()
    if "T" in stripped or "-" in stripped[1:]:
        try:
            moment = dt.datetime.fromisoformat(stripped)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid time {text!r}: use RFC 3339 like 2026-02-01T14:30:00Z, or a duration like 1h"
            ) from None
        if moment.tzinfo is None:
            raise argparse.ArgumentTypeError(
                f"time {text!r} has no offset: add Z for UTC or +HH:MM, e.g. 2026-02-01T14:30:00Z"
            )
        return TimeBound(text, absolute=moment.timestamp())
    try:
        seconds = parse_duration(stripped)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid time {text!r}: use a duration ago like 30m, 1h, 2d, "
            "or RFC 3339 like 2026-02-01T14:30:00Z"
        ) from None
    if seconds < 0:
        raise argparse.ArgumentTypeError(f"duration {text!r} must not be negative")
    return TimeBound(text, ago_seconds=seconds)


def parse_sequences(text: str) -> tuple[int, ...]:
    """``--seq 3,5-7`` -> (3, 5, 6, 7)."""
    sequences: list[int] = []
    for part in (piece.strip() for piece in text.split(",")):
        first, dash, last = part.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise argparse.ArgumentTypeError(f"invalid sequence {part!r}: use numbers and ranges like 3,5-7")
        low, high = int(first), int(last) if dash else int(first)
        if low < 1 or high < low:
            raise argparse.ArgumentTypeError(f"invalid sequence range {part!r}")
        if high - low >= MAX_SEQUENCES:
            raise argparse.ArgumentTypeError(f"range {part!r} is longer than {MAX_SEQUENCES} sequences")
        sequences.extend(range(low, high + 1))
    return tuple(sequences)
