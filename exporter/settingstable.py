"""Every setting of the exporter, once: one row per key of the YAML file.

A row gives the dotted YAML key, the kind of value (parser, range, how it is shown), the default, the
``NATS_EXPORTER_*`` environment variable, the flag if there is one, a one-line help, whether it is secret,
and the field of ``Settings`` it fills. The YAML reader, the environment and flag layers, the argparse
flags, ``check-config``'s summary and the reference in docs/configuration.md are all built from this table:
adding a setting is adding a row (and the field it fills).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from exporter import valuekinds as kinds
from exporter.settings import Settings

ENV_PREFIX = "NATS_EXPORTER_"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")

_DAY = 86400.0


@dataclass(frozen=True, slots=True)
class Setting:
    key: str  # dotted YAML key
    kind: kinds.Kind[Any]
    field: str  # dotted attribute path in Settings; its default there is the setting's default
    help: str
    env: str | None = None  # environment variable after ENV_PREFIX
    flag: str | None = None  # e.g. "--interval"
    metavar: str | None = None  # the flag's argument in --help
    repeatable: bool = False  # the flag may be given more than once, each adding to a list
    secret: bool = False  # never printed, never quoted in a message, no flag (command lines are public)
    default_text: str | None = None  # the default in words, when it depends on other settings

    @property
    def default(self) -> object:
        """The value when no layer sets it (None: not set), as the Settings dataclasses declare it."""
        return field_value(Settings(), self.field)

    @property
    def env_name(self) -> str | None:
        return ENV_PREFIX + self.env if self.env is not None else None

    @property
    def flag_dest(self) -> str | None:
        """The argparse attribute of the flag: ``--web.listen-address`` -> ``web_listen_address``."""
        if self.flag is None:
            return None
        return self.flag.lstrip("-").replace(".", "_").replace("-", "_")

    def show(self, value: object) -> str:
        """The value as check-config prints it; a secret only as being set."""
        if value is None:
            return "none"
        if self.secret:
            return "set (not shown)"
        return str(self.kind.show(value))


S = Setting
SETTINGS: tuple[Setting, ...] = (
    # -- nats: the connection -----------------------------------------------------------------------------
    S("nats.servers", kinds.SERVERS, "nats.servers",
      "NATS server URLs (nats://, tls://, ws://, wss://; host:port means nats://); no credentials in them",
      env="NATS_URL", flag="--nats-url", metavar="URL", repeatable=True),
    S("nats.user", kinds.TEXT, "nats.auth.user", "user name; needs nats.password", env="NATS_USER"),
    S("nats.password", kinds.SECRET, "nats.auth.password", "password; needs nats.user",
      env="NATS_PASSWORD", secret=True),
    S("nats.token", kinds.SECRET, "nats.auth.token", "token authentication", env="NATS_TOKEN", secret=True),
    S("nats.nkey_seed_file", kinds.FILE_PATH, "nats.auth.nkey_seed_file",
      "file holding the NKey seed (SU...)", env="NATS_NKEY_SEED_FILE"),
    S("nats.credentials_file", kinds.FILE_PATH, "nats.auth.credentials_file",
      "a .creds file (JWT and NKey seed), for decentralised authentication", env="NATS_CREDENTIALS_FILE"),
    S("nats.tls.ca_file", kinds.FILE_PATH, "nats.tls.ca_file",
      "PEM CA bundle to verify the server (default: the system CAs)", env="NATS_TLS_CA_FILE"),
    S("nats.tls.cert_file", kinds.FILE_PATH, "nats.tls.cert_file",
      "PEM client certificate (may also hold the key)", env="NATS_TLS_CERT_FILE"),
    S("nats.tls.key_file", kinds.FILE_PATH, "nats.tls.key_file",
      "PEM client key, unencrypted; needs nats.tls.cert_file", env="NATS_TLS_KEY_FILE"),
    S("nats.domain", kinds.DOMAIN, "nats.domain",
      "JetStream domain: the API prefix becomes $JS.<domain>.API", env="NATS_DOMAIN"),
    S("nats.connect_timeout", kinds.duration(at_most=300.0), "nats.connect_timeout_seconds",
      "time allowed for one connection attempt", env="NATS_CONNECT_TIMEOUT"),
    S("nats.account", kinds.TEXT, "nats.account",
      "value of the account label (default: asked from the server, else $G)", env="NATS_ACCOUNT"),
    # -- web: the HTTP endpoints -----------------------------------------------------------------------------
    S("web.listen_address", kinds.LISTEN_ADDRESS, "web.listen_address",
      "address for /metrics (outside the fully allocated exporter range 9100-9999)",
      env="WEB_LISTEN_ADDRESS", flag="--web.listen-address", metavar="HOST:PORT"),
    S("web.config_file", kinds.FILE_PATH, "web.config_file",
      "exporter-toolkit web config file: TLS and basic authentication on the HTTP endpoints",
      env="WEB_CONFIG_FILE", flag="--web.config.file", metavar="FILE"),
    S("web.read_header_timeout", kinds.duration(at_most=3600.0), "web.read_header_timeout_seconds",
      "a client must send its request headers within this", env="WEB_READ_HEADER_TIMEOUT"),
    S("web.idle_timeout", kinds.duration(at_most=_DAY), "web.idle_timeout_seconds",
      "an idle kept-alive connection is closed after this", env="WEB_IDLE_TIMEOUT"),
    S("web.max_connections", kinds.integer(1, 10000), "web.max_connections",
      "HTTP connections open at once; more are answered 503 and closed", env="WEB_MAX_CONNECTIONS"),
    # -- collection -----------------------------------------------------------------------------------------
    S("collection.interval", kinds.duration(at_most=_DAY), "collection.interval_seconds",
      "time between collections", env="INTERVAL", flag="--interval", metavar="DURATION"),
    S("collection.deadline", kinds.duration(at_most=_DAY), "collection.deadline_seconds",
      "a collection cycle is abandoned after this; shorter than the interval", env="DEADLINE",
      default_text="10s, or 2/3 of a shorter interval"),
    S("collection.request_timeout", kinds.duration(at_most=3600.0), "collection.request_timeout_seconds",
      "timeout of one JetStream API request; at most the deadline", env="REQUEST_TIMEOUT",
      flag="--collection.request-timeout", metavar="DURATION", default_text="5s, or the deadline if shorter"),
    S("collection.concurrency", kinds.integer(1, 1024), "collection.concurrency",
      "JetStream API requests in flight at once", env="CONCURRENCY"),
    S("collection.stale_data_ttl", kinds.duration(at_most=30 * _DAY, zero_allowed=True),
      "collection.stale_data_ttl_seconds",
      "after a failed cycle the last good data is served (with nats_up 0) this long, then dropped",
      env="STALE_DATA_TTL"),
    S("collection.lag_lookups_per_cycle", kinds.integer(0, 1_000_000), "collection.lag_lookups_per_cycle",
      "cap on message look-ups per cycle for nats_consumer_lag_seconds", env="LAG_LOOKUPS_PER_CYCLE"),
    S("collection.scope", kinds.choice(("auto", "account", "cluster")), "collection.scope",
      "what one exporter collects: its account, the whole cluster, or auto-detected", env="SCOPE"),
    S("collection.expected_servers", kinds.integer(1, 1000), "collection.expected_servers",
      "number of servers the cluster should have (default: not checked)", env="EXPECTED_SERVERS"),
    S("collection.shard", kinds.SHARD, "collection.shard",
      "collect only shard K of N of the streams, to split a large system between exporters (default: all)",
      env="SHARD"),
    # -- filters --------------------------------------------------------------------------------------------
    S("filters.accounts.include", kinds.PATTERN, "filters.account_include",
      "only accounts whose name matches are exported", env="ACCOUNT_INCLUDE"),
    S("filters.accounts.exclude", kinds.PATTERN, "filters.account_exclude",
      "accounts whose name matches are not exported (wins over include)", env="ACCOUNT_EXCLUDE"),
    S("filters.streams.include", kinds.PATTERN, "filters.stream_include",
      "only streams whose name matches are exported", env="STREAM_INCLUDE"),
    S("filters.streams.exclude", kinds.PATTERN, "filters.stream_exclude",
      "streams whose name matches are not exported (wins over include)", env="STREAM_EXCLUDE"),
    S("filters.consumers.include", kinds.PATTERN, "filters.consumer_include",
      "only consumers whose name matches are exported", env="CONSUMER_INCLUDE"),
    S("filters.consumers.exclude", kinds.PATTERN, "filters.consumer_exclude",
      "consumers whose name matches are not exported (wins over include)", env="CONSUMER_EXCLUDE"),
    S("filters.consumers.ephemeral", kinds.choice(("include", "aggregate", "exclude")),
      "filters.ephemeral", "ephemeral consumers: exported one by one, summed per stream, or left out",
      env="CONSUMER_EPHEMERAL"),
    # -- what is exported -----------------------------------------------------------------------------------
    S("dead_letter_streams", kinds.STREAM_NAMES, "dead_letter_streams",
      "streams holding dead letters, e.g. AI_DLQ", env="DEAD_LETTER_STREAMS", flag="--dead-letter-stream",
      metavar="NAME", repeatable=True),
    S("metrics.exclude", kinds.PATTERNS, "metrics.exclude",
      "metric families left out of the exposition: names or RE2 patterns", env="METRICS_EXCLUDE"),
    S("labels.from_metadata", kinds.TEXT_LIST, "labels.from_metadata",
      "stream and consumer metadata keys exported as labels", env="LABELS_FROM_METADATA"),
    S("ack_latency.buckets", kinds.ASCENDING_DURATIONS, "ack_latency.buckets",
      "bucket bounds of the acknowledgement latency histogram", env="ACK_LATENCY_BUCKETS"),
    S("accounts", kinds.ACCOUNT_ENTRIES, "accounts",
      "cluster scope: accounts also read from inside (dead letters, lag seconds, events); file only"),
    # -- probe ----------------------------------------------------------------------------------------------
    S("probe.enabled", kinds.BOOLEAN, "probe.enabled",
      "publish to a probe stream of the exporter's own and measure the round trip", env="PROBE_ENABLED"),
    S("probe.stream", kinds.STREAM_NAME, "probe.stream",
      "name of the probe stream", env="PROBE_STREAM"),
    S("probe.subject", kinds.SUBJECT, "probe.subject",
      "subject the probe publishes to", env="PROBE_SUBJECT"),
    S("probe.storage", kinds.choice(("file", "memory")), "probe.storage",
      "storage of the probe stream", env="PROBE_STORAGE"),
    S("probe.replicas", kinds.integer(1, 5), "probe.replicas", "replicas of the probe stream",
      env="PROBE_REPLICAS"),
    S("probe.max_age", kinds.duration(at_most=365 * _DAY), "probe.max_age_seconds",
      "probe messages are kept this long", env="PROBE_MAX_AGE"),
    S("probe.timeout", kinds.duration(at_most=300.0), "probe.timeout_seconds",
      "a probe not read back within this has failed", env="PROBE_TIMEOUT"),
    # -- log ------------------------------------------------------------------------------------------------
    S("log.level", kinds.choice(LOG_LEVELS), "log.level", "least severe level logged",
      env="LOG_LEVEL", flag="--log-level", metavar="LEVEL"),
    S("log.format", kinds.choice(LOG_FORMATS), "log.format", "text, or json (one object per line)",
      env="LOG_FORMAT", flag="--log-format", metavar="FORMAT"),
)  # fmt: skip


def field_value(settings: Settings, path: str) -> object:
    """The attribute at the dotted ``path`` of ``settings`` (``"collection.interval_seconds"``)."""
    value: object = settings
    for name in path.split("."):
        value = getattr(value, name)
    return value


BY_KEY: Mapping[str, Setting] = {setting.key: setting for setting in SETTINGS}
# Environment variable (after the prefix) -> key.
ENV_KEYS: Mapping[str, str] = {setting.env: setting.key for setting in SETTINGS if setting.env is not None}
