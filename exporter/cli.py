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
import sys
from collections.abc import Sequence
from typing import Any

from exporter.config import CONFIG_FILE_ENV, config_file_path, secrets_in, settings_from_args
from exporter.errors import ConfigError
from exporter.logs import configure_logging
from exporter.settings import Settings
from exporter.settingstable import ENV_PREFIX, SETTINGS, Setting, field_value

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
    """The flags shared by the daemon and every subcommand: ``--config`` and the table's rows with a flag.

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
    for setting in SETTINGS:
        if setting.flag is not None:
            group.add_argument(
                setting.flag,
                dest=setting.flag_dest,
                action="append" if setting.repeatable else "store",
                metavar=setting.metavar,
                help=flag_help(setting),
            )
    return common


def flag_help(setting: Setting) -> str:
    """A flag's --help line: the row's help, the key and variable it overrides, its default."""
    default = setting.default_text or setting.show(setting.default)
    repeat = "; repeatable" if setting.repeatable else ""
    return f"{setting.help}{repeat} ({setting.key}, {setting.env_name}; default: {default})"


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
    """``check-config``: exit 0 with every effective setting when all is valid; a ConfigError otherwise."""
    settings = settings_from_args(args)
    web_security = ""
    if settings.web.config_file is not None:
        from exporter.webconfig import load_web_config  # noqa: PLC0415 (lazy, like the daemon)

        web_security = f" ({load_web_config(settings.web.config_file).summary()})"
    print("configuration is valid")
    rows = summary(settings, config_file=config_file_path(args))
    width = max(len(label) for label, _ in rows) + 2
    for label, text in rows:
        extra = web_security if label == "web.config_file" else ""
        print(f"  {label + ':':<{width}}{text}{extra}")
    return 0


def summary(settings: Settings, *, config_file: str | None) -> list[tuple[str, str]]:
    """Every effective setting as (dotted key, value) rows; secrets show only as being set."""
    rows = [("config file", config_file or "none")]
    rows += [(setting.key, setting.show(field_value(settings, setting.field))) for setting in SETTINGS]
    rows.append(("scope in use", scope_in_use(settings)))
    return rows


def scope_in_use(settings: Settings) -> str:
    """The collection scope as far as it can be told without connecting."""
    if settings.collection.scope != "auto":
        return settings.collection.scope
    return "decided when connected: cluster for a system-account user, else account"
