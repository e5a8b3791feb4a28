"""Immutable data read from JetStream in one collection cycle.

No I/O and no prometheus import here: the source module builds these, the metrics module renders them,
and tests build them by hand. Timestamps are Unix seconds (float); durations are seconds (float).
A limit the server reports as unlimited is ``None`` here, so the renderer can omit it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """The server the exporter is connected to (volatile identity: rendered only in an info series)."""

    server_name: str
    version: str
    cluster: str = ""
    domain: str = ""


@dataclass(frozen=True, slots=True)
class ServerJetStreamState:
    """One server's JetStream usage, limits, reservations and API counters (JSZ, cluster scope)."""

    server: str
    memory_bytes: int
    storage_bytes: int
    reserved_memory_bytes: int
    reserved_storage_bytes: int
    max_memory_bytes: int | None  # None: unlimited
    max_storage_bytes: int | None  # None: unlimited
    streams: int  # stream replicas hosted on this server
    consumers: int  # consumer replicas hosted on this server
    api_requests: int  # api.total, a counter
    api_errors: int  # api.errors, a counter


@dataclass(frozen=True, slots=True)
class MetaPeer:
    """One peer of the JetStream meta group, as its leader sees it (the leader itself: current, lag 0)."""

    server: str
    current: bool
    lag_operations: int


@dataclass(frozen=True, slots=True)
class MetaClusterState:
    """The JetStream meta group (the cluster-wide placement authority), from its leader's report."""

    cluster: str
    leader: str
    size: int  # configured cluster size
    peers: tuple[MetaPeer, ...]  # sorted by server, the leader included


@dataclass(frozen=True, slots=True)
class AccountState:
    """``$JS.API.INFO``: the account's JetStream usage and limits."""

    account: str
    memory_bytes: int
    storage_bytes: int
    max_memory_bytes: int | None  # None: unlimited
    max_storage_bytes: int | None  # None: unlimited
    streams: int
    consumers: int
    api_requests: int  # api.total, a counter
    api_errors: int  # api.errors, a counter


@dataclass(frozen=True, slots=True)
class ReplicaState:
    """One peer of a clustered stream's group, as its leader reports it (the leader itself included)."""

    server: str
    current: bool  # False while behind or offline
    lag_operations: int = 0  # cluster.replicas[].lag; 0 for the leader


@dataclass(frozen=True, slots=True)
class SourceState:
    """One origin a stream mirrors or sources from: ``StreamInfo.mirror`` or ``StreamInfo.sources[]``."""

    kind: str  # "mirror" | "source"
    name: str  # the origin stream's name
    filter_subject: str
    external_api: str  # the external API prefix (another domain or account), "" when local
    lag_messages: int
    active_seconds: float | None  # time since the origin was last heard from; None: never


@dataclass(frozen=True, slots=True)
class Threshold:
    """One ``io.nats.monitor.*`` threshold of a stream or consumer (see exporter.monitoring)."""

    check: str  # what is compared: msgs, subjects_max, lag, ..., outstanding_ack, last_ack, ...
    severity: str  # "warning" | "critical"
    value: float  # a count, or seconds for durations


@dataclass(frozen=True, slots=True)
class StreamState:
    """One stream: ``StreamInfo.config`` limits and ``StreamInfo.state``."""

    account: str
    name: str
    # config
    subjects: tuple[str, ...]
    storage: str  # "file" | "memory"
    retention: str  # "limits" | "interest" | "workqueue"
    replicas: int
    allow_direct: bool
    max_messages: int | None
    max_bytes: int | None
    max_age_seconds: float | None
    max_messages_per_subject: int | None
    # state
    messages: int
    bytes: int
    first_seq: int
    first_ts: float | None  # None while the stream is empty
    last_seq: int
    last_ts: float | None  # None while the stream is empty
    num_subjects: int
    num_deleted: int
    consumer_count: int
    # cluster
    leader: str = ""
    # The group's peers, leader first; empty when the server is not clustered (the stream is then current
    # on the one server there is).
    peers: tuple[ReplicaState, ...] = ()
    sources: tuple[SourceState, ...] = ()  # the mirror, or the sources, by origin name

    # metadata: io.nats.monitor.* thresholds, unreadable monitoring values (messages), and the values of the
    # keys configured as labels (labels.from_metadata, in that order; "" when absent)
    thresholds: tuple[Threshold, ...] = ()
    metadata_problems: tuple[str, ...] = ()
    metadata_labels: tuple[str, ...] = ()

    @property
    def replicas_current(self) -> int:
        """Peers current with the leader, the leader included; 0 while there is no leader."""
        if not self.peers:
            return self.replicas
        return sum(peer.current for peer in self.peers) if self.leader else 0

    def unreachable(self) -> StreamState:
        """These values, kept for a cycle in which the stream's leader did not answer: no peer current."""
        peers = tuple(replace(peer, current=False) for peer in self.peers)
        return replace(self, leader="", peers=peers)


@dataclass(frozen=True, slots=True)
class ConsumerState:
    """One consumer: ``ConsumerInfo`` and its config."""

    account: str
    stream: str
    name: str
    # config
    durable: bool
    pull: bool  # no deliver_subject
    ack_policy: str
    deliver_policy: str
    filter_subjects: tuple[str, ...]  # config.filter_subject and config.filter_subjects, merged
    max_deliver: int | None
    max_ack_pending: int | None
    ack_wait_seconds: float | None
    # state
    num_pending: int
    num_ack_pending: int
    num_redelivered: int
    num_waiting: int
    delivered_consumer_seq: int
    delivered_stream_seq: int
    delivered_last_active: float | None  # None before the first delivery
    ack_floor_consumer_seq: int
    ack_floor_stream_seq: int
    ack_floor_last_active: float | None  # None before the first ack
    paused: bool = False
    leader: str = ""
    replicas: int = 1  # config.num_replicas, or the stream's when that is 0 ("as the stream")
    replicas_current: int = 1  # peers current with the leader, the leader included; 0 without a leader
    # Age of the oldest unacknowledged message at collection time; 0.0 when nothing is outstanding;
    # None when it was not measured this cycle (look-up cap reached, or the look-up failed).
    lag_seconds: float | None = None
    # metadata, as for streams
    thresholds: tuple[Threshold, ...] = ()
    metadata_problems: tuple[str, ...] = ()
    metadata_labels: tuple[str, ...] = ()

    def unreachable(self) -> ConsumerState:
        """These values, kept for a cycle in which the consumer's leader did not answer: no peer current."""
        return replace(self, leader="", replicas_current=0)


@dataclass(frozen=True, slots=True)
class EphemeralConsumers:
    """The ephemeral consumers of one stream, summed (``filters.consumers.ephemeral: aggregate``)."""

    account: str
    stream: str
    consumers: int
    num_pending: int  # summed ConsumerInfo.num_pending
    num_ack_pending: int  # summed ConsumerInfo.num_ack_pending
    # The largest lag_seconds among them; 0.0 when there are none; None when none of them was measured.
    oldest_lag_seconds: float | None


@dataclass(frozen=True, slots=True)
class DeadLetterState:
    """A configured dead-letter stream: per-subject depth and the oldest dead letter."""

    account: str
    stream: str
    exists: bool  # False: configured but not (yet) present on the server
    subject_counts: tuple[tuple[str, int], ...] = ()  # sorted by subject
    first_ts: float | None = None  # None while empty or missing


@dataclass(frozen=True, slots=True)
class AdvisoryCounts:
    """Consumer advisories (delivery failures, elections, quorum loss) seen since the exporter started."""

    max_deliveries_exceeded: int = 0
    terminated: int = 0
    naks: int = 0
    leader_elections: int = 0
    quorum_lost: int = 0


@dataclass(frozen=True, slots=True)
class StreamEventCounts:
    """Stream advisories (elections, quorum loss) seen for one stream since the exporter started."""

    leader_elections: int = 0
    quorum_lost: int = 0


@dataclass(frozen=True, slots=True)
class HistogramData:
    """A histogram at one moment: upper bounds (``+Inf`` implied), cumulative counts with ``+Inf`` last."""

    bounds: tuple[float, ...]
    cumulative_counts: tuple[int, ...]  # len(bounds) + 1
    sum: float

    @property
    def count(self) -> int:
        return self.cumulative_counts[-1]


@dataclass(frozen=True, slots=True)
class AckHistograms:
    """A consumer's sampled acknowledgements (``sample_freq``): time to ack, and deliveries it took."""

    latency_seconds: HistogramData
    deliveries: HistogramData


@dataclass(frozen=True, slots=True)
class ProbeHealth:
    """The end-to-end probe (exporter.probe) since the exporter started."""

    up: bool  # the last probe succeeded
    publish_ack_seconds: HistogramData  # publish until JetStream's acknowledgement
    round_trip_seconds: HistogramData  # publish until the message came back through the probe's consumer
    failures: Mapping[str, int]  # stage -> failed probes, every stage from the start


ConsumerKey = tuple[str, str, str]  # (account, stream, consumer)
StreamKey = tuple[str, str]  # (account, stream)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one successful collection cycle read from JetStream."""

    collected_at: float  # Unix seconds when the cycle finished
    # The connected server (account scope), or every server that answered (cluster scope).
    servers: tuple[ServerInfo, ...]
    # The exporter's account (account scope), or every selected account (cluster scope).
    accounts: tuple[AccountState, ...]
    streams: tuple[StreamState, ...] = ()
    consumers: tuple[ConsumerState, ...] = ()
    dead_letters: tuple[DeadLetterState, ...] = ()
    lag_lookups_skipped: int = 0  # consumers whose lag was not measured because of the per-cycle cap
    # Stages that failed without failing the cycle (e.g. "lag", "dlq"): counted in
    # nats_exporter_collection_errors_total{stage} by the collection loop.
    partial_errors: tuple[str, ...] = ()
    # Cluster scope only: per-server JetStream usage, the meta group, and how many servers answered.
    jetstream_servers: tuple[ServerJetStreamState, ...] = ()
    meta_cluster: MetaClusterState | None = None
    servers_responded: int | None = None
    # labels.from_metadata: the metadata keys whose values the streams and consumers carry as labels
    metadata_label_keys: tuple[str, ...] = ()
    # filters.consumers.ephemeral aggregate: one entry per stream, in place of its ephemeral consumers
    ephemeral_consumers: tuple[EphemeralConsumers, ...] = ()

    @property
    def cluster_scope(self) -> bool:
        """Read through the system account (every account), not from inside one account."""
        return self.servers_responded is not None


@dataclass(frozen=True, slots=True)
class ExporterHealth:
    """The exporter's own state at render time; rendered next to (or instead of) a snapshot."""

    up: bool
    collection_duration_seconds: float | None  # wall time of the last cycle, None before the first
    last_success_timestamp: float | None  # None before the first complete collection
    collection_errors: Mapping[str, int] = field(default_factory=dict)  # stage -> failures since start
    advisory_counts: Mapping[ConsumerKey, AdvisoryCounts] = field(default_factory=dict)
    malformed_advisories: int = 0
    stream_event_counts: Mapping[StreamKey, StreamEventCounts] = field(default_factory=dict)
    ack_histograms: Mapping[ConsumerKey, AckHistograms] = field(default_factory=dict)
    dropped_advisories: int = 0  # advisories and events the bounded intake could not keep
    collection_interval_seconds: float = 15.0  # configured interval, for "duration against interval"
    stage_durations: Mapping[str, float] = field(default_factory=dict)  # stage -> seconds, last cycle
    servers_expected: int | None = None  # cluster scope: collection.expected_servers, when configured
    # Accounts whose events (advisories, elections, sampled acks) are received; None: every account. Event
    # counters start at 0 for every known consumer, so an account nothing is received for must get none.
    event_accounts: frozenset[str] | None = None
    probe: ProbeHealth | None = None  # None while the probe is disabled
