"""Durations as people write them in configuration, flags and the demo's platform file.

Go-style (``15s``, ``1m30s``, ``500ms``) plus ``d`` for days (``7d``), so retention periods read as they
are usually said; a plain number is seconds.
"""

from __future__ import annotations

import re

_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h|d)")
# Go duration units plus days; the NATS tools' metadata grammar (exporter.monitoring) extends it.
UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")


def parse_duration(text: str) -> float:
    """Seconds from a duration ("15s", "1m30s", "500ms", "2h", "7d") or a plain number of seconds.

    Raises ValueError with a message fit for the user.
    """
    stripped = text.strip()
    if _PLAIN_NUMBER.fullmatch(stripped):
        return float(stripped)
    sign = -1.0 if stripped.startswith("-") else 1.0
    body = stripped[1:] if stripped[:1] in "+-" else stripped
    position, total = 0, 0.0
    for match in _PART.finditer(body):
        if match.start() != position:
            break
        total += float(match.group(1)) * UNIT_SECONDS[match.group(2)]
        position = match.end()
    if not body or position != len(body):
        raise ValueError(
            f"invalid duration {text!r}: use a number with a unit (d, h, m, s, ms, us, ns), "
            'e.g. "15s", "1m30s", "500ms", or a plain number of seconds'
        )
    return sign * total


def format_duration(seconds: float) -> str:
    """The text ``parse_duration`` reads back, largest unit first: 90 -> "1m30s", 604800 -> "7d"."""
    if seconds == 0:
        return "0s"
    if seconds < 0:
        return f"-{format_duration(-seconds)}"
    if seconds < 1:
        return f"{round(seconds * 1000, 6):g}ms"
    parts: list[str] = []
    rest = seconds
    for unit in ("d", "h", "m"):
        count, rest = divmod(rest, UNIT_SECONDS[unit])
        if count:
            parts.append(f"{int(count)}{unit}")
    rest = round(rest, 6)
    if rest or not parts:
        parts.append(f"{rest:g}s")
    return "".join(parts)
