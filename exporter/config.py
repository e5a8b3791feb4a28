"""Settings from defaults, a YAML file, ``NATS_EXPORTER_*`` environment variables and flags.

Precedence rises in that order, key by key (a list given on a higher layer replaces the lower one).
Every problem is a ``ConfigError`` naming where the value came from (the file, ``env NAME`` or
``--flag``), the dotted key and what is wrong. Secret values are never quoted in a message: parsers of
secrets only describe the type, and the YAML error text leaves out the offending line.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import yaml

from exporter.durations import format_duration, parse_duration
from exporter.errors import ConfigError
from exporter.settings import (
    CollectionSettings,
    FilterSettings,
    LogSettings,
    NatsAuth,
    NatsSettings,
    NatsTls,
    Secret,
    Settings,
    WebSettings,
    split_listen_address,
    validate_stream_name,
)
from exporter.yamlfiles import describe_type, describe_yaml_error, did_you_mean, unknown_key_message

ENV_PREFIX = "NATS_EXPORTER_"
CONFIG_FILE_ENV = f"{ENV_PREFIX}CONFIG"

# Every key of the YAML file, dotted. The file's sections are the prefixes of these keys.
CONFIG_KEYS: tuple[str, ...] = (
    "nats.servers",
    "nats.user",
    "nats.password",
    "nats.token",
    "nats.nkey_seed_file",
    "nats.credentials_file",
    "nats.tls.ca_file",
    "nats.tls.cert_file",
    "nats.tls.key_file",
    "nats.domain",
    "nats.connect_timeout",
    "nats.account",
    "web.listen_address",
    "web.config_file",
    "collection.interval",
    "collection.deadline",
    "collection.concurrency",
    "collection.request_timeout",
    "collection.stale_data_ttl",
    "collection.lag_lookups_per_cycle",
    "filters.streams.include",
    "filters.streams.exclude",
    "filters.consumers.include",
    "filters.consumers.exclude",
    "dead_letter_streams",
    "log.level",
    "log.format",
)

# Environment variable (after the prefix) -> key. Lists are comma-separated; regexes are not split.
ENV_KEYS: Mapping[str, str] = {
    "NATS_URL": "nats.servers",
    "NATS_USER": "nats.user",
    "NATS_PASSWORD": "nats.password",
    "NATS_TOKEN": "nats.token",
    "NATS_NKEY_SEED_FILE": "nats.nkey_seed_file",
    "NATS_CREDENTIALS_FILE": "nats.credentials_file",
    "NATS_TLS_CA_FILE": "nats.tls.ca_file",
    "NATS_TLS_CERT_FILE": "nats.tls.cert_file",
    "NATS_TLS_KEY_FILE": "nats.tls.key_file",
    "NATS_DOMAIN": "nats.domain",
    "NATS_CONNECT_TIMEOUT": "nats.connect_timeout",
    "NATS_ACCOUNT": "nats.account",
    "WEB_LISTEN_ADDRESS": "web.listen_address",
    "WEB_CONFIG_FILE": "web.config_file",
    "INTERVAL": "collection.interval",
    "DEADLINE": "collection.deadline",
    "CONCURRENCY": "collection.concurrency",
    "REQUEST_TIMEOUT": "collection.request_timeout",
    "STALE_DATA_TTL": "collection.stale_data_ttl",
    "LAG_LOOKUPS_PER_CYCLE": "collection.lag_lookups_per_cycle",
    "STREAM_INCLUDE": "filters.streams.include",
    "STREAM_EXCLUDE": "filters.streams.exclude",
    "CONSUMER_INCLUDE": "filters.consumers.include",
    "CONSUMER_EXCLUDE": "filters.consumers.exclude",
    "DEAD_LETTER_STREAMS": "dead_letter_streams",
    "LOG_LEVEL": "log.level",
    "LOG_FORMAT": "log.format",
}

# argparse dest -> (flag as the user types it, key). The parser itself lives in cli.py.
FLAG_KEYS: Mapping[str, tuple[str, str]] = {
    "nats_url": ("--nats-url", "nats.servers"),
    "web_listen_address": ("--web.listen-address", "web.listen_address"),
    "web_config_file": ("--web.config.file", "web.config_file"),
    "interval": ("--interval", "collection.interval"),
    "dead_letter_stream": ("--dead-letter-stream", "dead_letter_streams"),
    "log_level": ("--log-level", "log.level"),
    "log_format": ("--log-format", "log.format"),
}

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
SERVER_SCHEMES = ("nats", "tls", "ws", "wss")
_AUTH_METHODS = ("nats.password", "nats.token", "nats.nkey_seed_file", "nats.credentials_file")
# Used as the deadline's share of the interval when only the interval is set, so `--interval 5s` works.
_DEFAULT_DEADLINE_SHARE = 2 / 3

_INTEGER = re.compile(r"[+-]?\d+")
_HOSTNAME = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
# NATS rejects these in JetStream domains.
_DOMAIN_FORBIDDEN = frozenset(" \t\r\n.*>")

T = TypeVar("T")
N = TypeVar("N", int, float)


# -- the YAML file ---------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: PyYAML keeps the last one silently, hiding half a section."""


def _construct_mapping_refusing_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[tuple[str, str]] = set()
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue
        identity = (key_node.tag, key_node.value)
        if identity in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
            )
        seen.add(identity)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping_refusing_duplicates,
)


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The YAML configuration file as a mapping ({} when empty); ConfigError if unreadable or not YAML."""
    source = str(path)
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read the configuration file: {exc.strerror or type(exc).__name__}", source=source
        ) from None
    except UnicodeDecodeError:
        raise ConfigError("the configuration file is not UTF-8 text", source=source) from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (_StrictLoader is a SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(describe_yaml_error(exc), source=source) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"the configuration file must be a mapping of keys, not {describe_type(data)}", source=source
        )
    return data


# -- raw values and where they came from -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Value:
    raw: object
    source: str  # the file, "env NAME" or "--flag"
    from_text: bool  # environment and flags: every value arrives as a string
    base_dir: Path | None = None  # relative paths in the file are relative to the file


class _InvalidValueError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _children_by_section() -> dict[str, set[str]]:
    children: dict[str, set[str]] = {}
    for key in CONFIG_KEYS:
        parts = key.split(".")
        for depth in range(len(parts)):
            children.setdefault(".".join(parts[:depth]), set()).add(parts[depth])
    return children


_SECTION_CHILDREN = _children_by_section()


def _file_values(path: str) -> dict[str, _Value]:
    data = load_config_file(path)
    values: dict[str, _Value] = {}
    _flatten(data, "", path, Path(path).parent, values)
    return values


def _flatten(tree: object, section: str, source: str, base_dir: Path, out: dict[str, _Value]) -> None:
    if not isinstance(tree, dict):
        raise ConfigError(
            f"expected a mapping of keys, got {describe_type(tree)}", source=source, key=section
        )
    for raw_name, raw_value in tree.items():
        name = str(raw_name)
        key = f"{section}.{name}" if section else name
        if name not in _SECTION_CHILDREN[section]:
            raise ConfigError(_unknown_key_message(name, section), source=source, key=key)
        if raw_value is None:  # `key:` with nothing after it: left at its default
            continue
        if key in CONFIG_KEYS:
            out[key] = _Value(raw_value, source, from_text=False, base_dir=base_dir)
        else:
            _flatten(raw_value, key, source, base_dir, out)


def _unknown_key_message(name: str, section: str) -> str:
    by_leaf = {key.rsplit(".", 1)[-1]: key for key in CONFIG_KEYS}
    return unknown_key_message(name, section, sorted(_SECTION_CHILDREN[section]), elsewhere=by_leaf)


def _env_values(environ: Mapping[str, str]) -> dict[str, _Value]:
    # Other NATS_EXPORTER_* variables are ignored, not refused: Kubernetes injects NATS_EXPORTER_SERVICE_HOST
    # and friends into every pod when a Service is called nats-exporter.
    values: dict[str, _Value] = {}
    for suffix, key in ENV_KEYS.items():
        name = ENV_PREFIX + suffix
        text = environ.get(name, "")
        if text.strip():  # empty means unset, as with an optional Secret that is not there
            values[key] = _Value(text, f"env {name}", from_text=True)
    return values


def _flag_values(args: argparse.Namespace) -> dict[str, _Value]:
    values: dict[str, _Value] = {}
    for dest, (flag, key) in FLAG_KEYS.items():
        raw = getattr(args, dest, None)
        if raw is not None:
            values[key] = _Value(raw, flag, from_text=True)
    return values


def config_file_path(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> str | None:
    """The configuration file named by ``--config`` or, failing that, NATS_EXPORTER_CONFIG."""
    flag = getattr(args, "config", None)
    if flag:
        return str(flag)
    env = os.environ if environ is None else environ
    return env.get(CONFIG_FILE_ENV, "").strip() or None


# -- parsers: one _Value -> one typed value, or _InvalidValueError ----------------------------------------


def _text(value: _Value) -> str:
    if not isinstance(value.raw, str):
        raise _InvalidValueError(f"expected a string, got {describe_type(value.raw)} (quote it in YAML)")
    text = value.raw.strip()
    if not text:
        raise _InvalidValueError("must not be empty")
    return text


def _secret(value: _Value) -> Secret:
    if not isinstance(value.raw, str):
        raise _InvalidValueError(f"expected a string, got {describe_type(value.raw)} (quote it in YAML)")
    if not value.raw:
        raise _InvalidValueError("must not be empty")
    return Secret(value.raw)


def _text_list(value: _Value) -> tuple[str, ...]:
    items = _as_list(value.raw, "a list of strings")
    texts: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise _InvalidValueError(f"expected a list of strings, found {describe_type(item)} in it")
        texts.extend(part.strip() for part in item.split(",") if part.strip())
    if not texts:
        raise _InvalidValueError("must not be empty")
    return tuple(dict.fromkeys(texts))


def _as_list(raw: object, expected: str) -> list[object]:
    """A string stands for a list of one, so `servers: nats://a:4222` reads as it looks."""
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list):
        return raw
    raise _InvalidValueError(f"expected {expected}, got {describe_type(raw)}")


def _servers(value: _Value) -> tuple[str, ...]:
    return tuple(_server_url(text) for text in _text_list(value))


def _server_url(text: str) -> str:
    url = text if "://" in text else f"nats://{text}"
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed "[" of an IPv6 address
        raise _InvalidValueError(f"not a server URL ({exc})") from None
    if parts.scheme not in SERVER_SCHEMES:
        schemes = ", ".join(f"{scheme}://" for scheme in SERVER_SCHEMES)
        raise _InvalidValueError(f"unsupported scheme {parts.scheme!r} in a server URL; use {schemes}")
    if parts.username is not None or parts.password is not None:
        # The URL would be printed in logs and summaries; the credentials belong where they stay secret.
        raise _InvalidValueError(
            "a server URL must not carry credentials: set nats.user and nats.password "
            f"(or {ENV_PREFIX}NATS_USER and {ENV_PREFIX}NATS_PASSWORD) instead"
        )
    try:
        parts.port  # noqa: B018 (urlsplit checks the port only when it is read)
    except ValueError:
        raise _InvalidValueError(f"invalid port in server URL {text!r}") from None
    if not parts.hostname:
        raise _InvalidValueError(f"server URL {text!r} has no host")
    return url


def _stream_names(value: _Value) -> tuple[str, ...]:
    names = _text_list(value)
    for name in names:
        problem = validate_stream_name(name)
        if problem is not None:
            raise _InvalidValueError(f"invalid stream name {name!r}: {problem}")
    return names


def _domain(value: _Value) -> str:
    domain = _text(value)
    if any(char in _DOMAIN_FORBIDDEN for char in domain):
        raise _InvalidValueError(f"invalid JetStream domain {domain!r}: no spaces, '.', '*' or '>'")
    return domain


def _file_path(value: _Value) -> str:
    path = Path(_text(value)).expanduser()
    if value.base_dir is not None and not path.is_absolute():
        path = value.base_dir / path
    if not path.exists():
        hint = f" (relative to the configuration file's directory {value.base_dir})" if value.base_dir else ""
        raise _InvalidValueError(f"file not found: {path}{hint}")
    if not path.is_file():
        raise _InvalidValueError(f"not a regular file: {path}")
    if not os.access(path, os.R_OK):
        raise _InvalidValueError(f"file not readable: {path}")
    return str(path)


def _duration(value: _Value) -> float:
    raw = value.raw
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise _InvalidValueError(
            f'expected a duration like "15s" or a number of seconds, got {describe_type(raw)}'
        )
    if isinstance(raw, str):
        try:
            seconds = parse_duration(raw)
        except ValueError as exc:
            raise _InvalidValueError(str(exc)) from None
    else:
        seconds = float(raw)
    if not math.isfinite(seconds):
        raise _InvalidValueError("must be a finite duration")
    return seconds


def _integer(value: _Value) -> int:
    raw = value.raw
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if value.from_text and isinstance(raw, str) and _INTEGER.fullmatch(raw.strip()):
        return int(raw)
    shown = f" {raw!r}" if isinstance(raw, str) else ""
    raise _InvalidValueError(f"expected a whole number, got {describe_type(raw)}{shown}")


def _sign_checked(
    parse: Callable[[_Value], N], *, allow_zero: bool, show: Callable[[N], str] = str
) -> Callable[[_Value], N]:
    """``parse``, then refuse a negative result and, unless ``allow_zero``, zero too."""

    def parse_checked(value: _Value) -> N:
        number = parse(value)
        if number < 0 or (number == 0 and not allow_zero):
            requirement = "must not be negative" if allow_zero else "must be greater than zero"
            raise _InvalidValueError(f"{requirement}, got {show(number)}")
        return number

    return parse_checked


_positive_duration = _sign_checked(_duration, allow_zero=False, show=format_duration)
_non_negative_duration = _sign_checked(_duration, allow_zero=True, show=format_duration)
_positive_integer = _sign_checked(_integer, allow_zero=False)
_non_negative_integer = _sign_checked(_integer, allow_zero=True)


def _pattern(value: _Value) -> re.Pattern[str]:
    patterns = _as_list(value.raw, "a regular expression or a list of them")
    if not patterns:
        raise _InvalidValueError("must not be empty")
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise _InvalidValueError(
                f"expected regular expressions as strings, found {describe_type(pattern)}"
            )
        try:
            re.compile(pattern)
        except re.error as exc:
            raise _InvalidValueError(
                f"invalid regular expression {pattern!r}: {exc.msg} at position {exc.pos}"
            ) from None
    if len(patterns) == 1:
        return re.compile(str(patterns[0]))
    return re.compile("|".join(f"(?:{pattern})" for pattern in patterns))


def _listen_address(value: _Value) -> str:
    address = _text(value)
    try:
        host, _ = split_listen_address(address)
    except ValueError as exc:
        raise _InvalidValueError(
            f"invalid listen address {address!r}: {exc}; use HOST:PORT, :PORT or [IPv6]:PORT"
        ) from None
    if host is None:
        return address
    if address.startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _InvalidValueError(f"invalid IPv6 address in listen address {address!r}") from None
    elif ":" in host:
        raise _InvalidValueError(f"an IPv6 host needs brackets, e.g. [::1]:10422, got {address!r}")
    elif not _HOSTNAME.fullmatch(host):
        raise _InvalidValueError(f"invalid host {host!r} in listen address {address!r}")
    elif all(label.isdigit() for label in host.rstrip(".").split(".")):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise _InvalidValueError(f"invalid IPv4 address in listen address {address!r}") from None
    return address


def _choice(options: tuple[str, ...]) -> Callable[[_Value], str]:
    def parse(value: _Value) -> str:
        text = _text(value).lower()
        if text in options:
            return text
        hint = did_you_mean(text, options)
        raise _InvalidValueError(f"must be one of {', '.join(options)}, got {text!r}{hint}")

    return parse


# -- building the settings ---------------------------------------------------------------------------------


class _Layers:
    """The winning raw value of every key that was set, and the errors that name its source."""

    def __init__(self, values: Mapping[str, _Value]) -> None:
        self._values = values

    def is_set(self, key: str) -> bool:
        return key in self._values

    def source(self, key: str) -> str:
        value = self._values.get(key)
        return value.source if value is not None else "default"

    def error(self, key: str, message: str) -> ConfigError:
        value = self._values.get(key)
        return ConfigError(message, source=value.source if value is not None else None, key=key)

    def get(self, key: str, parse: Callable[[_Value], T], default: T) -> T:
        value = self._values.get(key)
        if value is None:
            return default
        try:
            return parse(value)
        except _InvalidValueError as exc:
            raise ConfigError(exc.message, source=value.source, key=key) from None

    def optional(self, key: str, parse: Callable[[_Value], T]) -> T | None:
        return self.get(key, parse, None)


def settings_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Settings:
    """Defaults < the YAML file (``--config`` or NATS_EXPORTER_CONFIG) < environment < flags, validated."""
    env = os.environ if environ is None else environ
    values: dict[str, _Value] = {}
    path = config_file_path(args, env)
    if path is not None:
        values.update(_file_values(path))
    values.update(_env_values(env))
    values.update(_flag_values(args))
    layers = _Layers(values)
    settings = Settings(
        nats=_nats_settings(layers),
        web=WebSettings(
            listen_address=layers.get("web.listen_address", _listen_address, WebSettings().listen_address),
            config_file=layers.optional("web.config_file", _file_path),
        ),
        collection=_collection_settings(layers),
        filters=FilterSettings(
            stream_include=layers.optional("filters.streams.include", _pattern),
            stream_exclude=layers.optional("filters.streams.exclude", _pattern),
            consumer_include=layers.optional("filters.consumers.include", _pattern),
            consumer_exclude=layers.optional("filters.consumers.exclude", _pattern),
        ),
        dead_letter_streams=layers.get("dead_letter_streams", _stream_names, ()),
        log=LogSettings(
            level=layers.get("log.level", _choice(LOG_LEVELS), LogSettings().level),
            format=layers.get("log.format", _choice(LOG_FORMATS), LogSettings().format),
        ),
    )
    _check_tls_material(settings.nats.tls, layers)
    return settings


def _nats_settings(layers: _Layers) -> NatsSettings:
    defaults = NatsSettings()
    auth = NatsAuth(
        user=layers.optional("nats.user", _text),
        password=layers.optional("nats.password", _secret),
        token=layers.optional("nats.token", _secret),
        nkey_seed_file=layers.optional("nats.nkey_seed_file", _file_path),
        credentials_file=layers.optional("nats.credentials_file", _file_path),
    )
    _check_auth(auth, layers)
    tls = NatsTls(
        ca_file=layers.optional("nats.tls.ca_file", _file_path),
        cert_file=layers.optional("nats.tls.cert_file", _file_path),
        key_file=layers.optional("nats.tls.key_file", _file_path),
    )
    if tls.key_file is not None and tls.cert_file is None:
        raise layers.error(
            "nats.tls.key_file", "a client key needs a client certificate: set nats.tls.cert_file"
        )
    return NatsSettings(
        servers=layers.get("nats.servers", _servers, defaults.servers),
        auth=auth,
        tls=tls,
        domain=layers.optional("nats.domain", _domain),
        connect_timeout_seconds=layers.get(
            "nats.connect_timeout", _positive_duration, defaults.connect_timeout_seconds
        ),
        account=layers.optional("nats.account", _text),
    )


def _check_auth(auth: NatsAuth, layers: _Layers) -> None:
    chosen = [key for key in _AUTH_METHODS if layers.is_set(key)]
    if len(chosen) > 1:
        named = " and ".join(f"{key} ({layers.source(key)})" for key in chosen)
        raise layers.error(chosen[-1], f"more than one authentication method: {named}; choose one")
    if auth.password is not None and auth.user is None:
        raise layers.error("nats.password", "a password needs a user: set nats.user")
    if auth.user is not None and auth.password is None:
        raise layers.error("nats.user", "a user needs a password: set nats.password")


def _collection_settings(layers: _Layers) -> CollectionSettings:
    defaults = CollectionSettings()
    interval = layers.get("collection.interval", _positive_duration, defaults.interval_seconds)
    deadline = layers.get(
        "collection.deadline",
        _positive_duration,
        min(defaults.deadline_seconds, interval * _DEFAULT_DEADLINE_SHARE),
    )
    if deadline >= interval:
        raise layers.error(
            "collection.deadline",
            f"the deadline ({format_duration(deadline)}) must be shorter than collection.interval "
            f"({format_duration(interval)}, {layers.source('collection.interval')})",
        )
    return CollectionSettings(
        interval_seconds=interval,
        deadline_seconds=deadline,
        concurrency=layers.get("collection.concurrency", _positive_integer, defaults.concurrency),
        request_timeout_seconds=layers.get(
            "collection.request_timeout", _positive_duration, defaults.request_timeout_seconds
        ),
        stale_data_ttl_seconds=layers.get(
            "collection.stale_data_ttl", _non_negative_duration, defaults.stale_data_ttl_seconds
        ),
        lag_lookups_per_cycle=layers.get(
            "collection.lag_lookups_per_cycle", _non_negative_integer, defaults.lag_lookups_per_cycle
        ),
    )


class EncryptedKeyError(Exception):
    """OpenSSL asked for a passphrase: the private key file is encrypted."""


def refuse_encrypted_key() -> NoReturn:
    """The ``password`` callback of ``SSLContext.load_cert_chain``: raises EncryptedKeyError.

    Without a callback OpenSSL would prompt on the terminal for the passphrase and hang a container.
    """
    raise EncryptedKeyError


def _check_tls_material(tls: NatsTls, layers: _Layers) -> None:
    """Load the CA and the client certificate now, so a bad file fails at start-up with its key named."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if tls.ca_file is not None:
        try:
            context.load_verify_locations(cafile=tls.ca_file)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise layers.error(
                "nats.tls.ca_file", f"cannot load the CA certificates: {_ssl_reason(exc)}"
            ) from None
    if tls.cert_file is not None:
        key = "nats.tls.key_file" if tls.key_file is not None else "nats.tls.cert_file"
        try:
            context.load_cert_chain(tls.cert_file, tls.key_file, password=refuse_encrypted_key)
        except EncryptedKeyError:
            raise layers.error(
                key, "the client key is encrypted; the exporter needs an unencrypted key file"
            ) from None
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise layers.error(
                key, f"cannot load the client certificate and key: {_ssl_reason(exc)}"
            ) from None


def _ssl_reason(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return f"{exc.reason} (is it PEM, and do the certificate and key belong together?)"
    return str(exc.args[-1]) if exc.args else type(exc).__name__


def secrets_in(settings: Settings) -> tuple[Secret, ...]:
    """The secrets the settings hold, for the log redaction filter."""
    auth = settings.nats.auth
    return tuple(secret for secret in (auth.password, auth.token) if secret is not None)
