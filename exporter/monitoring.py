"""Monitoring metadata: the ``io.nats.monitor.*`` thresholds a team sets where it defines a stream or
consumer.

The keys, their value formats and their meanings are those of ``nats server check stream`` and ``nats
server check consumer`` (natscli, and jsm.go's monitor package behind it), so one set of metadata drives
both those checks and this exporter's alerts. As in the tools:

- nothing is checked unless ``io.nats.monitor.enabled`` is true (``1``, ``t``, ``true``, ``TRUE``, ...): the
  tools look for that key to decide which streams and consumers to watch;
- a threshold of 0 or less switches its check off;
- counts are whole numbers, durations are Go durations with the tools' extra units (``w``, ``d``, ``M``,
  ``y``, e.g. ``90s``, ``1h30m``, ``2d``) and are exported in seconds;
- ``subjects-warn`` and ``subjects-critical`` set a ceiling when warn < critical, else a floor.

Each threshold becomes one series with a ``check`` label (what is compared) and a ``severity``
(``warning`` for ``*-warn`` keys, ``critical`` for the rest). Pure: no I/O.

Metadata keys configured as labels (``labels.from_metadata``) become labels of the ``*_info`` series,
named ``metadata_<key>`` with every character outside ``[a-zA-Z0-9_]`` replaced by ``_``.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from exporter.durations import UNIT_SECONDS
from exporter.snapshot import ConsumerState, StreamState, Threshold

logger = logging.getLogger(__name__)

PREFIX = "io.nats.monitor."
ENABLED_KEY = f"{PREFIX}enabled"

WARNING = "warning"
CRITICAL = "critical"

# strconv.ParseBool, which the tools use for `enabled`.
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})

_UNSIGNED = re.compile(r"[0-9]+")  # strconv.ParseUint(v, 10, 64)
_SIGNED = re.compile(r"[+-]?[0-9]+")  # strconv.Atoi
_DURATION_PART = re.compile(r"([0-9]*\.?[0-9]+|[0-9]+\.)(ns|us|µs|μs|ms|s|m|h|d|D|w|W|M|y|Y)")
_DURATION_SECONDS = {
    **UNIT_SECONDS,  # Go's units and d, as the exporter's own durations
    "D": 86400.0,
    **dict.fromkeys(("w", "W"), 7 * 86400.0),
    "M": 30 * 86400.0,
    **dict.fromkeys(("y", "Y"), 365 * 86400.0),
}


class InvalidValueError(ValueError):
    """A metadata value the tools would refuse; the message says what was expected."""


def _unsigned(text: str) -> float:
    if not _UNSIGNED.fullmatch(text):
        raise InvalidValueError("expected a whole number of 0 or more")
    return float(int(text))


def _signed(text: str) -> float:
    if not _SIGNED.fullmatch(text):
        raise InvalidValueError("expected a whole number")
    return float(int(text))


def parse_monitor_duration(text: str) -> float:
    """Seconds of a duration as the NATS tools read it: Go's units plus d, w, M (30 days) and y (365 days)."""
    if text == "0":
        return 0.0
    body = text.strip()
    sign = -1.0 if body.startswith("-") else 1.0
    body = body[1:] if body[:1] in "+-" else body
    position, total = 0, 0.0
    for match in _DURATION_PART.finditer(body):
        if match.start() != position:
            break
        total += float(match.group(1)) * _DURATION_SECONDS[match.group(2)]
        position = match.end()
    if not body or position != len(body):
        raise InvalidValueError('expected a duration such as "90s", "1h30m" or "2d"')
    return sign * total


@dataclass(frozen=True, slots=True)
class _Key:
    """One ``io.nats.monitor.<name>`` key: the check and severity it sets, and how its value is read."""

    name: str
    check: str
    severity: str
    parse: Callable[[str], float]


# `subjects-*` are read here and exported as subjects_max or subjects_min once both are known.
_SUBJECTS = "subjects"
STREAM_KEYS: tuple[_Key, ...] = (
    _Key("msgs-warn", "msgs", WARNING, _unsigned),
    _Key("msgs-critical", "msgs", CRITICAL, _unsigned),
    _Key("subjects-warn", _SUBJECTS, WARNING, _signed),
    _Key("subjects-critical", _SUBJECTS, CRITICAL, _signed),
    _Key("lag-critical", "lag", CRITICAL, _unsigned),
    _Key("seen-critical", "seen", CRITICAL, parse_monitor_duration),
    _Key("min-sources", "sources_min", CRITICAL, _signed),
    _Key("max-sources", "sources_max", CRITICAL, _signed),
    _Key("peer-expect", "peers", CRITICAL, _signed),
    _Key("peer-lag-critical", "peer_lag", CRITICAL, _unsigned),
    _Key("peer-seen-critical", "peer_seen", CRITICAL, parse_monitor_duration),
)
CONSUMER_KEYS: tuple[_Key, ...] = (
    _Key("outstanding-ack-critical", "outstanding_ack", CRITICAL, _signed),
    _Key("waiting-critical", "waiting", CRITICAL, _signed),
    _Key("unprocessed-critical", "unprocessed", CRITICAL, _signed),
    _Key("last-delivery-critical", "last_delivery", CRITICAL, parse_monitor_duration),
    _Key("last-ack-critical", "last_ack", CRITICAL, parse_monitor_duration),
    _Key("redelivery-critical", "redelivery", CRITICAL, _signed),
)


@dataclass(frozen=True, slots=True)
class Monitoring:
    """What one stream's or consumer's metadata asks for: its thresholds, and the unreadable values."""

    thresholds: tuple[Threshold, ...] = ()
    problems: tuple[str, ...] = ()  # one message per unreadable value, naming the key and the value


NOT_MONITORED = Monitoring()


def _enabled(metadata: Mapping[str, str], problems: list[str]) -> bool:
    value = metadata.get(ENABLED_KEY)
    if value is None or value in _FALSE:
        return False
    if value in _TRUE:
        return True
    problems.append(f"{ENABLED_KEY}={value!r}: expected true or false")
    return False


def _read(metadata: Mapping[str, str], keys: tuple[_Key, ...]) -> Monitoring:
    if not metadata or not any(key.startswith(PREFIX) for key in metadata):
        return NOT_MONITORED
    problems: list[str] = []
    enabled = _enabled(metadata, problems)
    values: dict[tuple[str, str], float] = {}
    for key in keys:
        text = metadata.get(PREFIX + key.name)
        if text is None:
            continue
        try:
            values[key.check, key.severity] = key.parse(text)
        except InvalidValueError as exc:
            problems.append(f"{PREFIX}{key.name}={text!r}: {exc}")
    if not enabled:
        return Monitoring((), tuple(problems))
    _resolve_subjects_direction(values)
    thresholds = tuple(
        Threshold(check, severity, value) for (check, severity), value in sorted(values.items()) if value > 0
    )
    return Monitoring(thresholds, tuple(problems))


def _resolve_subjects_direction(values: dict[tuple[str, str], float]) -> None:
    """subjects-warn < subjects-critical is a ceiling (subjects_max), anything else a floor (subjects_min)."""
    warn = values.pop((_SUBJECTS, WARNING), 0.0)
    critical = values.pop((_SUBJECTS, CRITICAL), 0.0)
    if warn <= 0 and critical <= 0:
        return
    check = "subjects_max" if warn < critical else "subjects_min"
    values[check, WARNING] = warn
    values[check, CRITICAL] = critical


def stream_monitoring(metadata: Mapping[str, str] | None) -> Monitoring:
    """The thresholds of a stream's ``config.metadata``."""
    return _read(metadata or {}, STREAM_KEYS)


def consumer_monitoring(metadata: Mapping[str, str] | None) -> Monitoring:
    """The thresholds of a consumer's ``config.metadata``."""
    return _read(metadata or {}, CONSUMER_KEYS)


# --- metadata as labels ----------------------------------------------------------------------------------

METADATA_LABEL_PREFIX = "metadata_"
_LABEL_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")


def metadata_label_name(key: str) -> str:
    """The label a metadata key becomes on the ``*_info`` series: ``team`` -> ``metadata_team``."""
    return METADATA_LABEL_PREFIX + _LABEL_UNSAFE.sub("_", key)


@functools.cache
def metadata_label_names(keys: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(metadata_label_name(key) for key in keys)


def label_collisions(keys: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Label name -> the keys that would all become it, for every name more than one key maps to."""
    by_name: dict[str, list[str]] = {}
    for key in keys:
        by_name.setdefault(metadata_label_name(key), []).append(key)
    return {name: tuple(found) for name, found in by_name.items() if len(found) > 1}


def metadata_label_values(metadata: Mapping[str, str] | None, keys: tuple[str, ...]) -> tuple[str, ...]:
    """The values of ``keys`` in ``metadata``, in order; "" for a key the object does not have."""
    if not keys:
        return ()
    found = metadata or {}
    return tuple(str(found.get(key, "")) for key in keys)


class MetadataProblemLog:
    """Logs each unreadable monitoring value once, while it stays; a value fixed and broken again is logged
    again. Both sources use it, so a problem reads the same in either scope."""

    def __init__(self) -> None:
        self._logged: frozenset[str] = frozenset()

    def record(self, streams: Iterable[StreamState], consumers: Iterable[ConsumerState]) -> bool:
        """Log what is new this cycle; True when any value is unreadable this cycle."""
        problems = {
            f"stream {stream.name!r}: {problem}" for stream in streams for problem in stream.metadata_problems
        }
        problems.update(
            f"consumer {consumer.stream!r}/{consumer.name!r}: {problem}"
            for consumer in consumers
            for problem in consumer.metadata_problems
        )
        for problem in sorted(problems - self._logged):
            logger.warning("ignoring unreadable monitoring metadata of %s", problem)
        self._logged = frozenset(problems)
        return bool(problems)
