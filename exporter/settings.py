"""The exporter's settings: frozen, typed, already validated.

``config.py`` builds a ``Settings`` from YAML, environment and flags; everything else only reads it.
Secrets are held in ``Secret`` so that a stray ``repr`` or log line never shows them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exporter.patterns import NamePattern
from exporter.yamlfiles import quoted

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
# Outside 9100-9999 (Prometheus's exporter range, fully allocated) and unused by common exporters.
DEFAULT_LISTEN_ADDRESS = ":10422"


@dataclass(frozen=True, slots=True)
class Secret:
    """A secret string whose repr and str never reveal the value."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"


@dataclass(frozen=True, slots=True)
class NatsAuth:
    user: str | None = None
    password: Secret | None = None
    token: Secret | None = None
    nkey_seed_file: str | None = None
    credentials_file: str | None = None


@dataclass(frozen=True, slots=True)
class AccountEntry:
    """An account the cluster scope also connects inside, for what only the account itself can read."""

    name: str  # the account's name as the server reports it
    auth: NatsAuth = field(default_factory=NatsAuth)


@dataclass(frozen=True, slots=True)
class NatsTls:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @property
    def enabled(self) -> bool:
        return any((self.ca_file, self.cert_file, self.key_file))


@dataclass(frozen=True, slots=True)
class NatsSettings:
    servers: tuple[str, ...] = (DEFAULT_NATS_URL,)
    auth: NatsAuth = field(default_factory=NatsAuth)
    tls: NatsTls = field(default_factory=NatsTls)
    domain: str | None = None  # JetStream domain: API prefix $JS.<domain>.API
    connect_timeout_seconds: float = 5.0
    # Value of the `account` label; None: ask the server ($SYS.REQ.USER.INFO), falling back to "$G".
    account: str | None = None


@dataclass(frozen=True, slots=True)
class WebSettings:
    listen_address: str = DEFAULT_LISTEN_ADDRESS
    config_file: str | None = None  # exporter-toolkit web config (TLS, basic auth)
    read_header_timeout_seconds: float = 10.0  # a client must send its request headers within this
    idle_timeout_seconds: float = 60.0  # a kept-alive connection with no request is closed after this
    max_connections: int = 100  # connections open at once; more are answered 503 and closed


@dataclass(frozen=True, slots=True)
class CollectionSettings:
    interval_seconds: float = 15.0
    deadline_seconds: float = 10.0  # one cycle is abandoned after this long
    concurrency: int = 16  # JetStream API requests in flight at once
    # After a failed cycle the last good data is served (with nats_up 0) for this long, then dropped.
    stale_data_ttl_seconds: float = 300.0
    lag_lookups_per_cycle: int = 1000  # cap on message look-ups for nats_consumer_lag_seconds
    # Longest wait for one JetStream API reply (the source also caps it at half the deadline). Above the
    # 4 s a clustered server waits for unreachable stream and consumer leaders before it answers a list.
    request_timeout_seconds: float = 5.0
    scope: str = "auto"  # auto | account | cluster: what one exporter collects
    expected_servers: int | None = None  # servers the cluster should have; None: not checked
    shard: tuple[int, int] | None = None  # (K, N): this exporter collects shard K of N; None: everything


@dataclass(frozen=True, slots=True)
class FilterSettings:
    """RE2 regular expressions (full match) choosing the accounts, streams and consumers exported."""

    stream_include: NamePattern | None = None
    stream_exclude: NamePattern | None = None
    consumer_include: NamePattern | None = None
    consumer_exclude: NamePattern | None = None
    account_include: NamePattern | None = None
    account_exclude: NamePattern | None = None
    ephemeral: str = "aggregate"  # include | aggregate | exclude: what to do with ephemeral consumers

    def account_selected(self, name: str) -> bool:
        return _selected(name, self.account_include, self.account_exclude)

    def stream_selected(self, name: str) -> bool:
        return _selected(name, self.stream_include, self.stream_exclude)

    def consumer_selected(self, name: str) -> bool:
        return _selected(name, self.consumer_include, self.consumer_exclude)


def _selected(name: str, include: NamePattern | None, exclude: NamePattern | None) -> bool:
    if include is not None and include.fullmatch(name) is None:
        return False
    return exclude is None or exclude.fullmatch(name) is None


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    exclude: tuple[NamePattern, ...] = ()  # metric families (names or RE2 patterns, full match) left out

    def family_excluded(self, name: str) -> bool:
        return any(pattern.fullmatch(name) is not None for pattern in self.exclude)


@dataclass(frozen=True, slots=True)
class LabelSettings:
    # Stream and consumer metadata keys exported as labels of nats_stream_info and nats_consumer_info
    # (named metadata_<key>, see exporter.monitoring.metadata_label_name).
    from_metadata: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    """An end-to-end probe: the exporter publishes to its own stream and measures the round trip."""

    enabled: bool = False
    stream: str = "NATS_EXPORTER_PROBE"
    subject: str = "nats_exporter.probe"
    storage: str = "memory"  # file | memory
    replicas: int = 1
    max_age_seconds: float = 3600.0
    timeout_seconds: float = 5.0  # publish, acknowledgement and read-back, all together


DEFAULT_ACK_LATENCY_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class AckLatencySettings:
    buckets: tuple[float, ...] = DEFAULT_ACK_LATENCY_BUCKETS  # histogram bucket bounds, seconds


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: str = "info"  # debug | info | warning | error
    format: str = "text"  # text | json


@dataclass(frozen=True, slots=True)
class Settings:
    nats: NatsSettings = field(default_factory=NatsSettings)
    web: WebSettings = field(default_factory=WebSettings)
    collection: CollectionSettings = field(default_factory=CollectionSettings)
    filters: FilterSettings = field(default_factory=FilterSettings)
    dead_letter_streams: tuple[str, ...] = ()
    log: LogSettings = field(default_factory=LogSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    labels: LabelSettings = field(default_factory=LabelSettings)
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    ack_latency: AckLatencySettings = field(default_factory=AckLatencySettings)
    accounts: tuple[AccountEntry, ...] = ()  # cluster scope: connections inside these accounts


# Stream and consumer names become subject tokens of the JetStream API and file names in the store.
_NAME_FORBIDDEN = frozenset(".*>/\\")


def validate_stream_name(name: str) -> str | None:
    """What NATS would refuse in ``name`` as a stream (or consumer) name; None when it is acceptable."""
    if not name:
        return "names cannot be empty"
    if any(char.isspace() or char in _NAME_FORBIDDEN for char in name):
        return "names cannot contain spaces, '.', '*', '>', '/' or '\\'"
    return None


def split_listen_address(address: str) -> tuple[str | None, int]:
    """``HOST:PORT``, ``:PORT`` or ``[IPv6]:PORT`` -> (host or None for all interfaces, port).

    Raises ValueError with a message fit for the user.
    """
    host, separator, port_text = address.rpartition(":")
    if not separator:
        raise ValueError("expected HOST:PORT or :PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port must be a number from 0 to 65535, got {quoted(port_text)}")
    return (host or None), int(port_text)
