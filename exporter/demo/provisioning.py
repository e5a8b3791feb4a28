"""Apply a platform file to a NATS server, idempotently, and report what was created, updated or unchanged.

Nothing is ever deleted: streams and consumers the file does not name are left alone, and an update starts
from the server's current configuration so that settings the file does not mention are kept. Subject
overlaps (with each other and with the server's other streams) are refused before the first change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from exporter.demo.platform import ConsumerSpec, PlatformSpec, StreamSpec, find_subject_collisions
from exporter.durations import format_duration
from exporter.errors import ConfigError
from exporter.jsapi import STREAM_NOT_FOUND, JetStreamApi, JetStreamApiError, JetStreamRequestError

NANOSECONDS = 1_000_000_000
CONSUMER_NOT_FOUND = 10014  # the server's err_code

CREATED = "created"
UPDATED = "updated"
UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What provisioning did to one stream or consumer."""

    kind: str  # "stream" | "consumer"
    name: str  # "COMPANIONS_CHAT", or "COMPANIONS_CHAT/chat-handler" for a consumer
    action: str  # CREATED | UPDATED | UNCHANGED
    differences: tuple[str, ...] = ()  # for UPDATED: "max_age 1h -> 7d"


@dataclass(frozen=True, slots=True)
class ProvisioningReport:
    source: str
    outcomes: tuple[Outcome, ...] = ()
    untouched_streams: tuple[str, ...] = ()  # on the server, not in the file: left as they are

    def count(self, action: str) -> int:
        return sum(1 for outcome in self.outcomes if outcome.action == action)

    def render(self) -> str:
        width = max((len(outcome.name) for outcome in self.outcomes), default=0)
        lines = [f"Provisioned {self.source}:"]
        for outcome in self.outcomes:
            detail = f": {'; '.join(outcome.differences)}" if outcome.differences else ""
            lines.append(f"  {outcome.kind:<8} {outcome.name:<{width}}  {outcome.action}{detail}")
        lines.append(
            f"{self.count(CREATED)} created, {self.count(UPDATED)} updated, "
            f"{self.count(UNCHANGED)} unchanged; nothing deleted."
        )
        if self.untouched_streams:
            lines.append(f"Other streams on the server, left alone: {', '.join(self.untouched_streams)}")
        return "\n".join(lines)


@dataclass
class ProvisioningError(Exception):
    """The server refused a change; ``report`` holds what was applied before it."""

    message: str
    report: ProvisioningReport = field(default_factory=lambda: ProvisioningReport(source=""))

    def __str__(self) -> str:
        return self.message


async def apply_platform(api: JetStreamApi, platform: PlatformSpec) -> ProvisioningReport:
    """Create or update every stream and consumer of ``platform``; ConfigError on subject overlaps.

    ProvisioningError when the server refuses a change or does not answer; what was applied before is in it.
    """
    try:
        existing = await fetch_stream_subjects(api)
    except JetStreamRequestError as exc:
        raise ProvisioningError(f"cannot list the streams on the server: {exc}") from None
    _refuse_overlaps(platform, existing)
    outcomes: list[Outcome] = []
    untouched = tuple(sorted(name for name in existing if name not in {s.name for s in platform.streams}))

    def failed(what: str, exc: JetStreamRequestError) -> ProvisioningError:
        if isinstance(exc, JetStreamApiError):
            detail = f"the server refused it: {exc.description} (error {exc.err_code})"
        else:
            detail = str(exc)
        return ProvisioningError(
            f"{what}: {detail}",
            ProvisioningReport(platform.source, tuple(outcomes), untouched),
        )

    for stream in platform.streams:
        try:
            outcomes.append(await _apply_stream(api, stream))
        except JetStreamRequestError as exc:
            raise failed(f"stream {stream.name}", exc) from None
    for consumer in platform.consumers:
        try:
            outcomes.append(await _apply_consumer(api, consumer))
        except JetStreamRequestError as exc:
            raise failed(f"consumer {consumer.name} on stream {consumer.stream}", exc) from None
    return ProvisioningReport(platform.source, tuple(outcomes), untouched)


async def fetch_stream_subjects(api: JetStreamApi) -> dict[str, tuple[str, ...]]:
    """Every stream on the server with its subjects, paged as the server pages (256 at a time)."""
    subjects: dict[str, tuple[str, ...]] = {}
    offset = 0
    while True:
        page = await api.request_json("STREAM.LIST", {"offset": offset})
        infos = page.get("streams") or []
        for info in infos:
            config = info.get("config", {})
            subjects[str(config.get("name"))] = tuple(config.get("subjects") or ())
        offset += len(infos)
        if not infos or offset >= int(page.get("total", 0)):
            return subjects


def _refuse_overlaps(platform: PlatformSpec, existing: dict[str, tuple[str, ...]]) -> None:
    collisions = find_subject_collisions(
        {stream.name: stream.subjects for stream in platform.streams}, others=existing
    )
    if collisions:
        raise ConfigError(
            "subjects overlap with streams already on the server (NATS would refuse them, error 10065); "
            "nothing was applied: " + "; ".join(collision.describe() for collision in collisions),
            source=platform.source,
            key="streams",
        )


def stream_config(stream: StreamSpec) -> dict[str, Any]:
    """The fields of a JetStream StreamConfig that the platform file decides."""
    origin = {"mirror": {"name": stream.mirror}} if stream.mirror is not None else {}
    return {
        "name": stream.name,
        **({"subjects": list(stream.subjects)} if stream.mirror is None else origin),
        "retention": stream.retention,
        "max_age": round(stream.max_age_seconds * NANOSECONDS),
        "storage": stream.storage,
        "num_replicas": stream.replicas,
        **({"metadata": dict(stream.metadata)} if stream.metadata else {}),
    }


def consumer_config(consumer: ConsumerSpec) -> dict[str, Any]:
    """The fields of a JetStream ConsumerConfig that the platform file decides (a durable pull consumer)."""
    return {
        "name": consumer.name,
        "durable_name": consumer.name,
        "filter_subjects": list(consumer.filter_subjects),
        "ack_policy": consumer.ack_policy,
        "ack_wait": round(consumer.ack_wait_seconds * NANOSECONDS),
        "max_deliver": consumer.max_deliver,
        "deliver_policy": consumer.deliver_policy,
        **({"metadata": dict(consumer.metadata)} if consumer.metadata else {}),
        "sample_freq": f"{consumer.sample_percent}%" if consumer.sample_percent else "",
    }


def merged_filter_subjects(config: dict[str, Any]) -> tuple[str, ...]:
    """``filter_subject`` and ``filter_subjects`` as one sorted tuple (the server may keep one in either)."""
    single = config.get("filter_subject")
    return tuple(sorted({*(config.get("filter_subjects") or ()), *([single] if single else [])}))


def _nanoseconds(value: Any) -> str:
    return format_duration(int(value or 0) / NANOSECONDS) if value else "unlimited"


# Each compared field: how to read it from a server config for comparison, and how to show it.
_STREAM_FIELDS: dict[str, tuple[Callable[[Any], Any], Callable[[Any], str]]] = {
    "subjects": (lambda value: tuple(sorted(value or ())), lambda value: ", ".join(value) or "(none)"),
    "retention": (str, str),
    "max_age": (lambda value: int(value or 0), _nanoseconds),
    "storage": (str, str),
    "num_replicas": (lambda value: int(value or 1), str),
}
_CONSUMER_FIELDS: dict[str, tuple[Callable[[Any], Any], Callable[[Any], str]]] = {
    "ack_policy": (str, str),
    "ack_wait": (lambda value: int(value or 0), _nanoseconds),
    "max_deliver": (lambda value: int(value or -1), str),
    "deliver_policy": (str, str),
    "sample_freq": (
        lambda value: int(str(value or "0").strip().removesuffix("%") or 0),
        lambda value: f"{value}%",
    ),
}


def _differences(
    current: dict[str, Any],
    desired: dict[str, Any],
    fields: dict[str, tuple[Callable[[Any], Any], Callable[[Any], str]]],
) -> list[str]:
    differences = []
    for name, (normal, shown) in fields.items():
        have, want = normal(current.get(name)), normal(desired.get(name))
        if have != want:
            differences.append(f"{name} {shown(have)} -> {shown(want)}")
    return differences


def _metadata_differences(current: dict[str, Any], desired: dict[str, Any]) -> list[str]:
    """Only the keys the platform file sets: the server and other tools keep keys of their own there."""
    have = current.get("metadata") or {}
    want = desired.get("metadata") or {}
    return [
        f"metadata {key} {have.get(key, '(unset)')} -> {value}"
        for key, value in sorted(want.items())
        if have.get(key) != value
    ]


def _with_merged_metadata(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """``desired`` whose metadata keeps the keys it does not set (an update replaces the whole mapping)."""
    if "metadata" not in desired:
        return desired
    return {**desired, "metadata": {**(current.get("metadata") or {}), **desired["metadata"]}}


async def _apply_stream(api: JetStreamApi, stream: StreamSpec) -> Outcome:
    desired = stream_config(stream)
    try:
        info = await api.request_json(f"STREAM.INFO.{stream.name}")
    except JetStreamApiError as exc:
        if exc.err_code != STREAM_NOT_FOUND:
            raise
        await api.request_json(f"STREAM.CREATE.{stream.name}", desired)
        return Outcome("stream", stream.name, CREATED)
    current = info.get("config", {})
    differences = _differences(current, desired, _STREAM_FIELDS) + _metadata_differences(current, desired)
    if not differences:
        return Outcome("stream", stream.name, UNCHANGED)
    await api.request_json(
        f"STREAM.UPDATE.{stream.name}", {**current, **_with_merged_metadata(current, desired)}
    )
    return Outcome("stream", stream.name, UPDATED, tuple(differences))


async def _apply_consumer(api: JetStreamApi, consumer: ConsumerSpec) -> Outcome:
    desired = consumer_config(consumer)
    label = f"{consumer.stream}/{consumer.name}"
    create = f"CONSUMER.CREATE.{consumer.stream}.{consumer.name}"
    try:
        info = await api.request_json(f"CONSUMER.INFO.{consumer.stream}.{consumer.name}")
    except JetStreamApiError as exc:
        if exc.err_code != CONSUMER_NOT_FOUND:
            raise
        await api.request_json(
            create, {"stream_name": consumer.stream, "config": desired, "action": "create"}
        )
        return Outcome("consumer", label, CREATED)
    current = info.get("config", {})
    differences = _differences(current, desired, _CONSUMER_FIELDS) + _metadata_differences(current, desired)
    if merged_filter_subjects(current) != merged_filter_subjects(desired):
        shown_current = ", ".join(merged_filter_subjects(current)) or "(all)"
        shown_desired = ", ".join(merged_filter_subjects(desired)) or "(all)"
        differences.append(f"filter_subjects {shown_current} -> {shown_desired}")
    if current.get("deliver_subject"):
        differences.append("push consumer -> pull consumer")
    if not differences:
        return Outcome("consumer", label, UNCHANGED)
    # One filter lives in either field on the server; sending both is refused.
    updated = {key: value for key, value in current.items() if key != "filter_subject"}
    await api.request_json(
        create,
        {
            "stream_name": consumer.stream,
            "config": {**updated, **_with_merged_metadata(current, desired)},
            "action": "update",
        },
    )
    return Outcome("consumer", label, UPDATED, tuple(differences))
