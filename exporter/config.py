"""Settings from defaults, a YAML file, ``NATS_EXPORTER_*`` environment variables and flags.

Precedence rises in that order, key by key (a list given on a higher layer replaces the lower one). The keys,
their kinds, variables and flags are the rows of ``exporter.settingstable``; this module reads the layers,
parses every row, and applies the rules that tie settings together (one authentication method, the
deadline within the interval, ...). Every problem is a ``ConfigError`` naming where the value came from
(the file, ``env NAME`` or ``--flag``), the dotted key and what is wrong. Secret values are never quoted.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from exporter.collectionplan import exclusion_problem
from exporter.durations import format_duration
from exporter.errors import ConfigError
from exporter.monitoring import label_collisions
from exporter.settings import NatsTls, Secret, Settings
from exporter.settingstable import ENV_KEYS, ENV_PREFIX, LOG_FORMATS, LOG_LEVELS, SETTINGS, Setting
from exporter.valuekinds import InvalidValueError, RawValue
from exporter.yamlfiles import describe_type, read_yaml_file, unknown_key_message

# ENV_KEYS, ENV_PREFIX and the log choices are re-exported: callers read them here, next to the settings.
__all__ = [
    "CONFIG_FILE_ENV",
    "ENV_KEYS",
    "ENV_PREFIX",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "EncryptedKeyError",
    "config_file_path",
    "load_config_file",
    "refuse_encrypted_key",
    "secrets_in",
    "settings_from_args",
]

CONFIG_FILE_ENV = f"{ENV_PREFIX}CONFIG"
_AUTH_METHODS = ("nats.password", "nats.token", "nats.nkey_seed_file", "nats.credentials_file")
# Used as the deadline's share of the interval when only the interval is set, so `--interval 5s` works.
_DEFAULT_DEADLINE_SHARE = 2 / 3


# -- the layers: raw values and where they came from ---------------------------------------------------------


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The YAML configuration file as a mapping ({} when empty); ConfigError if unreadable or not YAML."""
    data = read_yaml_file(path, what="configuration file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"the configuration file must be a mapping of keys, not {describe_type(data)}", source=str(path)
        )
    return data


def _children_by_section() -> dict[str, set[str]]:
    children: dict[str, set[str]] = {}
    for setting in SETTINGS:
        parts = setting.key.split(".")
        for depth in range(len(parts)):
            children.setdefault(".".join(parts[:depth]), set()).add(parts[depth])
    return children


_SECTION_CHILDREN = _children_by_section()
_KEYS = frozenset(setting.key for setting in SETTINGS)


def _file_values(path: str) -> dict[str, RawValue]:
    values: dict[str, RawValue] = {}
    _flatten(load_config_file(path), "", path, Path(path).parent, values)
    return values


def _flatten(tree: object, section: str, source: str, base_dir: Path, out: dict[str, RawValue]) -> None:
    if not isinstance(tree, dict):
        raise ConfigError(
            f"expected a mapping of keys, got {describe_type(tree)}", source=source, key=section
        )
    for raw_name, raw_value in tree.items():
        name = str(raw_name)
        key = f"{section}.{name}" if section else name
        if name not in _SECTION_CHILDREN[section]:
            by_leaf = {known.rsplit(".", 1)[-1]: known for known in sorted(_KEYS)}
            message = unknown_key_message(
                name, section, sorted(_SECTION_CHILDREN[section]), elsewhere=by_leaf
            )
            raise ConfigError(message, source=source, key=key)
        if raw_value is None:  # `key:` with nothing after it: left at its default
            continue
        if key in _KEYS:
            out[key] = RawValue(raw_value, source, from_text=False, base_dir=base_dir)
        else:
            _flatten(raw_value, key, source, base_dir, out)


def _env_values(environ: Mapping[str, str]) -> dict[str, RawValue]:
    # Other NATS_EXPORTER_* variables are ignored, not refused: Kubernetes injects NATS_EXPORTER_SERVICE_HOST
    # and friends into every pod when a Service is called nats-exporter.
    values: dict[str, RawValue] = {}
    for setting in SETTINGS:
        name = setting.env_name
        text = environ.get(name, "") if name is not None else ""
        if name is not None and text.strip():  # empty means unset, as with an optional Secret not there
            values[setting.key] = RawValue(text, f"env {name}", from_text=True)
    return values


def _flag_values(args: argparse.Namespace) -> dict[str, RawValue]:
    values: dict[str, RawValue] = {}
    for setting in SETTINGS:
        raw = getattr(args, setting.flag_dest, None) if setting.flag_dest is not None else None
        if raw is not None and setting.flag is not None:
            values[setting.key] = RawValue(raw, setting.flag, from_text=True)
    return values


def config_file_path(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> str | None:
    """The configuration file named by ``--config`` or, failing that, NATS_EXPORTER_CONFIG."""
    flag = getattr(args, "config", None)
    if flag:
        return str(flag)
    env = os.environ if environ is None else environ
    return env.get(CONFIG_FILE_ENV, "").strip() or None


class _Layers:
    """The winning raw value of every key that was set, and the errors that name its source."""

    def __init__(self, values: Mapping[str, RawValue]) -> None:
        self._values = values

    def is_set(self, key: str) -> bool:
        return key in self._values

    def source(self, key: str) -> str:
        value = self._values.get(key)
        return value.source if value is not None else "default"

    def error(self, key: str, message: str) -> ConfigError:
        value = self._values.get(key)
        return ConfigError(message, source=value.source if value is not None else None, key=key)

    def parse(self, setting: Setting) -> object:
        value = self._values.get(setting.key)
        if value is None:
            return setting.default
        try:
            return setting.kind.parse(value)
        except InvalidValueError as exc:
            raise ConfigError(exc.message, source=value.source, key=exc.key or setting.key) from None


# -- building the settings ---------------------------------------------------------------------------------


def settings_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Settings:
    """Defaults < the YAML file (``--config`` or NATS_EXPORTER_CONFIG) < environment < flags, validated."""
    env = os.environ if environ is None else environ
    values: dict[str, RawValue] = {}
    path = config_file_path(args, env)
    if path is not None:
        values.update(_file_values(path))
    values.update(_env_values(env))
    values.update(_flag_values(args))
    layers = _Layers(values)
    settings = Settings()
    for setting in SETTINGS:
        settings = _with_field(settings, setting.field, layers.parse(setting))
    settings = _derive_collection_defaults(settings, layers)
    _check_auth(settings, layers)
    _check_collection(settings, layers)
    _check_tls_material(settings.nats.tls, layers)
    _check_metadata_labels(settings, layers)
    _check_metric_exclusions(settings, layers)
    return settings


def _with_field(settings: Any, path: str, value: object) -> Any:
    """A copy of the frozen ``settings`` with the attribute at the dotted ``path`` replaced."""
    name, _, rest = path.partition(".")
    new = _with_field(getattr(settings, name), rest, value) if rest else value
    return dataclasses.replace(settings, **{name: new})


def _derive_collection_defaults(settings: Settings, layers: _Layers) -> Settings:
    """An unset deadline and request timeout shrink with a short interval, so `--interval 3s` alone works."""
    collection = settings.collection
    if not layers.is_set("collection.deadline"):
        share = collection.interval_seconds * _DEFAULT_DEADLINE_SHARE
        collection = dataclasses.replace(collection, deadline_seconds=min(collection.deadline_seconds, share))
    if not layers.is_set("collection.request_timeout"):
        timeout = min(collection.request_timeout_seconds, collection.deadline_seconds)
        collection = dataclasses.replace(collection, request_timeout_seconds=timeout)
    return dataclasses.replace(settings, collection=collection)


def _check_collection(settings: Settings, layers: _Layers) -> None:
    collection = settings.collection
    interval, deadline = collection.interval_seconds, collection.deadline_seconds
    if deadline >= interval:
        raise layers.error(
            "collection.deadline",
            f"the deadline ({format_duration(deadline)}) must be shorter than collection.interval "
            f"({format_duration(interval)}, {layers.source('collection.interval')})",
        )
    if collection.request_timeout_seconds > deadline:
        raise layers.error(
            "collection.request_timeout",
            f"the request timeout ({format_duration(collection.request_timeout_seconds)}) must not be longer "
            f"than collection.deadline ({format_duration(deadline)}, {layers.source('collection.deadline')})",
        )


def _check_metadata_labels(settings: Settings, layers: _Layers) -> None:
    for name, keys in label_collisions(settings.labels.from_metadata).items():
        raise layers.error(
            "labels.from_metadata", f"keys {', '.join(map(repr, keys))} would all become the label {name}"
        )


def _check_metric_exclusions(settings: Settings, layers: _Layers) -> None:
    problem = exclusion_problem(settings.metrics)
    if problem is not None:
        raise layers.error("metrics.exclude", problem)


def _check_auth(settings: Settings, layers: _Layers) -> None:
    auth = settings.nats.auth
    chosen = [key for key in _AUTH_METHODS if layers.is_set(key)]
    if len(chosen) > 1:
        named = " and ".join(f"{key} ({layers.source(key)})" for key in chosen)
        raise layers.error(chosen[-1], f"more than one authentication method: {named}; choose one")
    if auth.password is not None and auth.user is None:
        raise layers.error("nats.password", "a password needs a user: set nats.user")
    if auth.user is not None and auth.password is None:
        raise layers.error("nats.user", "a user needs a password: set nats.password")
    tls = settings.nats.tls
    if tls.key_file is not None and tls.cert_file is None:
        raise layers.error(
            "nats.tls.key_file", "a client key needs a client certificate: set nats.tls.cert_file"
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
    auths = (settings.nats.auth, *(entry.auth for entry in settings.accounts))
    return tuple(secret for auth in auths for secret in (auth.password, auth.token) if secret is not None)
