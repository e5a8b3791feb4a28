"""Durations as people write them in the platform file and on the command line: ``30s``, ``5m``, ``7d``."""

from __future__ import annotations

import re

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_WHOLE = re.compile(rf"(?:{_PART.pattern})+")


def parse_duration(text: str) -> float:
    """Seconds in ``text`` (``1h30m`` combines parts); ValueError naming the accepted forms otherwise."""
    compact = text.strip()
    if not _WHOLE.fullmatch(compact):
        raise ValueError(
            f"{text!r} is not a duration: use a number and a unit (ms, s, m, h, d, w), e.g. 30s, 7d"
        )
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _PART.findall(compact))


def format_duration(seconds: float) -> str:
    """Whole days, hours, minutes and seconds, largest first: 604800 -> ``7d``, 604 -> ``10m4s``."""
    if seconds <= 0:
        return "0s"
    parts = []
    rest = seconds
    for unit in ("d", "h", "m"):
        count, rest = divmod(rest, _UNIT_SECONDS[unit])
        if count:
            parts.append(f"{int(count)}{unit}")
    if rest or not parts:
        parts.append(f"{round(rest, 3):g}s")
    return "".join(parts)
