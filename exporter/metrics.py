"""Every exported metric family in one table, and the renderer that turns a snapshot into an exposition.

The table (``FAMILIES``) is the single source of truth: the renderer, the prometheus_client collector and
the generated reference (``docs/metrics.md``) all read it, so a name, type, label or HELP text exists in
exactly one place.

Two renderings of the same table exist. ``Renderer`` writes the text formats directly, because
prometheus_client's ``generate_latest`` over a collector takes 6-10 times as long for 10,000 consumers
(it builds a dict and a Sample per series, then sorts and escapes the labels of every line), which would
make rendering cost about as much as fetching. ``SnapshotCollector`` is the plain prometheus_client
rendering; the tests prove both produce the same bytes.
"""

from __future__ import annotations

import functools
import importlib.metadata
import math
import platform
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

from exporter import __version__
from exporter.gzipsegments import Segment, plain_chunks
from exporter.monitoring import metadata_label_names
from exporter.snapshot import (
    AccountState,
    AckHistograms,
    AdvisoryCounts,
    ConsumerState,
    DeadLetterState,
    EphemeralConsumers,
    ExporterHealth,
    HistogramData,
    MetaClusterState,
    MetaPeer,
    ProbeHealth,
    ReplicaState,
    ServerInfo,
    ServerJetStreamState,
    Snapshot,
    SourceState,
    StreamEventCounts,
    StreamState,
    Threshold,
)
from exporter.stages import TIMED_STAGES, ProbeStage, Stage

MetricType = Literal["gauge", "counter", "histogram"]
GAUGE: MetricType = "gauge"
COUNTER: MetricType = "counter"
HISTOGRAM: MetricType = "histogram"  # the value is a HistogramData: _bucket, _count and _sum series

_E = TypeVar("_E")


@dataclass(frozen=True, slots=True)
class BuildInfo:
    """What ``nats_exporter_build_info`` reports; a parameter, so golden files do not depend on the host."""

    version: str
    python_version: str
    nats_py_version: str


@functools.cache
def current_build_info() -> BuildInfo:
    try:
        nats_py_version = importlib.metadata.version("nats-py")
    except importlib.metadata.PackageNotFoundError:
        nats_py_version = "unknown"
    return BuildInfo(__version__, platform.python_version(), nats_py_version)


@dataclass(frozen=True, slots=True)
class Sources:
    """Everything a render reads."""

    snapshot: Snapshot | None
    health: ExporterHealth
    build: BuildInfo


@dataclass(frozen=True, slots=True)
class Scope(Generic[_E]):
    """What a family has one series per: the entities, and the labels that identify each of them."""

    section: str  # heading in the generated reference
    labels: tuple[str, ...]
    entities: Callable[[Sources], Iterable[_E]]
    label_values: Callable[[_E], tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class Family(Generic[_E]):
    """One metric family: its public name, type and HELP, and where each series' value comes from."""

    name: str  # counters include the _total suffix, as exposed in the text format
    type: MetricType
    scope: Scope[_E]
    source: str  # the field the value is read from, named as the JetStream API names it
    meaning: str
    # None: no series for this entity (unlimited, not yet happened); a HistogramData for histograms.
    value: Callable[[_E], float | HistogramData | None]
    absent_when: str = ""  # for the reference: when value returns None
    info_labels: tuple[str, ...] = ()  # *_info families: labels carrying identity, value always 1
    info_values: Callable[[_E], tuple[str, ...]] | None = None
    note: str = ""  # for the reference: why a family beyond the original metric contract exists
    # *_info of streams and consumers: the values of the labels.from_metadata keys, one label each (the
    # snapshot names the keys)
    metadata_values: Callable[[_E], tuple[str, ...]] | None = None

    @property
    def help(self) -> str:
        return f"{self.meaning} ({self.source})."

    @property
    def labels(self) -> tuple[str, ...]:
        return self.scope.labels + self.info_labels

    @property
    def family_name(self) -> str:
        """The name without the counter suffix, as prometheus_client and OpenMetrics name the family."""
        return self.name.removesuffix("_total") if self.type == COUNTER else self.name

    def info_label_values(self, entity: _E) -> tuple[str, ...]:
        return () if self.info_values is None else self.info_values(entity)

    def labels_in(self, sources: Sources) -> tuple[str, ...]:
        """The labels of this family's series in one render: ``labels`` plus any metadata labels."""
        if self.metadata_values is None or sources.snapshot is None:
            return self.labels
        return self.labels + metadata_label_names(sources.snapshot.metadata_label_keys)

    def extra_label_values(self, entity: _E) -> tuple[str, ...]:
        """Info and metadata label values of one series, in the order of ``labels_in``."""
        values = self.info_label_values(entity)
        if self.metadata_values is not None:
            values += self.metadata_values(entity)
        return values


def _one(_entity: object) -> float:
    return 1


def _flag(value: bool) -> str:  # noqa: FBT001 (a converter, not a behaviour switch)
    return "true" if value else "false"


# --- scopes --------------------------------------------------------------------------------------------

_EXPORTER = "Exporter health"
_SERVER = "Server and account"
_STREAM = "Streams"
_CONSUMER = "Consumers"
_FAILURES = "Delivery failures and dead letters"
_REPLICAS = "Clustered JetStream"
_CLUSTER = "Whole cluster"
_THRESHOLDS = "Thresholds from io.nats.monitor metadata"

BUILD: Scope[BuildInfo] = Scope(_EXPORTER, (), lambda src: (src.build,), lambda _b: ())
HEALTH: Scope[ExporterHealth] = Scope(_EXPORTER, (), lambda src: (src.health,), lambda _h: ())
STAGE: Scope[tuple[str, int]] = Scope(
    _EXPORTER, ("stage",), lambda src: src.health.collection_errors.items(), lambda item: (item[0],)
)
STAGE_TIME: Scope[tuple[str, float]] = Scope(
    _EXPORTER, ("stage",), lambda src: src.health.stage_durations.items(), lambda item: (item[0],)
)
CYCLE: Scope[Snapshot] = Scope(
    _EXPORTER, (), lambda src: () if src.snapshot is None else (src.snapshot,), lambda _s: ()
)
SERVER: Scope[ServerInfo] = Scope(
    _SERVER,
    (),
    lambda src: () if src.snapshot is None else src.snapshot.servers,
    lambda _s: (),
)
ACCOUNT: Scope[AccountState] = Scope(
    _SERVER,
    ("account",),
    lambda src: () if src.snapshot is None else src.snapshot.accounts,
    lambda a: (a.account,),
)


def _optional(entity: _E | None) -> tuple[_E, ...]:
    return () if entity is None else (entity,)


def _meta_peers(snapshot: Snapshot) -> tuple[MetaPeer, ...]:
    return () if snapshot.meta_cluster is None else snapshot.meta_cluster.peers


JETSTREAM_SERVER: Scope[ServerJetStreamState] = Scope(
    _CLUSTER,
    ("server",),
    lambda src: () if src.snapshot is None else src.snapshot.jetstream_servers,
    lambda s: (s.server,),
)
META_CLUSTER: Scope[MetaClusterState] = Scope(
    _CLUSTER,
    (),
    lambda src: () if src.snapshot is None else _optional(src.snapshot.meta_cluster),
    lambda _m: (),
)
META_PEER: Scope[MetaPeer] = Scope(
    _CLUSTER,
    ("server",),
    lambda src: () if src.snapshot is None else _meta_peers(src.snapshot),
    lambda p: (p.server,),
)
STREAM: Scope[StreamState] = Scope(
    _STREAM,
    ("account", "stream"),
    lambda src: () if src.snapshot is None else src.snapshot.streams,
    lambda s: (s.account, s.name),
)
EPHEMERAL: Scope[EphemeralConsumers] = Scope(
    _STREAM,
    ("account", "stream"),
    lambda src: () if src.snapshot is None else src.snapshot.ephemeral_consumers,
    lambda e: (e.account, e.stream),
)
CONSUMER: Scope[ConsumerState] = Scope(
    _CONSUMER,
    ("account", "stream", "consumer"),
    lambda src: () if src.snapshot is None else src.snapshot.consumers,
    lambda c: (c.account, c.stream, c.name),
)


@dataclass(frozen=True, slots=True)
class StreamThreshold:
    stream: StreamState
    threshold: Threshold


@dataclass(frozen=True, slots=True)
class ConsumerThreshold:
    consumer: ConsumerState
    threshold: Threshold


def _stream_thresholds(src: Sources) -> Iterator[StreamThreshold]:
    if src.snapshot is not None:
        for stream in src.snapshot.streams:
            for threshold in stream.thresholds:
                yield StreamThreshold(stream, threshold)


def _consumer_thresholds(src: Sources) -> Iterator[ConsumerThreshold]:
    if src.snapshot is not None:
        for consumer in src.snapshot.consumers:
            for threshold in consumer.thresholds:
                yield ConsumerThreshold(consumer, threshold)


STREAM_THRESHOLD: Scope[StreamThreshold] = Scope(
    _THRESHOLDS,
    ("account", "stream", "check", "severity"),
    _stream_thresholds,
    lambda t: (t.stream.account, t.stream.name, t.threshold.check, t.threshold.severity),
)
CONSUMER_THRESHOLD: Scope[ConsumerThreshold] = Scope(
    _THRESHOLDS,
    ("account", "stream", "consumer", "check", "severity"),
    _consumer_thresholds,
    lambda t: (
        t.consumer.account,
        t.consumer.stream,
        t.consumer.name,
        t.threshold.check,
        t.threshold.severity,
    ),
)


@dataclass(frozen=True, slots=True)
class ConsumerAdvisories:
    consumer: ConsumerState
    counts: AdvisoryCounts


_NO_ADVISORIES = AdvisoryCounts()


def _events_received(src: Sources, account: str) -> bool:
    """Whether the account's events arrive (cluster scope: only the accounts listed in ``accounts``)."""
    accounts = src.health.event_accounts
    return accounts is None or account in accounts


def _consumer_advisories(src: Sources) -> Iterator[ConsumerAdvisories]:
    # Every known consumer gets a series, 0 until its first advisory, so increase() sees the first event;
    # but only where events are received, or the zeros would claim that nothing went wrong.
    if src.snapshot is None:
        return
    counts = src.health.advisory_counts
    for consumer in src.snapshot.consumers:
        if not _events_received(src, consumer.account):
            continue
        key = (consumer.account, consumer.stream, consumer.name)
        yield ConsumerAdvisories(consumer, counts.get(key, _NO_ADVISORIES))


ADVISORY: Scope[ConsumerAdvisories] = Scope(
    _FAILURES,
    ("account", "stream", "consumer"),
    _consumer_advisories,
    lambda a: (a.consumer.account, a.consumer.stream, a.consumer.name),
)


@dataclass(frozen=True, slots=True)
class StreamEvents:
    stream: StreamState
    counts: StreamEventCounts


_NO_STREAM_EVENTS = StreamEventCounts()


def _stream_events(src: Sources) -> Iterator[StreamEvents]:
    # Every known stream gets a series, 0 until its first advisory, so increase() sees the first event.
    if src.snapshot is None:
        return
    counts = src.health.stream_event_counts
    for stream in src.snapshot.streams:
        if not _events_received(src, stream.account):
            continue
        yield StreamEvents(stream, counts.get((stream.account, stream.name), _NO_STREAM_EVENTS))


_ELECTIONS = "Elections and quorum"
_PROCESSING = "Processing time (sampled acknowledgements)"

STREAM_EVENTS: Scope[StreamEvents] = Scope(
    _ELECTIONS, ("account", "stream"), _stream_events, lambda e: (e.stream.account, e.stream.name)
)
CONSUMER_EVENTS: Scope[ConsumerAdvisories] = Scope(
    _ELECTIONS,
    ("account", "stream", "consumer"),
    _consumer_advisories,
    lambda a: (a.consumer.account, a.consumer.stream, a.consumer.name),
)


@dataclass(frozen=True, slots=True)
class ConsumerAcks:
    consumer: ConsumerState
    histograms: AckHistograms


def _consumer_acks(src: Sources) -> Iterator[ConsumerAcks]:
    # Only consumers with sampled acknowledgements: a histogram is 20 series, too many for every consumer.
    if src.snapshot is None:
        return
    histograms = src.health.ack_histograms
    for consumer in src.snapshot.consumers:
        found = histograms.get((consumer.account, consumer.stream, consumer.name))
        if found is not None:
            yield ConsumerAcks(consumer, found)


ACKS: Scope[ConsumerAcks] = Scope(
    _PROCESSING,
    ("account", "stream", "consumer"),
    _consumer_acks,
    lambda a: (a.consumer.account, a.consumer.stream, a.consumer.name),
)

DEAD_LETTER_STREAM: Scope[DeadLetterState] = Scope(
    _FAILURES,
    ("account", "stream"),
    lambda src: () if src.snapshot is None else src.snapshot.dead_letters,
    lambda d: (d.account, d.stream),
)


@dataclass(frozen=True, slots=True)
class DeadLetterSubject:
    stream: DeadLetterState
    subject: str
    messages: int


def _dead_letter_subjects(src: Sources) -> Iterator[DeadLetterSubject]:
    if src.snapshot is None:
        return
    for stream in src.snapshot.dead_letters:
        if stream.exists:
            for subject, messages in stream.subject_counts:
                yield DeadLetterSubject(stream, subject, messages)


DEAD_LETTER_SUBJECT: Scope[DeadLetterSubject] = Scope(
    _FAILURES,
    ("account", "stream", "subject"),
    _dead_letter_subjects,
    lambda d: (d.stream.account, d.stream.stream, d.subject),
)

STREAM_GROUP: Scope[StreamState] = Scope(_REPLICAS, STREAM.labels, STREAM.entities, STREAM.label_values)
CONSUMER_GROUP: Scope[ConsumerState] = Scope(
    _REPLICAS, CONSUMER.labels, CONSUMER.entities, CONSUMER.label_values
)


@dataclass(frozen=True, slots=True)
class StreamPeer:
    stream: StreamState
    peer: ReplicaState


def _stream_peers(src: Sources) -> Iterator[StreamPeer]:
    if src.snapshot is None:
        return
    for stream in src.snapshot.streams:
        for peer in stream.peers:
            yield StreamPeer(stream, peer)


STREAM_PEER: Scope[StreamPeer] = Scope(
    _REPLICAS,
    ("account", "stream", "server"),
    _stream_peers,
    lambda p: (p.stream.account, p.stream.name, p.peer.server),
)


@dataclass(frozen=True, slots=True)
class StreamSource:
    stream: StreamState
    source: SourceState
    collected_at: float


def _stream_sources(src: Sources) -> Iterator[StreamSource]:
    if src.snapshot is None:
        return
    for stream in src.snapshot.streams:
        for source in stream.sources:
            yield StreamSource(stream, source, src.snapshot.collected_at)


STREAM_SOURCE: Scope[StreamSource] = Scope(
    _REPLICAS,
    ("account", "stream", "source"),
    _stream_sources,
    lambda s: (s.stream.account, s.stream.name, s.source.name),
)


def _last_active(item: StreamSource) -> float | None:
    active = item.source.active_seconds
    return None if active is None else item.collected_at - active


_PROBE = "End-to-end probe"

PROBE: Scope[ProbeHealth] = Scope(_PROBE, (), lambda src: _optional(src.health.probe), lambda _p: ())
PROBE_STAGE: Scope[tuple[str, int]] = Scope(
    _PROBE,
    ("stage",),
    lambda src: () if src.health.probe is None else src.health.probe.failures.items(),
    lambda item: (item[0],),
)

# --- the table -----------------------------------------------------------------------------------------

_CACHED_HELP = (
    "Unix time the last complete collection cycle finished. Data is collected in the background once per "
    "collection interval and cached: what /metrics serves may be up to one interval old, plus up to the "
    "stale-data time after failed cycles"
)

# fmt: off
# Laid out by hand so that each family reads as one block (the formatter would give every argument a line).
FAMILIES: tuple[Family[Any], ...] = (
    # exporter health
    Family(
        "nats_exporter_build_info", GAUGE, BUILD, "exporter build", "Always 1; the labels identify the build",
        _one, info_labels=("version", "python_version", "nats_py_version"),
        info_values=lambda b: (b.version, b.python_version, b.nats_py_version),
    ),
    Family(
        "nats_up", GAUGE, HEALTH, "exporter: last collection cycle",
        "1 when the last collection cycle succeeded, 0 when it failed or none has finished yet",
        lambda h: 1 if h.up else 0,
    ),
    Family(
        "nats_exporter_collection_duration_seconds", GAUGE, HEALTH, "exporter clock",
        "Wall time of the last collection cycle, in seconds", lambda h: h.collection_duration_seconds,
        absent_when="no cycle has finished yet",
    ),
    Family(
        "nats_exporter_last_success_timestamp_seconds", GAUGE, HEALTH, "exporter clock", _CACHED_HELP,
        lambda h: h.last_success_timestamp, absent_when="no cycle has succeeded yet",
    ),
    Family(
        "nats_exporter_collection_interval_seconds", GAUGE, HEALTH, "setting collection.interval",
        "Configured time between the starts of two collection cycles, in seconds",
        lambda h: h.collection_interval_seconds,
        note="Lets an alert compare nats_exporter_collection_duration_seconds with the interval it must fit "
        "in, and a dashboard show how old the cached data may be, without knowing the configuration.",
    ),
    Family(
        "nats_exporter_collection_errors_total", COUNTER, STAGE, "exporter",
        "Failed collection steps since the exporter started, by stage, every stage from the start at 0: "
        f"{', '.join(map(str, Stage))}", lambda item: item[1],
    ),
    Family(
        "nats_exporter_stage_duration_seconds", GAUGE, STAGE_TIME, "exporter clock",
        f"Wall time of each collection stage in the last cycle, in seconds, by stage: "
        f"{', '.join(map(str, TIMED_STAGES))}", lambda item: item[1],
        absent_when="no cycle has finished yet",
    ),
    Family(
        "nats_exporter_lag_lookups_skipped", GAUGE, CYCLE, "setting collection.lag_lookups_per_cycle",
        "Consumers whose lag in seconds was not measured in the last cycle because the per-cycle look-up cap "
        "was reached", lambda s: s.lag_lookups_skipped, absent_when="no snapshot is served",
        note="nats_consumer_lag_seconds is missing for skipped consumers; this says how many, so that a cap "
        "set too low is visible instead of silently hiding lag.",
    ),
    Family(
        "nats_exporter_malformed_advisories_total", COUNTER, HEALTH, "$JS.EVENT.ADVISORY.CONSUMER.> payloads",
        "Delivery-failure advisories that could not be decoded, since the exporter started",
        lambda h: h.malformed_advisories,
        note="A malformed advisory is counted and logged, never fatal; without this counter "
        "the delivery-failure counters could under-count unnoticed.",
    ),
    Family(
        "nats_exporter_dropped_advisories_total", COUNTER, HEALTH, "$JS.EVENT.> advisories and metrics",
        "Advisories and sampled acknowledgement events not counted because the intake queue was full or "
        "they named more unknown streams and consumers than are kept between cycles, since the exporter "
        "started", lambda h: h.dropped_advisories,
    ),
    # server and account
    Family(
        "nats_server_info", GAUGE, SERVER, "server INFO server_name, version, cluster, domain",
        "Always 1; the labels identify a NATS server: the one the exporter is connected to, or in cluster "
        "scope each server that answered the last cycle", _one,
        absent_when="not connected", info_labels=("server_name", "version", "cluster", "domain"),
        info_values=lambda s: (s.server_name, s.version, s.cluster, s.domain),
    ),
    Family(
        "nats_account_jetstream_memory_bytes", GAUGE, ACCOUNT, "AccountInfo.memory",
        "Memory used by the account's JetStream memory streams, in bytes", lambda a: a.memory_bytes,
    ),
    Family(
        "nats_account_jetstream_storage_bytes", GAUGE, ACCOUNT, "AccountInfo.storage",
        "Disk used by the account's JetStream file streams, in bytes", lambda a: a.storage_bytes,
    ),
    Family(
        "nats_account_jetstream_max_memory_bytes", GAUGE, ACCOUNT, "AccountInfo.limits.max_memory",
        "The account's JetStream memory limit, in bytes", lambda a: a.max_memory_bytes,
        absent_when="unlimited",
    ),
    Family(
        "nats_account_jetstream_max_storage_bytes", GAUGE, ACCOUNT, "AccountInfo.limits.max_storage",
        "The account's JetStream storage limit, in bytes", lambda a: a.max_storage_bytes,
        absent_when="unlimited",
    ),
    Family(
        "nats_account_jetstream_streams", GAUGE, ACCOUNT, "AccountInfo.streams",
        "Streams in the account, all of them, before the exporter's stream filters", lambda a: a.streams,
    ),
    Family(
        "nats_account_jetstream_consumers", GAUGE, ACCOUNT, "AccountInfo.consumers",
        "Consumers in the account, all of them, before the exporter's consumer filters",
        lambda a: a.consumers,
    ),
    Family(
        "nats_account_jetstream_api_requests_total", COUNTER, ACCOUNT, "AccountInfo.api.total",
        "JetStream API requests the account has made, as counted by the server", lambda a: a.api_requests,
    ),
    Family(
        "nats_account_jetstream_api_errors_total", COUNTER, ACCOUNT, "AccountInfo.api.errors",
        "JetStream API requests of the account that failed, as counted by the server",
        lambda a: a.api_errors,
    ),
    # whole cluster (cluster scope)
    Family(
        "nats_server_jetstream_storage_bytes", GAUGE, JETSTREAM_SERVER, "JSInfo.storage",
        "Disk used by JetStream file streams on the server, every replica it hosts, in bytes",
        lambda s: s.storage_bytes,
    ),
    Family(
        "nats_server_jetstream_memory_bytes", GAUGE, JETSTREAM_SERVER, "JSInfo.memory",
        "Memory used by JetStream memory streams on the server, every replica it hosts, in bytes",
        lambda s: s.memory_bytes,
    ),
    Family(
        "nats_server_jetstream_max_storage_bytes", GAUGE, JETSTREAM_SERVER, "JSInfo.config.max_storage",
        "The server's JetStream storage limit, in bytes", lambda s: s.max_storage_bytes,
        absent_when="unlimited",
    ),
    Family(
        "nats_server_jetstream_max_memory_bytes", GAUGE, JETSTREAM_SERVER, "JSInfo.config.max_memory",
        "The server's JetStream memory limit, in bytes", lambda s: s.max_memory_bytes,
        absent_when="unlimited",
    ),
    Family(
        "nats_server_jetstream_reserved_storage_bytes", GAUGE, JETSTREAM_SERVER, "JSInfo.reserved_storage",
        "Storage the server has reserved for accounts' JetStream limits, in bytes",
        lambda s: s.reserved_storage_bytes,
    ),
    Family(
        "nats_server_jetstream_reserved_memory_bytes", GAUGE, JETSTREAM_SERVER, "JSInfo.reserved_memory",
        "Memory the server has reserved for accounts' JetStream limits, in bytes",
        lambda s: s.reserved_memory_bytes,
    ),
    Family(
        "nats_server_jetstream_streams", GAUGE, JETSTREAM_SERVER, "JSInfo.streams",
        "Stream replicas hosted on the server, leaders and followers", lambda s: s.streams,
    ),
    Family(
        "nats_server_jetstream_consumers", GAUGE, JETSTREAM_SERVER, "JSInfo.consumers",
        "Consumer replicas hosted on the server, leaders and followers", lambda s: s.consumers,
    ),
    Family(
        "nats_server_jetstream_api_requests_total", COUNTER, JETSTREAM_SERVER, "JSInfo.api.total",
        "JetStream API requests the server has handled", lambda s: s.api_requests,
    ),
    Family(
        "nats_server_jetstream_api_errors_total", COUNTER, JETSTREAM_SERVER, "JSInfo.api.errors",
        "JetStream API requests the server answered with an error", lambda s: s.api_errors,
    ),
    Family(
        "nats_jetstream_meta_cluster_info", GAUGE, META_CLUSTER, "JSInfo.meta_cluster name, leader",
        "Always 1; the labels name the JetStream meta group's cluster and its current leader", _one,
        absent_when="the meta leader did not answer yet", info_labels=("cluster", "leader"),
        info_values=lambda m: (m.cluster, m.leader),
    ),
    Family(
        "nats_jetstream_meta_cluster_size", GAUGE, META_CLUSTER, "JSInfo.meta_cluster.cluster_size",
        "JetStream servers in the meta group", lambda m: m.size,
        absent_when="the meta leader did not answer yet",
    ),
    Family(
        "nats_jetstream_meta_replica_current", GAUGE, META_PEER, "JSInfo.meta_cluster.replicas[].current",
        "1 when the meta group's leader sees this peer current, else 0; the leader itself is 1",
        lambda p: 1 if p.current else 0,
    ),
    Family(
        "nats_jetstream_meta_replica_lag_operations", GAUGE, META_PEER, "JSInfo.meta_cluster.replicas[].lag",
        "Operations this meta group peer is behind its leader; 0 for the leader", lambda p: p.lag_operations,
    ),
    Family(
        "nats_exporter_servers_responded", GAUGE, CYCLE, "$SYS.REQ.SERVER.PING.JSZ replies",
        "Servers whose JetStream report arrived in the last cycle", lambda s: s.servers_responded,
        absent_when="account scope",
    ),
    Family(
        "nats_exporter_servers_expected", GAUGE, HEALTH, "setting collection.expected_servers",
        "Servers the cluster scope expects to answer every cycle", lambda h: h.servers_expected,
        absent_when="not configured, or account scope",
    ),
    # streams
    Family(
        "nats_stream_messages_total", COUNTER, STREAM, "StreamState.last_seq",
        "Messages ever appended to the stream, its last sequence; rate() of it is the stream's message rate",
        lambda s: s.last_seq,
    ),
    Family(
        "nats_stream_stored_messages", GAUGE, STREAM, "StreamState.messages",
        "Messages stored in the stream now", lambda s: s.messages,
    ),
    Family(
        "nats_stream_stored_bytes", GAUGE, STREAM, "StreamState.bytes",
        "Bytes stored in the stream now", lambda s: s.bytes,
    ),
    Family(
        "nats_stream_first_sequence", GAUGE, STREAM, "StreamState.first_seq",
        "Sequence of the oldest message stored in the stream", lambda s: s.first_seq,
    ),
    Family(
        "nats_stream_first_message_timestamp_seconds", GAUGE, STREAM, "StreamState.first_ts",
        "Unix time of the oldest message stored in the stream", lambda s: s.first_ts,
        absent_when="the stream is empty",
    ),
    Family(
        "nats_stream_last_message_timestamp_seconds", GAUGE, STREAM, "StreamState.last_ts",
        "Unix time of the newest message stored in the stream", lambda s: s.last_ts,
        absent_when="the stream is empty",
    ),
    Family(
        "nats_stream_subjects", GAUGE, STREAM, "StreamState.num_subjects",
        "Distinct subjects with messages stored in the stream", lambda s: s.num_subjects,
    ),
    Family(
        "nats_stream_deleted_messages", GAUGE, STREAM, "StreamState.num_deleted",
        "Messages deleted from the middle of the stream, leaving gaps in its sequence",
        lambda s: s.num_deleted,
    ),
    Family(
        "nats_stream_consumers", GAUGE, STREAM, "StreamState.consumer_count",
        "Consumers of the stream, all of them, before the exporter's consumer filters",
        lambda s: s.consumer_count,
    ),
    Family(
        "nats_stream_max_messages", GAUGE, STREAM, "StreamConfig.max_msgs",
        "Most messages the stream keeps", lambda s: s.max_messages, absent_when="unlimited",
    ),
    Family(
        "nats_stream_max_bytes", GAUGE, STREAM, "StreamConfig.max_bytes",
        "Most bytes the stream keeps", lambda s: s.max_bytes, absent_when="unlimited",
    ),
    Family(
        "nats_stream_max_age_seconds", GAUGE, STREAM, "StreamConfig.max_age",
        "Oldest age a message in the stream may reach before it is removed, in seconds",
        lambda s: s.max_age_seconds, absent_when="unlimited",
    ),
    Family(
        "nats_stream_max_messages_per_subject", GAUGE, STREAM, "StreamConfig.max_msgs_per_subject",
        "Most messages the stream keeps per subject", lambda s: s.max_messages_per_subject,
        absent_when="unlimited",
    ),
    Family(
        "nats_stream_info", GAUGE, STREAM, "StreamConfig.storage, retention, num_replicas; cluster.leader",
        "Always 1; the labels describe the stream and name its current leader", _one,
        info_labels=("storage", "retention", "replicas", "leader"),
        info_values=lambda s: (s.storage, s.retention, str(s.replicas), s.leader),
        metadata_values=lambda s: s.metadata_labels,
    ),
    # consumers
    Family(
        "nats_consumer_pending_messages", GAUGE, CONSUMER, "ConsumerInfo.num_pending",
        "Messages matching the consumer's filter not yet delivered", lambda c: c.num_pending,
    ),
    Family(
        "nats_consumer_ack_pending", GAUGE, CONSUMER, "ConsumerInfo.num_ack_pending",
        "Messages delivered and not yet acknowledged", lambda c: c.num_ack_pending,
    ),
    Family(
        "nats_consumer_redelivered_messages", GAUGE, CONSUMER, "ConsumerInfo.num_redelivered",
        "Messages delivered more than once and not yet acknowledged", lambda c: c.num_redelivered,
    ),
    Family(
        "nats_consumer_waiting_requests", GAUGE, CONSUMER, "ConsumerInfo.num_waiting",
        "Pull requests waiting for messages", lambda c: c.num_waiting,
    ),
    Family(
        "nats_consumer_deliveries_total", COUNTER, CONSUMER, "ConsumerInfo.delivered.consumer_seq",
        "Deliveries the consumer has made, redeliveries included", lambda c: c.delivered_consumer_seq,
    ),
    Family(
        "nats_consumer_delivered_stream_sequence", GAUGE, CONSUMER, "ConsumerInfo.delivered.stream_seq",
        "Stream sequence of the last message delivered", lambda c: c.delivered_stream_seq,
    ),
    Family(
        "nats_consumer_ack_floor_stream_sequence", GAUGE, CONSUMER, "ConsumerInfo.ack_floor.stream_seq",
        "Stream sequence up to which every message is acknowledged", lambda c: c.ack_floor_stream_seq,
    ),
    Family(
        "nats_consumer_last_delivery_timestamp_seconds", GAUGE, CONSUMER,
        "ConsumerInfo.delivered.last_active", "Unix time of the consumer's last delivery",
        lambda c: c.delivered_last_active, absent_when="nothing delivered yet",
    ),
    Family(
        "nats_consumer_last_ack_timestamp_seconds", GAUGE, CONSUMER, "ConsumerInfo.ack_floor.last_active",
        "Unix time of the consumer's last acknowledgement", lambda c: c.ack_floor_last_active,
        absent_when="nothing acknowledged yet",
    ),
    Family(
        "nats_consumer_max_deliver", GAUGE, CONSUMER, "ConsumerConfig.max_deliver",
        "Most times one message is delivered before the server gives up on it",
        lambda c: c.max_deliver, absent_when="unlimited",
    ),
    Family(
        "nats_consumer_max_ack_pending", GAUGE, CONSUMER, "ConsumerConfig.max_ack_pending",
        "Most unacknowledged messages the server lets the consumer have", lambda c: c.max_ack_pending,
        absent_when="unlimited",
    ),
    Family(
        "nats_consumer_ack_wait_seconds", GAUGE, CONSUMER, "ConsumerConfig.ack_wait",
        "Time the server waits for an acknowledgement before redelivering, in seconds",
        lambda c: c.ack_wait_seconds, absent_when="unlimited",
    ),
    Family(
        "nats_consumer_paused", GAUGE, CONSUMER, "ConsumerInfo.paused",
        "1 while the consumer is paused, else 0", lambda c: 1 if c.paused else 0,
    ),
    Family(
        "nats_consumer_lag_seconds", GAUGE, CONSUMER,
        "time of the first message after ConsumerInfo.ack_floor.stream_seq matching the filter",
        "Age at collection time of the oldest message the consumer has not acknowledged, in seconds; 0 when "
        "nothing is outstanding", lambda c: c.lag_seconds,
        absent_when="not measured this cycle (look-up cap reached, or the look-up failed)",
    ),
    Family(
        "nats_consumer_info", GAUGE, CONSUMER,
        "ConsumerConfig.durable_name, deliver_subject, ack_policy, deliver_policy, filter_subject(s); "
        "cluster.leader",
        "Always 1; the labels describe the consumer, filter_subjects comma-joined, and name its leader",
        _one, info_labels=("durable", "pull", "ack_policy", "deliver_policy", "filter_subjects", "leader"),
        info_values=lambda c: (
            _flag(c.durable), _flag(c.pull), c.ack_policy, c.deliver_policy, ",".join(c.filter_subjects),
            c.leader,
        ),
        metadata_values=lambda c: c.metadata_labels,
    ),
    # ephemeral consumers, summed per stream (filters.consumers.ephemeral: aggregate)
    Family(
        "nats_stream_ephemeral_consumers", GAUGE, EPHEMERAL, "ConsumerInfo of consumers without durable_name",
        "Ephemeral consumers of the stream, exported summed per stream instead of one by one",
        lambda e: e.consumers, absent_when="filters.consumers.ephemeral is include or exclude",
        note="Ephemeral consumers come and go by the thousand, and series per consumer would create "
        "thousands of short-lived series a minute; this family and the three "
        "nats_stream_ephemeral_consumers_* after it sum them per stream (filters.consumers.ephemeral: "
        "aggregate, the default).",
    ),
    Family(
        "nats_stream_ephemeral_consumers_pending_messages", GAUGE, EPHEMERAL,
        "ConsumerInfo.num_pending, summed", "Messages not yet delivered, summed over the stream's ephemeral "
        "consumers", lambda e: e.num_pending, absent_when="filters.consumers.ephemeral is include or exclude",
    ),
    Family(
        "nats_stream_ephemeral_consumers_ack_pending", GAUGE, EPHEMERAL,
        "ConsumerInfo.num_ack_pending, summed",
        "Messages delivered and not yet acknowledged, summed over the stream's ephemeral consumers",
        lambda e: e.num_ack_pending, absent_when="filters.consumers.ephemeral is include or exclude",
    ),
    Family(
        "nats_stream_ephemeral_consumers_lag_seconds", GAUGE, EPHEMERAL,
        "the largest nats_consumer_lag_seconds of the stream's ephemeral consumers",
        "Age at collection time of the oldest message an ephemeral consumer of the stream has not "
        "acknowledged, in seconds; 0 when nothing is outstanding or there are none",
        lambda e: e.oldest_lag_seconds,
        absent_when="filters.consumers.ephemeral is not aggregate, or none was measured (cluster scope, cap)",
    ),
    # delivery failures and dead letters
    Family(
        "nats_consumer_max_deliveries_exceeded_total", COUNTER, ADVISORY,
        "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES advisories",
        "Messages that reached the consumer's max_deliver, seen since the exporter started",
        lambda a: a.counts.max_deliveries_exceeded,
    ),
    Family(
        "nats_consumer_terminated_messages_total", COUNTER, ADVISORY,
        "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED advisories",
        "Messages the consumer's client terminated (AckTerm), seen since the exporter started",
        lambda a: a.counts.terminated,
    ),
    Family(
        "nats_consumer_naks_total", COUNTER, ADVISORY, "$JS.EVENT.ADVISORY.CONSUMER.MSG_NAKED advisories",
        "Negative acknowledgements (Nak) of the consumer's messages, seen since the exporter started",
        lambda a: a.counts.naks,
    ),
    # elections and quorum
    Family(
        "nats_stream_leader_elections_total", COUNTER, STREAM_EVENTS,
        "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED advisories",
        "Leader elections of the stream's replica group, seen since the exporter started",
        lambda e: e.counts.leader_elections,
    ),
    Family(
        "nats_stream_quorum_lost_total", COUNTER, STREAM_EVENTS,
        "$JS.EVENT.ADVISORY.STREAM.QUORUM_LOST advisories",
        "Times the stream's replica group lost quorum, seen since the exporter started",
        lambda e: e.counts.quorum_lost,
    ),
    Family(
        "nats_consumer_leader_elections_total", COUNTER, CONSUMER_EVENTS,
        "$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED advisories",
        "Leader elections of the consumer's replica group, seen since the exporter started",
        lambda a: a.counts.leader_elections,
    ),
    Family(
        "nats_consumer_quorum_lost_total", COUNTER, CONSUMER_EVENTS,
        "$JS.EVENT.ADVISORY.CONSUMER.QUORUM_LOST advisories",
        "Times the consumer's replica group lost quorum, seen since the exporter started",
        lambda a: a.counts.quorum_lost,
    ),
    # processing time
    Family(
        "nats_consumer_ack_latency_seconds", HISTOGRAM, ACKS, "$JS.EVENT.METRIC.CONSUMER.ACK ack_time",
        "Time from delivery to acknowledgement of the consumer's sampled messages (sample_freq), in seconds, "
        "seen since the exporter started", lambda a: a.histograms.latency_seconds,
        absent_when="no sampled acknowledgement seen (sample_freq unset, or nothing acknowledged yet)",
    ),
    Family(
        "nats_consumer_ack_deliveries", HISTOGRAM, ACKS, "$JS.EVENT.METRIC.CONSUMER.ACK deliveries",
        "Deliveries the consumer's sampled acknowledged messages took: 1 when the first try succeeded",
        lambda a: a.histograms.deliveries,
        absent_when="no sampled acknowledgement seen (sample_freq unset, or nothing acknowledged yet)",
    ),
    Family(
        "nats_dlq_stream_present", GAUGE, DEAD_LETTER_STREAM, "$JS.API.STREAM.INFO of the stream",
        "1 when the configured dead-letter stream exists on the server, 0 when it does not yet",
        lambda d: 1 if d.exists else 0,
        note="A configured dead-letter stream that does not exist must be reported by a metric, not stop "
        "collection; without it a missing stream looks like an empty one.",
    ),
    Family(
        "nats_dlq_messages", GAUGE, DEAD_LETTER_SUBJECT, "StreamState.subjects of the dead-letter stream",
        "Dead letters stored in the dead-letter stream, per subject", lambda d: d.messages,
        absent_when="the stream is missing, or holds nothing on that subject",
    ),
    Family(
        "nats_dlq_oldest_message_timestamp_seconds", GAUGE, DEAD_LETTER_STREAM,
        "StreamState.first_ts of the dead-letter stream", "Unix time of the oldest dead letter stored",
        lambda d: d.first_ts, absent_when="the stream is empty or missing",
    ),
    # clustered JetStream: replicas, mirrors and sources
    Family(
        "nats_stream_replicas", GAUGE, STREAM_GROUP, "StreamConfig.num_replicas",
        "Replicas the stream is configured with", lambda s: s.replicas,
    ),
    Family(
        "nats_stream_replicas_current", GAUGE, STREAM_GROUP, "StreamInfo.cluster.leader, replicas[].current",
        "Peers current with the stream's leader, the leader included; 0 while there is no leader or the "
        "leader did not answer", lambda s: s.replicas_current,
    ),
    Family(
        "nats_stream_replica_current", GAUGE, STREAM_PEER, "StreamInfo.cluster.replicas[].current, offline",
        "1 when the peer is current with the stream's leader (the leader itself is), 0 when it is behind, "
        "offline, or the leader did not answer", lambda p: 1 if p.peer.current else 0,
        absent_when="the server is not clustered",
    ),
    Family(
        "nats_stream_replica_lag_operations", GAUGE, STREAM_PEER, "StreamInfo.cluster.replicas[].lag",
        "Operations the peer is behind the stream's leader; 0 for the leader",
        lambda p: p.peer.lag_operations, absent_when="the server is not clustered",
    ),
    Family(
        "nats_consumer_replicas", GAUGE, CONSUMER_GROUP, "ConsumerConfig.num_replicas",
        "Replicas the consumer has (configured 0 means as many as its stream)", lambda c: c.replicas,
    ),
    Family(
        "nats_consumer_replicas_current", GAUGE, CONSUMER_GROUP,
        "ConsumerInfo.cluster.leader, replicas[].current",
        "Peers current with the consumer's leader, the leader included; 0 while there is no leader or the "
        "leader did not answer", lambda c: c.replicas_current,
    ),
    Family(
        "nats_stream_source_lag_messages", GAUGE, STREAM_SOURCE, "StreamInfo.mirror.lag, sources[].lag",
        "Messages of the origin stream not yet copied into this stream", lambda s: s.source.lag_messages,
    ),
    Family(
        "nats_stream_source_last_active_timestamp_seconds", GAUGE, STREAM_SOURCE,
        "collection time - StreamInfo.mirror.active, sources[].active",
        "Unix time this stream last heard from the origin stream", _last_active,
        absent_when="never heard from",
    ),
    Family(
        "nats_stream_source_info", GAUGE, STREAM_SOURCE,
        "StreamInfo.mirror, sources[]: name, filter_subject, external.api",
        "Always 1; the labels say whether the stream mirrors or sources the origin, its filter subject and "
        "the external API prefix (another domain or account) it is read through", _one,
        info_labels=("kind", "filter_subject", "external_api"),
        info_values=lambda s: (s.source.kind, s.source.filter_subject, s.source.external_api),
    ),
    # end-to-end probe
    Family(
        "nats_probe_up", GAUGE, PROBE, "exporter probe",
        "1 when the last end-to-end probe succeeded: a message published to the probe stream was "
        "acknowledged and read back through the probe's consumer; 0 when it failed or none has finished yet",
        lambda p: 1 if p.up else 0, absent_when="probe.enabled is false",
    ),
    Family(
        "nats_probe_publish_ack_seconds", HISTOGRAM, PROBE, "publish to PubAck",
        "Time from publishing a probe message until JetStream acknowledged storing it (by a quorum of "
        "replicas when replicated), in seconds, since the exporter started",
        lambda p: p.publish_ack_seconds, absent_when="probe.enabled is false",
    ),
    Family(
        "nats_probe_round_trip_seconds", HISTOGRAM, PROBE, "publish to delivery by the probe's consumer",
        "Time from publishing a probe message until it came back through the probe's consumer, in seconds, "
        "since the exporter started; observed for successful probes only",
        lambda p: p.round_trip_seconds, absent_when="probe.enabled is false",
    ),
    Family(
        "nats_probe_failures_total", COUNTER, PROBE_STAGE, "exporter probe",
        "Failed end-to-end probes since the exporter started, by stage, every stage from the start at 0: "
        f"{', '.join(map(str, ProbeStage))}", lambda item: item[1],
        absent_when="probe.enabled is false",
    ),
    # thresholds from metadata
    Family(
        "nats_stream_threshold", GAUGE, STREAM_THRESHOLD, "StreamConfig.metadata io.nats.monitor.*",
        "A threshold the stream's own monitoring metadata sets, for the check named by the check label "
        "(msgs, subjects_max, subjects_min, lag, seen, sources_min, sources_max, peers, peer_lag, "
        "peer_seen); durations in seconds", lambda t: t.threshold.value,
        absent_when="io.nats.monitor.enabled is not true, or the key is unset, 0 or less, or unreadable",
    ),
    Family(
        "nats_consumer_threshold", GAUGE, CONSUMER_THRESHOLD, "ConsumerConfig.metadata io.nats.monitor.*",
        "A threshold the consumer's own monitoring metadata sets, for the check named by the check label "
        "(outstanding_ack, waiting, unprocessed, last_delivery, last_ack, redelivery); durations in seconds",
        lambda t: t.threshold.value,
        absent_when="io.nats.monitor.enabled is not true, or the key is unset, 0 or less, or unreadable",
    ),
)
# fmt: on

# --- rendering -----------------------------------------------------------------------------------------


def sorted_series(scope: Scope[_E], sources: Sources) -> list[tuple[_E, tuple[str, ...]]]:
    """The scope's entities with their label values, sorted by label values so output is deterministic."""
    entries = [(entity, scope.label_values(entity)) for entity in scope.entities(sources)]
    entries.sort(key=lambda entry: entry[1])
    return entries


def escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def escape_help(text: str, *, openmetrics: bool) -> str:
    escaped = text.replace("\\", r"\\").replace("\n", r"\n")
    return escaped.replace('"', r"\"") if openmetrics else escaped


# prometheus_client leaves it unannotated; the annotation here keeps the renderer's types checked.
_float_to_go_string: Callable[[float], str] = floatToGoString


def format_value(value: float) -> str:
    """Exactly prometheus_client's ``floatToGoString``, with a fast path for the common small integers."""
    # For integers in this range repr(float(v)) is "<v>.0" and floatToGoString adds no exponent (it
    # switches to one from 1e6 up for positive values; repr itself switches at 1e16).
    if type(value) is int and -(10**15) < value < 1_000_000:
        return f"{value}.0"
    return _float_to_go_string(value)


# Label values of a stream or consumer rarely change between cycles, so their blocks are memoised: a
# steady-state render skips a third of its work. Bounded so that churned names cannot grow it for ever
# (131,072 blocks of ~150 bytes: about 25 MB at worst; 1,000 streams x 10 consumers use ~25,000).
@functools.lru_cache(maxsize=1 << 17)
def _label_block(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    """``{name="value",...}`` with labels sorted by name, as prometheus_client writes them."""
    if not names:
        return ""
    pairs = sorted(zip(names, values, strict=True))
    return "{" + ",".join(f'{name}="{escape_label_value(value)}"' for name, value in pairs) + "}"


def _series(
    family: Family[Any],
    entries: Sequence[tuple[Any, tuple[str, ...]]],
    scope_blocks: list[str],
    sources: Sources,
) -> tuple[list[str], list[Any]]:
    """The family's label blocks (one per entity) and values (None: no series for that entity)."""
    value_of = family.value
    values = [value_of(entity) for entity, _ in entries]
    if not family.info_labels:
        return scope_blocks, values
    # *_info: identity labels differ per family, so the blocks are the family's own.
    labels, extra_values = family.labels_in(sources), family.extra_label_values
    blocks = [_label_block(labels, label_values + extra_values(entity)) for entity, label_values in entries]
    return blocks, values


def histogram_buckets(data: HistogramData) -> list[tuple[str, int]]:
    """(le, cumulative count) pairs, ``+Inf`` last, with ``le`` written as prometheus_client writes it."""
    bounds = (*data.bounds, math.inf)
    return [(format_value(bound), count) for bound, count in zip(bounds, data.cumulative_counts, strict=True)]


def _histogram_bytes(
    family: Family[Any], entries: Sequence[tuple[Any, tuple[str, ...]]], values: list[Any]
) -> bytes:
    """_bucket lines (``le`` among the labels), then _count and _sum per series, as prometheus_client."""
    name, labels = family.name, family.labels
    bucket_labels = (*labels, "le")
    lines: list[str] = []
    for (_, label_values), data in zip(entries, values, strict=True):
        if data is None:
            continue
        lines.extend(
            f"{name}_bucket{_label_block(bucket_labels, (*label_values, le))} {format_value(count)}\n"
            for le, count in histogram_buckets(data)
        )
        block = _label_block(labels, label_values)
        lines.append(f"{name}_count{block} {format_value(data.count)}\n")
        lines.append(f"{name}_sum{block} {format_value(data.sum)}\n")
    return "".join(lines).encode()


def _sample_bytes(name: str, blocks: list[str], values: list[Any]) -> bytes:
    """One line per series, encoded once: the same bytes serve both formats."""
    lines = [
        f"{name}{block} {format_value(value)}\n"
        for block, value in zip(blocks, values, strict=True)
        if value is not None
    ]
    return "".join(lines).encode()


@dataclass(frozen=True, slots=True)
class _Rendered:
    """A family's sample lines, compressed, and what they were rendered from."""

    blocks: list[str]
    values: list[Any]
    samples: Segment


@dataclass(frozen=True, slots=True)
class Rendering:
    """One exposition as segments: a header per family in each format, and sample lines both formats share.

    Kept compressed and in pieces (``exporter.gzipsegments``): the two formats hold one copy of the
    samples between them, and a family whose lines did not change keeps its segment from the last render.
    """

    text_headers: tuple[Segment, ...]
    openmetrics_headers: tuple[Segment, ...]
    samples: tuple[Segment, ...]

    def text_segments(self) -> list[Segment]:
        return [segment for pair in zip(self.text_headers, self.samples, strict=True) for segment in pair]

    def openmetrics_segments(self) -> list[Segment]:
        pairs = zip(self.openmetrics_headers, self.samples, strict=True)
        return [*(segment for pair in pairs for segment in pair), _EOF]

    def text_chunks(self) -> list[bytes]:
        return list(plain_chunks(self.text_segments()))

    def openmetrics_chunks(self) -> list[bytes]:
        return list(plain_chunks(self.openmetrics_segments()))


_EOF = Segment.of(b"# EOF\n")


def _headers(family: Family[Any], *, openmetrics: bool) -> Segment:
    header_name = family.family_name if openmetrics else family.name
    help_text = escape_help(family.help, openmetrics=openmetrics)
    return Segment.of(f"# HELP {header_name} {help_text}\n# TYPE {header_name} {family.type}\n".encode())


class Renderer:
    """Renders one snapshot after another, re-rendering only the families whose series changed.

    A family's sample lines are a pure function of its label blocks and values. When both equal the last
    render's (configuration families, idle streams and consumers), its compressed segment is reused, so a
    steady-state cycle costs a comparison of values instead of formatting and compressing ~20 lines per
    consumer. The output is byte-identical to a fresh render: the tests compare both.
    """

    def __init__(self, build: BuildInfo | None = None, families: Sequence[Family[Any]] = ()) -> None:
        self._build = build or current_build_info()
        self._families = tuple(families) or FAMILIES  # metrics.exclude and sharding render fewer
        self._last: dict[str, _Rendered] = {}
        # A family's headers never change: compressed once per renderer, per format.
        self._headers: dict[tuple[str, bool], Segment] = {}

    def _header(self, family: Family[Any], *, openmetrics: bool) -> Segment:
        key = (family.name, openmetrics)
        header = self._headers.get(key)
        if header is None:
            header = self._headers[key] = _headers(family, openmetrics=openmetrics)
        return header

    def render(self, snapshot: Snapshot | None, health: ExporterHealth) -> Rendering:
        sources = Sources(snapshot, health, self._build)
        rendered: dict[str, _Rendered] = {}
        families: list[Family[Any]] = []
        entries_by_scope: dict[int, list[tuple[Any, tuple[str, ...]]]] = {}
        blocks_by_scope: dict[int, list[str]] = {}
        for family in self._families:
            key = id(family.scope)
            entries = entries_by_scope.get(key)
            if entries is None:
                entries = entries_by_scope[key] = sorted_series(family.scope, sources)
                blocks_by_scope[key] = [_label_block(family.scope.labels, values) for _, values in entries]
            blocks, values = _series(family, entries, blocks_by_scope[key], sources)
            last = self._last.get(family.name)
            if last is not None and last.blocks == blocks and last.values == values:
                current = last
            elif family.type == HISTOGRAM:
                current = _Rendered(blocks, values, Segment.of(_histogram_bytes(family, entries, values)))
            else:
                current = _Rendered(blocks, values, Segment.of(_sample_bytes(family.name, blocks, values)))
            rendered[family.name] = current
            if current.samples.length:  # a family with no series is left out entirely, as SnapshotCollector
                families.append(family)
        self._last = rendered
        return Rendering(
            text_headers=tuple(self._header(family, openmetrics=False) for family in families),
            openmetrics_headers=tuple(self._header(family, openmetrics=True) for family in families),
            samples=tuple(rendered[family.name].samples for family in families),
        )


def render_exposition(
    snapshot: Snapshot | None,
    health: ExporterHealth,
    *,
    openmetrics: bool = False,
    build: BuildInfo | None = None,
) -> bytes:
    """The exposition of every family, in the Prometheus text format or OpenMetrics, joined.

    ``snapshot`` None (nothing collected yet, or stale data dropped) renders only the exporter's health.
    """
    rendering = Renderer(build).render(snapshot, health)
    return b"".join(rendering.openmetrics_chunks() if openmetrics else rendering.text_chunks())


class SnapshotCollector:
    """The same table as a prometheus_client collector: fresh families from one snapshot per collect().

    For a ``CollectorRegistry`` (and the equivalence tests); the daemon uses the faster ``Renderer``.
    """

    def __init__(
        self, snapshot: Snapshot | None, health: ExporterHealth, build: BuildInfo | None = None
    ) -> None:
        self._sources = Sources(snapshot, health, build or current_build_info())

    def collect(self) -> Iterator[Metric]:
        for family in FAMILIES:
            metric: GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily
            labels = family.labels_in(self._sources)
            if family.type == COUNTER:
                metric = CounterMetricFamily(family.name, family.help, labels=labels)
            elif family.type == HISTOGRAM:
                metric = HistogramMetricFamily(family.name, family.help, labels=labels)
            else:
                metric = GaugeMetricFamily(family.name, family.help, labels=labels)
            for entity, values in sorted_series(family.scope, self._sources):
                value = family.value(entity)
                if isinstance(value, HistogramData):
                    assert isinstance(metric, HistogramMetricFamily)  # noqa: S101 (narrows the type for mypy)
                    metric.add_metric(list(values), histogram_buckets(value), value.sum)
                elif value is not None:
                    assert not isinstance(metric, HistogramMetricFamily)  # noqa: S101 (narrows the type)
                    metric.add_metric(list(values + family.extra_label_values(entity)), value)
            if metric.samples:
                yield metric
