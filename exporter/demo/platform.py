"""The declarative platform file: load it, validate every key, and refuse it before anything is applied.

Errors are ``ConfigError`` naming the file and the key (``streams[3].max_age``), so a user can fix the file
without reading a traceback. Optional keys default to the server's own defaults, so a short file means what a
``nats stream add`` with the same flags would mean.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from exporter.errors import ConfigError
from exporter.monitoring import Monitoring, consumer_monitoring, stream_monitoring
from exporter.settings import validate_stream_name
from exporter.subjects import subject_problem, subject_within, subjects_overlap
from exporter.yamlfiles import DocumentReader, describe_type, did_you_mean, parse_yaml, quoted, read_yaml_file

EMBEDDED_PLATFORM = "platform.yaml"
EMBEDDED_SOURCE = "exporter/demo/platform.yaml (built in)"

RETENTIONS = ("limits", "interest", "workqueue")
STORAGES = ("file", "memory")
ACK_POLICIES = ("explicit", "all", "none")
DELIVER_POLICIES = ("all", "new", "last", "last_per_subject")
# Far beyond any sensible redelivery count; bounds what the file can ask of the server.
MAX_DELIVER_LIMIT = 1_000_000


@dataclass(frozen=True, slots=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    retention: str = "limits"
    max_age_seconds: float = 0.0  # 0: unlimited, as the server counts it
    storage: str = "file"
    replicas: int = 1
    metadata: tuple[tuple[str, str], ...] = ()  # e.g. team, io.nats.monitor.* thresholds
    mirror: str | None = None  # the stream this one mirrors (it then takes no subjects of its own)


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    """A durable pull consumer."""

    stream: str
    name: str
    filter_subjects: tuple[str, ...] = ()
    ack_policy: str = "explicit"
    ack_wait_seconds: float = 30.0
    max_deliver: int = -1  # -1: unlimited, as the server counts it
    deliver_policy: str = "all"
    metadata: tuple[tuple[str, str], ...] = ()
    sample_percent: int = 0  # sample_freq: share of acknowledgements the server reports; 0: none


@dataclass(frozen=True, slots=True)
class SubjectCollision:
    """Two streams whose subjects some message subject would match at once."""

    stream: str
    subject: str
    other_stream: str
    other_subject: str

    def describe(self) -> str:
        return (
            f"stream {self.stream} subject {self.subject!r} overlaps "
            f"stream {self.other_stream} subject {self.other_subject!r}"
        )


@dataclass(frozen=True, slots=True)
class PlatformSpec:
    source: str  # where it was read from, for messages
    streams: tuple[StreamSpec, ...]
    consumers: tuple[ConsumerSpec, ...] = ()

    def stream(self, name: str) -> StreamSpec:
        for stream in self.streams:
            if stream.name == name:
                return stream
        raise KeyError(name)


def find_subject_collisions(
    streams: Mapping[str, Sequence[str]], others: Mapping[str, Sequence[str]] | None = None
) -> list[SubjectCollision]:
    """Overlaps among ``streams``, and between ``streams`` and ``others`` (but not among ``others``)."""
    collisions: list[SubjectCollision] = []
    names = list(streams)
    for index, name in enumerate(names):
        candidates = [(other, streams[other]) for other in names[index + 1 :]]
        candidates += [
            (other, subjects) for other, subjects in (others or {}).items() if other not in streams
        ]
        for other, other_subjects in candidates:
            collisions.extend(
                SubjectCollision(name, subject, other, other_subject)
                for subject in streams[name]
                for other_subject in other_subjects
                if subjects_overlap(subject, other_subject)
            )
    return collisions


def load_platform(path: Path | None = None) -> PlatformSpec:
    """The platform in ``path``, or the built-in one; ConfigError naming file and key when it is wrong."""
    if path is None:
        return parse_platform(builtin_platform_text(), source=EMBEDDED_SOURCE)
    return platform_from_document(read_yaml_file(path, what="platform file"), source=str(path))


def builtin_platform_text() -> str:
    """The shipped platform.yaml, read from the installed package."""
    return resources.files("exporter.demo").joinpath(EMBEDDED_PLATFORM).read_text(encoding="utf-8")


def parse_platform(text: str, *, source: str) -> PlatformSpec:
    """The platform in the YAML ``text``; ``source`` names it in messages."""
    return platform_from_document(parse_yaml(text, source=source), source=source)


def platform_from_document(document: object, *, source: str) -> PlatformSpec:
    reader = _Reader(source)
    top = reader.mapping(document, "", ("streams", "consumers"))
    streams = tuple(
        _stream(reader, item, f"streams[{index}]")
        for index, item in enumerate(reader.sequence(top.get("streams"), "streams", required=True))
    )
    consumers = tuple(
        _consumer(reader, item, f"consumers[{index}]")
        for index, item in enumerate(reader.sequence(top.get("consumers", []), "consumers", required=False))
    )
    platform = PlatformSpec(source=source, streams=streams, consumers=consumers)
    _check_names_unique(platform)
    _check_no_overlaps(platform)
    _check_mirrors_have_origins(platform)
    _check_consumers_fit_streams(platform)
    return platform


def _stream(reader: _Reader, item: Any, key: str) -> StreamSpec:
    fields = reader.mapping(
        item, key, ("name", "subjects", "retention", "max_age", "storage", "replicas", "metadata", "mirror")
    )
    mirror = reader.name(fields["mirror"], f"{key}.mirror") if "mirror" in fields else None
    default_subjects: list[str] | None = None if mirror is None else []
    subjects = reader.subjects(
        fields.get("subjects", default_subjects), f"{key}.subjects", required=mirror is None
    )
    if mirror is not None and subjects:
        raise reader.error(f"{key}.subjects", "must be empty: a mirror takes the subjects of its origin")
    if len(set(subjects)) != len(subjects):
        raise reader.error(f"{key}.subjects", "lists a subject twice")
    return StreamSpec(
        name=reader.name(fields.get("name"), f"{key}.name"),
        subjects=subjects,
        retention=reader.choice(fields.get("retention", "limits"), f"{key}.retention", RETENTIONS),
        max_age_seconds=reader.duration(fields.get("max_age", 0), f"{key}.max_age"),
        storage=reader.choice(fields.get("storage", "file"), f"{key}.storage", STORAGES),
        replicas=reader.integer(fields.get("replicas", 1), f"{key}.replicas", minimum=1, maximum=5),
        metadata=reader.metadata(fields.get("metadata", {}), f"{key}.metadata", stream_monitoring),
        mirror=mirror,
    )


def _consumer(reader: _Reader, item: Any, key: str) -> ConsumerSpec:
    fields = reader.mapping(
        item,
        key,
        (
            "stream",
            "name",
            "durable_name",
            "filter_subjects",
            "ack_policy",
            "ack_wait",
            "max_deliver",
            "deliver_policy",
            "metadata",
            "sample_freq",
        ),
    )
    name = reader.name(fields.get("name"), f"{key}.name")
    durable = fields.get("durable_name", name)
    if durable != name:
        raise reader.error(f"{key}.durable_name", f"must equal name ({name!r}): the consumer is durable")
    max_deliver = reader.integer(
        fields.get("max_deliver", -1), f"{key}.max_deliver", minimum=-1, maximum=MAX_DELIVER_LIMIT
    )
    if max_deliver == 0:
        raise reader.error(f"{key}.max_deliver", "must be -1 (unlimited) or at least 1")
    return ConsumerSpec(
        stream=reader.name(fields.get("stream"), f"{key}.stream"),
        name=name,
        filter_subjects=reader.subjects(fields.get("filter_subjects", []), f"{key}.filter_subjects"),
        ack_policy=reader.choice(fields.get("ack_policy", "explicit"), f"{key}.ack_policy", ACK_POLICIES),
        ack_wait_seconds=reader.duration(fields.get("ack_wait", "30s"), f"{key}.ack_wait", positive=True),
        max_deliver=max_deliver,
        deliver_policy=reader.choice(
            fields.get("deliver_policy", "all"), f"{key}.deliver_policy", DELIVER_POLICIES
        ),
        metadata=reader.metadata(fields.get("metadata", {}), f"{key}.metadata", consumer_monitoring),
        sample_percent=reader.percent(fields.get("sample_freq", "0%"), f"{key}.sample_freq"),
    )


def _check_names_unique(platform: PlatformSpec) -> None:
    seen: set[str] = set()
    for index, stream in enumerate(platform.streams):
        if stream.name in seen:
            raise ConfigError(
                f"stream {stream.name} is defined twice", source=platform.source, key=f"streams[{index}].name"
            )
        seen.add(stream.name)
    consumers: set[tuple[str, str]] = set()
    for index, consumer in enumerate(platform.consumers):
        if (consumer.stream, consumer.name) in consumers:
            raise ConfigError(
                f"consumer {consumer.name} on stream {consumer.stream} is defined twice",
                source=platform.source,
                key=f"consumers[{index}].name",
            )
        consumers.add((consumer.stream, consumer.name))


def _check_no_overlaps(platform: PlatformSpec) -> None:
    collisions = find_subject_collisions({stream.name: stream.subjects for stream in platform.streams})
    if collisions:
        raise ConfigError(
            "subjects overlap between streams (NATS refuses this, error 10065): "
            + "; ".join(collision.describe() for collision in collisions)
            + ". Narrow one of the subjects so that no subject matches both.",
            source=platform.source,
            key="streams",
        )


def _check_mirrors_have_origins(platform: PlatformSpec) -> None:
    names = [stream.name for stream in platform.streams]
    for index, stream in enumerate(platform.streams):
        if stream.mirror is not None and stream.mirror not in names:
            raise ConfigError(
                f"stream {stream.mirror!r} is not in this file{did_you_mean(stream.mirror, names)}",
                source=platform.source,
                key=f"streams[{index}].mirror",
            )


def _check_consumers_fit_streams(platform: PlatformSpec) -> None:
    names = [stream.name for stream in platform.streams]
    for index, consumer in enumerate(platform.consumers):
        key = f"consumers[{index}]"
        if consumer.stream not in names:
            raise ConfigError(
                f"stream {consumer.stream!r} is not in this file{did_you_mean(consumer.stream, names)}",
                source=platform.source,
                key=f"{key}.stream",
            )
        stream = platform.stream(consumer.stream)
        # A mirror holds its origin's messages under their own subjects.
        origin = platform.stream(stream.mirror) if stream.mirror is not None else stream
        for subject in consumer.filter_subjects:
            if not any(subject_within(subject, stream_subject) for stream_subject in origin.subjects):
                raise ConfigError(
                    f"filter subject {subject!r} is not within the subjects of stream {stream.name} "
                    f"({', '.join(origin.subjects)})",
                    source=platform.source,
                    key=f"{key}.filter_subjects",
                )


class _Reader(DocumentReader):
    """Typed reads of the platform's names and subjects, with the checks every YAML file shares."""

    def name(self, value: Any, key: str) -> str:
        if value is None:
            raise self.error(key, "is required")
        if not isinstance(value, str):
            raise self.error(key, f"is not a valid name: expected a string, got {describe_type(value)}")
        problem = validate_stream_name(value)
        if problem is not None:
            raise self.error(key, f"{quoted(value)} is not a valid name: {problem}")
        return value

    def subjects(self, value: Any, key: str, *, required: bool = False) -> tuple[str, ...]:
        items = self.sequence(value, key, required=required)
        for index, subject in enumerate(items):
            if not isinstance(subject, str):
                raise self.error(
                    f"{key}[{index}]", f"expected a subject string, got {describe_type(subject)}"
                )
            problem = subject_problem(subject)
            if problem:
                raise self.error(f"{key}[{index}]", f"subject {quoted(subject)} {problem}")
        return tuple(items)

    def metadata(
        self, value: Any, key: str, monitoring: Callable[[Mapping[str, str]], Monitoring]
    ) -> tuple[tuple[str, str], ...]:
        """Text keys to text values (whole numbers are written as text); monitoring values must read."""
        if not isinstance(value, dict):
            raise self.error(
                key, f"expected a mapping of metadata keys to values, got {describe_type(value)}"
            )
        metadata: dict[str, str] = {}
        for name, item in value.items():
            if not isinstance(name, str) or isinstance(item, bool) or not isinstance(item, str | int):
                raise self.error(
                    f"{key}.{name}", f"expected a text or whole-number value, got {describe_type(item)}"
                )
            metadata[name] = str(item)
        problems = monitoring(metadata).problems
        if problems:
            raise self.error(key, "; ".join(problems))
        return tuple(sorted(metadata.items()))

    def percent(self, value: Any, key: str) -> int:
        """``"25%"`` (or a bare whole number) from 0 to 100, as the server's ``sample_freq`` takes it."""
        text = str(value).strip().removesuffix("%") if isinstance(value, str | int) else ""
        if isinstance(value, bool) or not text.isdigit() or int(text) > 100:
            raise self.error(key, f"must be a percentage from 0% to 100%, not {describe_type(value)}")
        return int(text)
