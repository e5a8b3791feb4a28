"""The kinds of value a setting holds: how each is parsed, checked against its range, and shown.

A ``Kind`` turns one raw value (from the YAML file, an environment variable or a flag) into a typed value
or raises ``InvalidValueError`` with a message fit for the user. Messages quote what the user wrote only
when it is short (``yamlfiles.quoted``); the kinds of secrets only describe the type.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar
from urllib.parse import urlsplit

from exporter.durations import format_duration, parse_duration
from exporter.patterns import NamePattern, PatternError, compile_alternatives, compile_pattern
from exporter.settings import AccountEntry, NatsAuth, Secret, split_listen_address, validate_stream_name
from exporter.yamlfiles import brief, describe_type, did_you_mean, quoted

T = TypeVar("T")
N = TypeVar("N", int, float)

SERVER_SCHEMES = ("nats", "tls", "ws", "wss")
# Thirty digits is far beyond every range below, and keeps int() away from its 4300-digit limit.
_INTEGER = re.compile(r"[+-]?\d{1,30}")
_HOSTNAME = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
# NATS rejects these in JetStream domains.
_DOMAIN_FORBIDDEN = frozenset(" \t\r\n.*>")
# The longest duration text worth parsing ("1d2h3m4s5ms6us7ns" is 17 characters).
_MAX_DURATION_TEXT = 40
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


@dataclass(frozen=True, slots=True)
class RawValue:
    raw: object
    source: str  # the file, "env NAME" or "--flag"
    from_text: bool  # environment and flags: every value arrives as a string
    base_dir: Path | None = None  # relative paths in the file are relative to the file


class InvalidValueError(Exception):
    """``key``: where inside a structured value the problem is (``accounts[1].password``), when not the
    setting's own key."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.key = key


@dataclass(frozen=True, slots=True)
class Kind(Generic[T]):
    """One kind of value: ``parse`` reads and checks it, ``show`` prints it, ``describe`` names it in docs."""

    describe: str
    parse: Callable[[RawValue], T]
    show: Callable[[T], str] = str


# -- text ---------------------------------------------------------------------------------------------------


def _text(value: RawValue) -> str:
    if not isinstance(value.raw, str):
        raise InvalidValueError(f"expected a string, got {describe_type(value.raw)} (quote it in YAML)")
    text = value.raw.strip()
    if not text:
        raise InvalidValueError("must not be empty")
    return text


def _secret(value: RawValue) -> Secret:
    if not isinstance(value.raw, str):
        raise InvalidValueError(f"expected a string, got {describe_type(value.raw)} (quote it in YAML)")
    if not value.raw:
        raise InvalidValueError("must not be empty")
    return Secret(value.raw)


def _as_list(raw: object, expected: str) -> list[object]:
    """A string stands for a list of one, so `servers: nats://a:4222` reads as it looks."""
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list):
        return raw
    raise InvalidValueError(f"expected {expected}, got {describe_type(raw)}")


def _text_list(value: RawValue) -> tuple[str, ...]:
    """Strings, each split on commas (so one environment variable can hold a list), duplicates dropped."""
    texts: list[str] = []
    for item in _as_list(value.raw, "a list of strings"):
        if not isinstance(item, str):
            raise InvalidValueError(f"expected a list of strings, found {describe_type(item)} in it")
        texts.extend(part.strip() for part in item.split(",") if part.strip())
    if not texts:
        raise InvalidValueError("must not be empty")
    return tuple(dict.fromkeys(texts))


def _joined(items: Sequence[object]) -> str:
    return ", ".join(str(item) for item in items) or "none"


TEXT: Kind[str] = Kind("string", _text)
SECRET: Kind[Secret] = Kind("string", _secret)
TEXT_LIST: Kind[tuple[str, ...]] = Kind(
    "list of strings (comma-separated in the environment)", _text_list, _joined
)


def choice(options: tuple[str, ...]) -> Kind[str]:
    def parse(value: RawValue) -> str:
        text = _text(value).lower()
        if text in options:
            return text
        raise InvalidValueError(
            f"must be one of {', '.join(options)}, got {quoted(text)}{did_you_mean(text, options)}"
        )

    return Kind(f"one of {', '.join(options)}", parse)


def _boolean(value: RawValue) -> bool:
    if isinstance(value.raw, bool):
        return value.raw
    if value.from_text and isinstance(value.raw, str):
        text = value.raw.strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
    raise InvalidValueError(f"expected true or false, got {describe_type(value.raw)}")


BOOLEAN: Kind[bool] = Kind("true or false", _boolean, lambda flag: "true" if flag else "false")


# -- names and addresses ------------------------------------------------------------------------------------


def _stream_name(text: str) -> str:
    problem = validate_stream_name(text)
    if problem is not None:
        raise InvalidValueError(f"invalid stream name {quoted(text)}: {problem}")
    return text


def _stream_names(value: RawValue) -> tuple[str, ...]:
    return tuple(_stream_name(name) for name in _text_list(value))


STREAM_NAME: Kind[str] = Kind("stream name", lambda value: _stream_name(_text(value)))
STREAM_NAMES: Kind[tuple[str, ...]] = Kind(
    "list of stream names (comma-separated in the environment)", _stream_names, _joined
)


def _subject(value: RawValue) -> str:
    subject = _text(value)
    tokens = subject.split(".")
    if any(not token or token in ("*", ">") or any(char.isspace() for char in token) for token in tokens):
        raise InvalidValueError(
            f"invalid subject {quoted(subject)}: dot-separated non-empty tokens, no spaces and no wildcards"
        )
    return subject


SUBJECT: Kind[str] = Kind("subject (no wildcards)", _subject)


def _domain(value: RawValue) -> str:
    domain = _text(value)
    if any(char in _DOMAIN_FORBIDDEN for char in domain):
        raise InvalidValueError(f"invalid JetStream domain {quoted(domain)}: no spaces, '.', '*' or '>'")
    return domain


DOMAIN: Kind[str] = Kind("string (no spaces, `.`, `*`, `>`)", _domain)


def _server_url(text: str) -> str:
    url = text if "://" in text else f"nats://{text}"
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed "[" of an IPv6 address
        raise InvalidValueError(f"not a server URL ({exc})") from None
    if parts.scheme not in SERVER_SCHEMES:
        schemes = ", ".join(f"{scheme}://" for scheme in SERVER_SCHEMES)
        raise InvalidValueError(f"unsupported scheme {quoted(parts.scheme)} in a server URL; use {schemes}")
    if parts.username is not None or parts.password is not None:
        # The URL would be printed in logs and summaries; the credentials belong where they stay secret.
        raise InvalidValueError(
            "a server URL must not carry credentials: set nats.user and nats.password "
            "(or NATS_EXPORTER_NATS_USER and NATS_EXPORTER_NATS_PASSWORD) instead"
        )
    try:
        parts.port  # noqa: B018 (urlsplit checks the port only when it is read)
    except ValueError:
        raise InvalidValueError(f"invalid port in server URL {quoted(text)}") from None
    if not parts.hostname:
        raise InvalidValueError(f"server URL {quoted(text)} has no host")
    return url


SERVERS: Kind[tuple[str, ...]] = Kind(
    "list of URLs (comma-separated in the environment)",
    lambda value: tuple(_server_url(text) for text in _text_list(value)),
    _joined,
)


def _file_path(value: RawValue) -> str:
    path = Path(_text(value)).expanduser()
    if value.base_dir is not None and not path.is_absolute():
        path = value.base_dir / path
    if not path.exists():
        hint = f" (relative to the configuration file's directory {value.base_dir})" if value.base_dir else ""
        raise InvalidValueError(f"file not found: {path}{hint}")
    if not path.is_file():
        raise InvalidValueError(f"not a regular file: {path}")
    if not os.access(path, os.R_OK):
        raise InvalidValueError(f"file not readable: {path}")
    return str(path)


FILE_PATH: Kind[str] = Kind("path of a readable file", _file_path)


def _listen_address(value: RawValue) -> str:
    address = _text(value)
    try:
        host, _ = split_listen_address(address)
    except ValueError as exc:
        raise InvalidValueError(
            f"invalid listen address {quoted(address)}: {exc}; use HOST:PORT, :PORT or [IPv6]:PORT"
        ) from None
    if host is None:
        return address
    if address.startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise InvalidValueError(f"invalid IPv6 address in listen address {quoted(address)}") from None
    elif ":" in host:
        raise InvalidValueError(f"an IPv6 host needs brackets, e.g. [::1]:10422, got {quoted(address)}")
    elif not _HOSTNAME.fullmatch(host):
        raise InvalidValueError(f"invalid host {quoted(host)} in listen address {quoted(address)}")
    elif all(label.isdigit() for label in host.rstrip(".").split(".")):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise InvalidValueError(f"invalid IPv4 address in listen address {quoted(address)}") from None
    return address


LISTEN_ADDRESS: Kind[str] = Kind("`HOST:PORT`, `:PORT` or `[IPv6]:PORT`, port 0-65535", _listen_address)


# -- numbers and durations ----------------------------------------------------------------------------------


def _seconds(raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise InvalidValueError(
            f'expected a duration like "15s" or a number of seconds, got {describe_type(raw)}'
        )
    if isinstance(raw, str):
        if len(raw.strip()) > _MAX_DURATION_TEXT:
            raise InvalidValueError(f"invalid duration {quoted(raw)}: too long for a duration")
        try:
            seconds = parse_duration(raw)
        except ValueError as exc:
            raise InvalidValueError(str(exc)) from None
    else:
        seconds = float(raw)
    if not math.isfinite(seconds):
        raise InvalidValueError("must be a finite duration")
    return seconds


def _in_range(number: N, low: N, high: N, *, show: Callable[[N], str]) -> N:
    """``number`` when within [low, high]; the message says the bound in the words people use."""
    if low <= number <= high:
        return number
    got = brief(show(number))
    if number > high:
        requirement = f"must be at most {show(high)}"
    elif low == 0:
        requirement = "must not be negative"
    elif low <= 1 and number <= 0:
        requirement = "must be greater than zero"
    else:
        requirement = f"must be at least {show(low)}"
    raise InvalidValueError(f"{requirement}, got {got}")


def duration(*, at_most: float, zero_allowed: bool = False) -> Kind[float]:
    """A duration from zero (or just above) to ``at_most`` seconds."""
    low = 0.0 if zero_allowed else math.ulp(0.0)

    def parse(value: RawValue) -> float:
        return _in_range(_seconds(value.raw), low, at_most, show=format_duration)

    lowest = "0" if zero_allowed else "more than 0"
    return Kind(f"duration, {lowest} to {format_duration(at_most)}", parse, format_duration)


def _whole_number(value: RawValue) -> int:
    raw = value.raw
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if value.from_text and isinstance(raw, str) and _INTEGER.fullmatch(raw.strip()):
        return int(raw)
    shown = f" {quoted(raw)}" if isinstance(raw, str) else ""
    raise InvalidValueError(f"expected a whole number, got {describe_type(raw)}{shown}")


def integer(low: int, high: int) -> Kind[int]:
    def parse(value: RawValue) -> int:
        return _in_range(_whole_number(value), low, high, show=str)

    return Kind(f"whole number, {low} to {high}", parse)


def _shard(value: RawValue) -> tuple[int, int]:
    text = _text(value) if isinstance(value.raw, str) else ""
    index, slash, count = text.partition("/")
    if not (slash and _INTEGER.fullmatch(index) and _INTEGER.fullmatch(count)):
        raise InvalidValueError(
            f'expected "K/N" (shard K of N, K from 0 to N-1), got {quoted(str(value.raw))}'
        )
    total = _in_range(int(count), 1, 1000, show=str)
    if not 0 <= int(index) < total:
        raise InvalidValueError(f"the shard index must be from 0 to {total - 1}, got {brief(index)}")
    return int(index), total


SHARD: Kind[tuple[int, int]] = Kind(
    '"K/N": shard K of N, K from 0 to N-1, N up to 1000', _shard, lambda s: f"{s[0]}/{s[1]}"
)


def _ascending_durations(value: RawValue) -> tuple[float, ...]:
    raw = value.raw
    if isinstance(raw, str):
        items: list[object] = [part for part in raw.split(",") if part.strip()]
    else:
        items = raw if isinstance(raw, list) else [raw]
    if not 1 <= len(items) <= 50:
        raise InvalidValueError(f"expected from 1 to 50 durations, got {len(items)}")
    bound = duration(at_most=86400.0)
    buckets = tuple(bound.parse(RawValue(item, value.source, value.from_text)) for item in items)
    if any(later <= earlier for earlier, later in itertools.pairwise(buckets)):
        raise InvalidValueError("the durations must be in ascending order, each larger than the one before")
    return buckets


ASCENDING_DURATIONS: Kind[tuple[float, ...]] = Kind(
    "list of 1 to 50 ascending durations, each up to 1d (comma-separated in the environment)",
    _ascending_durations,
    lambda buckets: ", ".join(format_duration(bucket) for bucket in buckets),
)


# -- patterns -------------------------------------------------------------------------------------------


def _pattern_texts(value: RawValue) -> list[str]:
    patterns = _as_list(value.raw, "a regular expression or a list of them")
    if not patterns:
        raise InvalidValueError("must not be empty")
    texts: list[str] = []
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise InvalidValueError(
                f"expected regular expressions as strings, found {describe_type(pattern)}"
            )
        try:
            compile_pattern(pattern)
        except PatternError as exc:
            raise InvalidValueError(f"invalid regular expression {quoted(pattern)}: {exc}") from None
        texts.append(pattern)
    return texts


def _show_pattern(pattern: NamePattern) -> str:
    return repr(pattern.pattern)


PATTERN: Kind[NamePattern] = Kind(
    "RE2 regular expression or a list of them (full match; one expression in the environment)",
    lambda value: compile_alternatives(_pattern_texts(value)),
    _show_pattern,
)
PATTERNS: Kind[tuple[NamePattern, ...]] = Kind(
    "list of names or RE2 regular expressions (full match; one expression in the environment)",
    lambda value: tuple(compile_pattern(text) for text in _pattern_texts(value)),
    lambda patterns: ", ".join(_show_pattern(pattern) for pattern in patterns) or "none",
)


# -- account entries ------------------------------------------------------------------------------------

# The authentication options of an entry of ``accounts``: those of ``nats``, each read by the same kind.
_ACCOUNT_AUTH: dict[str, Kind[object]] = {
    "user": TEXT,  # type: ignore[dict-item]  # each kind's value goes to the NatsAuth field of its name
    "password": SECRET,  # type: ignore[dict-item]
    "token": SECRET,  # type: ignore[dict-item]
    "nkey_seed_file": FILE_PATH,  # type: ignore[dict-item]
    "credentials_file": FILE_PATH,  # type: ignore[dict-item]
}
_ACCOUNT_ENTRY_KEYS = ("name", *_ACCOUNT_AUTH)
_ACCOUNT_AUTH_METHODS = ("password", "token", "nkey_seed_file", "credentials_file")


def _account_entry(item: object, where: str, value: RawValue) -> AccountEntry:
    if not isinstance(item, dict):
        raise InvalidValueError(
            f"expected a mapping with name and authentication keys, got {describe_type(item)}", key=where
        )
    fields: dict[str, object] = {}
    for raw_name, raw in item.items():
        name = str(raw_name)
        if name not in _ACCOUNT_ENTRY_KEYS:
            hint = (
                did_you_mean(name, _ACCOUNT_ENTRY_KEYS) or f"; known keys: {', '.join(_ACCOUNT_ENTRY_KEYS)}"
            )
            raise InvalidValueError(f"unknown key {name!r}{hint}", key=f"{where}.{name}")
        kind = TEXT if name == "name" else _ACCOUNT_AUTH[name]
        try:
            fields[name] = kind.parse(RawValue(raw, value.source, value.from_text, value.base_dir))
        except InvalidValueError as exc:
            raise InvalidValueError(exc.message, key=f"{where}.{name}") from None
    if "name" not in fields:
        raise InvalidValueError(
            "the account's name is required (as the server reports it)", key=f"{where}.name"
        )
    chosen = [name for name in _ACCOUNT_AUTH_METHODS if name in fields]
    if len(chosen) > 1:
        raise InvalidValueError(
            f"more than one authentication method: {' and '.join(chosen)}; choose one", key=where
        )
    if ("user" in fields) != ("password" in fields):
        missing = "password" if "user" in fields else "user"
        raise InvalidValueError(f"user and password go together: set {missing}", key=f"{where}.{missing}")
    account = str(fields.pop("name"))
    return AccountEntry(name=account, auth=NatsAuth(**fields))  # type: ignore[arg-type]  # parsed above


def _account_entries(value: RawValue) -> tuple[AccountEntry, ...]:
    if not isinstance(value.raw, list) or not value.raw:
        raise InvalidValueError(f"expected a non-empty list of accounts, got {describe_type(value.raw)}")
    entries: list[AccountEntry] = []
    for index, item in enumerate(value.raw):
        where = f"accounts[{index}]"
        entry = _account_entry(item, where, value)
        if any(entry.name == earlier.name for earlier in entries):
            raise InvalidValueError(f"account {quoted(entry.name)} is listed twice", key=f"{where}.name")
        entries.append(entry)
    return tuple(entries)


ACCOUNT_ENTRIES: Kind[tuple[AccountEntry, ...]] = Kind(
    "list of mappings: `name` and the authentication keys of `nats` (user/password, token, "
    "nkey_seed_file or credentials_file); password and token are secrets",
    _account_entries,
    lambda entries: ", ".join(entry.name for entry in entries) or "none",
)
