"""Command line: the daemon's flags and the subcommands.

Subcommand modules listed in SUBCOMMAND_MODULES expose ``add_subcommand(subparsers, common)`` which
adds a subparser (with ``parents=[common]`` for the shared flags) and sets ``handler`` via
``set_defaults(handler=...)``; a handler takes the parsed ``argparse.Namespace`` and returns an exit code.
A handler that needs the settings calls ``exporter.config.settings_from_args(args)``; a ConfigError it
raises is reported like any other (one line, exit status 2).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import re
import sys
from collections.abc import Sequence
from typing import Any

from exporter.config import (
    CONFIG_FILE_ENV,
    ENV_PREFIX,
    LOG_FORMATS,
    LOG_LEVELS,
    config_file_path,
    secrets_in,
    settings_from_args,
)
from exporter.durations import format_duration
from exporter.errors import ConfigError
from exporter.logs import configure_logging
from exporter.settings import DEFAULT_LISTEN_ADDRESS, DEFAULT_NATS_URL, Settings

PROG = "nats-jetstream-exporter"
SUBCOMMAND_MODULES: tuple[str, ...] = ("exporter.dlq.command", "exporter.demo.cli")
EXIT_CONFIG_ERROR = 2
EXIT_INTERRUPTED = 130


def version_text() -> str:
    """The exporter's version and the versions that matter in a bug report, as build_info reports them."""
    from exporter.metrics import current_build_info  # noqa: PLC0415 (prometheus_client: only for --version)

    build = current_build_info()
    return f"{PROG} {build.version} (Python {build.python_version}, nats-py {build.nats_py_version})"


class _PrintVersion(argparse.Action):
    """``--version``, its text built only when asked for: every other run is spared the metrics module."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        _namespace: argparse.Namespace,
        _values: str | Sequence[Any] | None,
        _option_string: str | None = None,
    ) -> None:
        print(version_text())
        parser.exit()


def common_parser() -> argparse.ArgumentParser:
    """The flags shared by the daemon and every subcommand.

    Their default is SUPPRESS: a flag given before the subcommand is not overwritten by the subparser's
    default, and an absent flag leaves the environment and the file in charge.
    """
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    group = common.add_argument_group(
        "configuration",
        f"Flags override {ENV_PREFIX}* environment variables, which override the --config file. "
        "See docs/configuration.md.",
    )
    group.add_argument(
        "--config",
        metavar="FILE",
        help=f"YAML configuration file (environment: {CONFIG_FILE_ENV})",
    )
    group.add_argument(
        "--nats-url",
        action="append",
        metavar="URL",
        help=f"NATS server URL; repeat or comma-separate for a cluster (default: {DEFAULT_NATS_URL})",
    )
    group.add_argument(
        "--web.listen-address",
        dest="web_listen_address",
        metavar="HOST:PORT",
        help=(
            f"address for /metrics: HOST:PORT, :PORT or [IPv6]:PORT (default: {DEFAULT_LISTEN_ADDRESS}, "
            "outside the fully allocated Prometheus exporter range 9100-9999)"
        ),
    )
    group.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="FILE",
        help="web configuration file for TLS and basic authentication on /metrics",
    )
    group.add_argument(
        "--interval",
        metavar="DURATION",
        help='time between collections, e.g. "15s" or "1m" (default: 15s)',
    )
    group.add_argument(
        "--dead-letter-stream",
        action="append",
        metavar="NAME",
        help="a stream holding dead letters, e.g. AI_DLQ; repeatable",
    )
    group.add_argument(
        "--log-level",
        metavar="LEVEL",
        help=f"{', '.join(LOG_LEVELS)} (default: info)",
    )
    group.add_argument(
        "--log-format",
        metavar="FORMAT",
        help=f"{' or '.join(LOG_FORMATS)} (default: text)",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = common_parser()
    parser = argparse.ArgumentParser(
        prog=PROG,
        parents=[common],
        description="Prometheus exporter for NATS JetStream. Without a subcommand, runs the exporter.",
    )
    parser.add_argument("--version", action=_PrintVersion, help="show the version and exit")
    subparsers = parser.add_subparsers(title="subcommands", metavar="[SUBCOMMAND]")
    check = subparsers.add_parser(
        "check-config",
        parents=[common],
        help="validate the configuration, print a summary (no secrets) and exit",
        description=(
            "Validate the whole configuration (file, environment, flags, referenced files) without "
            "connecting to NATS. Exit status 0 when valid, 2 otherwise."
        ),
    )
    check.set_defaults(handler=check_config)
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).add_subcommand(subparsers, common)
    return parser


def run_cli(argv: Sequence[str]) -> int:
    """Parse ``argv`` and run the daemon or a subcommand; the process exit status."""
    try:
        return _dispatch(argv)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _dispatch(argv: Sequence[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exit_:  # --help, --version and usage errors: argparse has printed already
        return exit_.code if isinstance(exit_.code, int) else EXIT_CONFIG_ERROR
    try:
        handler = getattr(args, "handler", None)
        if handler is not None:
            return int(handler(args))
        return run_daemon_from_args(args)
    except ConfigError as error:
        message = " ".join(str(error).split())  # one line, whatever the message holds
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return EXIT_CONFIG_ERROR


def run_daemon_from_args(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    configure_logging(settings.log, secrets=secrets_in(settings))
    # Imported here so that --help, --version and check-config never load the daemon's dependencies.
    from exporter.app import run_daemon  # noqa: PLC0415 (deliberately lazy, see above)

    return asyncio.run(run_daemon(settings))


def check_config(args: argparse.Namespace) -> int:
    """``check-config``: exit 0 with a summary when everything is valid; a ConfigError otherwise."""
    settings = settings_from_args(args)
    web_security = "none (plain HTTP, no authentication)"
    if settings.web.config_file is not None:
        from exporter.webconfig import load_web_config  # noqa: PLC0415 (lazy, like the daemon)

        web_config = load_web_config(settings.web.config_file)
        web_security = f"{settings.web.config_file} ({web_config.summary()})"
    print("configuration is valid")
    for label, text in summary(settings, config_file=config_file_path(args), web_security=web_security):
        print(f"  {label + ':':<22}{text}")
    return 0


def summary(settings: Settings, *, config_file: str | None, web_security: str) -> list[tuple[str, str]]:
    """What the exporter will do, as (label, text) rows; secrets show only as being set."""
    nats, collection, filters = settings.nats, settings.collection, settings.filters
    return [
        ("config file", config_file or "none"),
        ("nats servers", ", ".join(nats.servers)),
        ("authentication", _auth_summary(settings)),
        ("tls", _tls_summary(settings)),
        ("jetstream domain", nats.domain or "none (the account's default)"),
        ("account label", nats.account or "asked from the server"),
        ("connect timeout", format_duration(nats.connect_timeout_seconds)),
        ("listen address", settings.web.listen_address),
        ("web config file", web_security),
        (
            "collection",
            (
                f"every {format_duration(collection.interval_seconds)}, "
                f"deadline {format_duration(collection.deadline_seconds)}, "
                f"{collection.concurrency} requests in flight"
            ),
        ),
        ("stale data kept for", format_duration(collection.stale_data_ttl_seconds)),
        ("lag look-ups", f"at most {collection.lag_lookups_per_cycle} per cycle"),
        ("streams", _filter_summary(filters.stream_include, filters.stream_exclude, "all streams")),
        ("consumers", _filter_summary(filters.consumer_include, filters.consumer_exclude, "all consumers")),
        ("dead-letter streams", ", ".join(settings.dead_letter_streams) or "none"),
        ("log", f"level {settings.log.level}, format {settings.log.format}"),
    ]


def _auth_summary(settings: Settings) -> str:
    auth = settings.nats.auth
    if auth.user is not None:
        return f"user {auth.user!r} with a password"
    if auth.token is not None:
        return "token"
    if auth.nkey_seed_file is not None:
        return f"NKey seed file {auth.nkey_seed_file}"
    if auth.credentials_file is not None:
        return f"credentials file {auth.credentials_file}"
    return "none"


def _tls_summary(settings: Settings) -> str:
    tls = settings.nats.tls
    parts = [f"{name} {path}" for name, path in (("CA", tls.ca_file), ("cert", tls.cert_file)) if path]
    if tls.key_file:
        parts.append(f"key {tls.key_file}")
    if parts:
        return ", ".join(parts)
    if any(server.startswith(("tls://", "wss://")) for server in settings.nats.servers):
        return "system CA certificates"
    return "off"


def _filter_summary(include: re.Pattern[str] | None, exclude: re.Pattern[str] | None, everything: str) -> str:
    parts = [
        f"{word} {pattern.pattern!r}"
        for word, pattern in (("include", include), ("exclude", exclude))
        if pattern is not None
    ]
    return ", ".join(parts) if parts else everything
