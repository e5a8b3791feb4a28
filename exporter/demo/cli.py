"""The ``demo`` and ``provision`` subcommands (registered by ``exporter.cli`` through ``add_subcommand``)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from exporter.argtypes import positive_int
from exporter.config import secrets_in, settings_from_args
from exporter.connection import NatsConnectError, close_quietly, connect_nats
from exporter.demo.chaos import ChaosOptions
from exporter.demo.chathandler import HandlerOptions
from exporter.demo.platform import PlatformSpec, load_platform
from exporter.demo.provisioning import ProvisioningError, ProvisioningReport, apply_platform
from exporter.demo.runner import API_TIMEOUT_SECONDS, DEAD_LETTER_STREAM, DemoOptions, run_demo
from exporter.demo.traffic import TrafficOptions
from exporter.durations import format_duration, parse_duration
from exporter.jsapi import JetStreamApi, JetStreamRequestError
from exporter.logs import configure_logging
from exporter.natsserver import NatsServerError
from exporter.settings import LabelSettings, NatsSettings

DEMO_INTERVAL = "5s"
DEMO_METADATA_LABELS = ("team",)  # labels.from_metadata of the demo, unless configured
EXIT_FAILURE = 1


def add_subcommand(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add ``demo`` and ``provision``."""
    _add_demo(subparsers, common)
    _add_provision(subparsers, common)


def _add_demo(subparsers: Any, common: argparse.ArgumentParser) -> None:
    demo = subparsers.add_parser(
        "demo",
        parents=[common],
        help="run the AI platform's JetStream with traffic and failures, and the exporter watching it",
        description=(
            "Start a real nats-server (loopback, temporary store) with the AI platform's streams, the "
            "chat-handler consumer and the AI_DLQ dead-letter stream, publish the platform's traffic, run a "
            "chat handler that fails on purpose, and serve the exporter's /metrics. With --nats-url, use "
            "that server instead (the streams are created there and left in place); with --cluster, a "
            "3-node cluster (and with --chaos, servers stopped and restarted on a schedule). Stops on "
            f"Ctrl-C, SIGTERM or after --duration. Collects every {DEMO_INTERVAL} unless --interval is given."
        ),
    )
    demo.add_argument("--duration", type=_seconds, metavar="DURATION", help="stop by itself after this long")
    demo.add_argument(
        "--platform-file",
        type=Path,
        metavar="FILE",
        help="platform YAML (default: the built-in platform.yaml)",
    )
    traffic, handler = TrafficOptions(), HandlerOptions()
    demo.add_argument(
        "--users",
        type=positive_int,
        default=traffic.users,
        metavar="N",
        help="simulated users (default: %(default)s)",
    )
    rates = (
        ("--chat-rate", traffic.chat_rate, "chat messages"),
        ("--voice-rate", traffic.voice_rate, "voice requests"),
        ("--login-rate", traffic.login_rate, "logins"),
    )
    for flag, rate, what in rates:
        demo.add_argument(
            flag,
            type=_rate,
            default=rate,
            metavar="PER_SECOND",
            help=f"{what} per second (default: %(default)s)",
        )
    ratios = (
        (
            "--failure-ratio",
            handler.failure_ratio,
            "chat messages that fail on every delivery and end in AI_DLQ",
        ),
        ("--retry-ratio", handler.retry_ratio, "chat messages that fail once, then succeed"),
        (
            "--abandon-ratio",
            handler.abandon_ratio,
            "chat messages NAKed even on their last delivery, so the server gives up",
        ),
    )
    for flag, ratio, what in ratios:
        demo.add_argument(
            flag, type=_ratio, default=ratio, metavar="RATIO", help=f"{what} (default: %(default)s)"
        )
    demo.add_argument(
        "--nak-delay",
        type=_seconds,
        default=handler.nak_delay_seconds,
        metavar="DURATION",
        help=f"redelivery delay of a NAKed message (default: {format_duration(handler.nak_delay_seconds)})",
    )
    chaos = ChaosOptions()
    demo.add_argument(
        "--cluster",
        action="store_true",
        help="run a 3-node nats-server cluster instead of one server: streams on 3 replicas, a mirror of "
        "COMPANIONS_CHAT, and a system account for a second exporter",
    )
    demo.add_argument(
        "--chaos",
        action="store_true",
        help="with --cluster: stop a server on a schedule (every other time a leader), restart it later",
    )
    demo.add_argument(
        "--chaos-every",
        type=_seconds,
        default=chaos.every_seconds,
        metavar="DURATION",
        help=f"how often --chaos stops a server (default: {format_duration(chaos.every_seconds)})",
    )
    demo.add_argument(
        "--chaos-down",
        type=_seconds,
        default=chaos.down_seconds,
        metavar="DURATION",
        help=f"how long a stopped server stays down (default: {format_duration(chaos.down_seconds)})",
    )
    demo.set_defaults(handler=run_demo_command)


def _add_provision(subparsers: Any, common: argparse.ArgumentParser) -> None:
    provision = subparsers.add_parser(
        "provision",
        parents=[common],
        help="create or update the streams and consumers of a platform file on a NATS server",
        description=(
            "Apply a platform file (default: the built-in AI platform) to the NATS server of --nats-url or "
            "the configuration: create what is missing, update what differs, and report it. Refuses "
            "subjects that overlap before changing anything. Never deletes a stream or consumer."
        ),
    )
    provision.add_argument(
        "platform_file",
        nargs="?",
        type=Path,
        metavar="FILE",
        help="platform YAML (default: the built-in platform.yaml)",
    )
    provision.set_defaults(handler=run_provision_command)


def run_demo_command(args: argparse.Namespace) -> int:
    demo_args = argparse.Namespace(**vars(args))
    # The demo's own defaults, unless the user chose otherwise: a quick interval, and the platform's DLQ.
    if getattr(demo_args, "interval", None) is None:
        demo_args.interval = DEMO_INTERVAL
    if getattr(demo_args, "dead_letter_stream", None) is None:
        demo_args.dead_letter_stream = [DEAD_LETTER_STREAM]
    settings = settings_from_args(demo_args)
    if not settings.labels.from_metadata:
        # The platform file names each stream's and consumer's team: show it on the *_info series.
        settings = replace(settings, labels=LabelSettings(from_metadata=DEMO_METADATA_LABELS))
    configure_logging(settings.log, secrets=secrets_in(settings))
    try:
        handler = HandlerOptions(
            failure_ratio=args.failure_ratio,
            retry_ratio=args.retry_ratio,
            abandon_ratio=args.abandon_ratio,
            nak_delay_seconds=args.nak_delay,
        )
        traffic = TrafficOptions(
            users=args.users, chat_rate=args.chat_rate, voice_rate=args.voice_rate, login_rate=args.login_rate
        )
        chaos = ChaosOptions(args.chaos_every, args.chaos_down) if args.chaos else None
    except ValueError as exc:
        return _fail(f"demo: {exc}", status=2)
    if args.chaos and not args.cluster:
        return _fail(
            "demo: --chaos needs --cluster: it stops and restarts members of the demo's cluster", status=2
        )
    if args.cluster and getattr(args, "nats_url", None) is not None:
        return _fail("demo: --cluster starts a cluster of its own; it does not go with --nats-url", status=2)
    options = DemoOptions(
        settings=settings,
        use_existing_server=getattr(args, "nats_url", None) is not None,
        duration_seconds=args.duration,
        platform_file=args.platform_file,
        traffic=traffic,
        handler=handler,
        cluster=args.cluster,
        chaos=chaos,
    )
    try:
        return asyncio.run(run_demo(options))
    except (NatsServerError, NatsConnectError, ProvisioningError, JetStreamRequestError) as exc:
        return _fail(f"demo: {exc}")


def run_provision_command(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    configure_logging(settings.log, secrets=secrets_in(settings))
    platform = load_platform(args.platform_file)
    try:
        report = asyncio.run(provision(settings.nats, platform))
    except ProvisioningError as exc:
        if exc.report.outcomes:
            print(exc.report.render())
        return _fail(f"provision: {exc}")
    except (NatsConnectError, JetStreamRequestError) as exc:
        return _fail(f"provision: {exc}")
    print(report.render())
    return 0


async def provision(nats_settings: NatsSettings, platform: PlatformSpec) -> ProvisioningReport:
    """Connect with the exporter's settings (authentication, TLS, domain) and apply ``platform``."""
    nc = await connect_nats(nats_settings, name="nats-jetstream-exporter-provision", reconnect=False)
    try:
        api = JetStreamApi(nc, domain=nats_settings.domain, timeout_seconds=API_TIMEOUT_SECONDS)
        return await apply_platform(api, platform)
    finally:
        await close_quietly(nc)


def _fail(message: str, *, status: int = EXIT_FAILURE) -> int:
    print(" ".join(message.split()), file=sys.stderr)
    return status


def _seconds(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds < 0:
        raise argparse.ArgumentTypeError(f"duration {text!r} must not be negative")
    return seconds


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a rate of 0 or more per second, got {text!r}")
    return value


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a ratio from 0 to 1, e.g. 0.1, got {text!r}")
    return value
