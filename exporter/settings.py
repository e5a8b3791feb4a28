"""The exporter's settings: frozen, typed, already validated.

``config.py`` builds a ``Settings`` from YAML, environment and flags; everything else only reads it.
Secrets are held in ``Secret`` so that a stray ``repr`` or log line never shows them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

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


@dataclass(frozen=True, slots=True)
class CollectionSettings:
    interval_seconds: float = 15.0
    deadline_seconds: float = 10.0  # one cycle is abandoned after this long
    concurrency: int = 16  # JetStream API requests in flight at once
    # Longest wait for one JetStream API reply (capped at half the deadline). Above the 4 s a clustered
    # server waits for unreachable stream and consumer leaders before it answers a list with `missing`.
    request_timeout_seconds: float = 5.0
    # After a failed cycle the last good data is served (with nats_up 0) for this long, then dropped.
    stale_data_ttl_seconds: float = 300.0
    lag_lookups_per_cycle: int = 1000  # cap on message look-ups for nats_consumer_lag_seconds


@dataclass(frozen=True, slots=True)
class FilterSettings:
    """Regular expressions (full match) that choose which streams and consumers are exported."""

    stream_include: re.Pattern[str] | None = None
    stream_exclude: re.Pattern[str] | None = None
    consumer_include: re.Pattern[str] | None = None
    consumer_exclude: re.Pattern[str] | None = None

    def stream_selected(self, name: str) -> bool:
        return _selected(name, self.stream_include, self.stream_exclude)

    def consumer_selected(self, name: str) -> bool:
        return _selected(name, self.consumer_include, self.consumer_exclude)


def _selected(name: str, include: re.Pattern[str] | None, exclude: re.Pattern[str] | None) -> bool:
    if include is not None and include.fullmatch(name) is None:
        return False
    return exclude is None or exclude.fullmatch(name) is None


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
        raise ValueError(f"expected HOST:PORT or :PORT, got {address!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port must be a number from 0 to 65535, got {port_text!r}")
    return (host or None), int(port_text)
