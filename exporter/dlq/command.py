"""The ``dlq`` subcommand: its flags (registered by ``exporter.cli``) and its handler."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any, Final

from nats.aio.client import Client

from exporter.argtypes import literal_subject, positive_int, stream_name, subject_filter
from exporter.config import secrets_in, settings_from_args
from exporter.connection import NatsConnectError, close_quietly, connect_nats
from exporter.dlq.actions import InspectorSession
from exporter.dlq.arguments import parse_sequences, parse_time_bound
from exporter.dlq.errors import EXIT_USAGE, InspectorError
from exporter.dlq.reading import API_TIMEOUT_SECONDS, DeadLetterReader, Selection
from exporter.jsapi import JetStreamApi, JetStreamRequestError
from exporter.logs import configure_logging
from exporter.settings import Settings

DEFAULT_STREAM: Final = "AI_DLQ"  # the platform spec's dead-letter stream
DEFAULT_LIST_LIMIT: Final = 100
CONNECTION_NAME: Final = "nats-jetstream-exporter-dlq"


def add_subcommand(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Register ``dlq`` with its actions; each action takes the shared flags of ``common``."""
    dlq = subparsers.add_parser(
        "dlq",
        help="inspect and replay dead letters without consuming them",
        description=(
            "Inspect a dead-letter stream without consuming or changing it (no consumer is created), "
            "and replay chosen dead letters to a subject. See docs/dead-letters.md."
        ),
    )
    actions = dlq.add_subparsers(title="actions", dest="dlq_action", metavar="ACTION", required=True)

    reading = argparse.ArgumentParser(add_help=False)
    reading.add_argument(
        "--stream",
        type=stream_name,
        metavar="NAME",
        help=f"the dead-letter stream (default: the first configured one, else {DEFAULT_STREAM})",
    )
    reading.add_argument("--json", action="store_true", help="print one JSON document, for scripts")

    filters = argparse.ArgumentParser(add_help=False)
    filters.add_argument(
        "--subject",
        type=subject_filter,
        metavar="SUBJECT",
        help="only these subjects (wildcards * and >)",
    )
    filters.add_argument(
        "--since",
        type=parse_time_bound,
        metavar="TIME",
        help="stored at or after TIME (RFC 3339, or 1h = 1h ago)",
    )
    filters.add_argument(
        "--until",
        type=parse_time_bound,
        metavar="TIME",
        help="stored at or before TIME (RFC 3339, or 1h = 1h ago)",
    )
    filters.add_argument("--limit", type=positive_int, metavar="N", help="at most N dead letters")

    listing = actions.add_parser(
        "list",
        parents=[common, reading, filters],
        help="list dead letters, oldest first",
        description=f"List dead letters, oldest first ({DEFAULT_LIST_LIMIT} unless --limit says otherwise).",
    )
    show = actions.add_parser(
        "show",
        parents=[common, reading],
        help="show one dead letter in full",
        description="Show one dead letter.",
    )
    show.add_argument("seq", type=positive_int, metavar="SEQ", help="the dead letter's stream sequence")
    show.add_argument(
        "--raw", action="store_true", help="write the payload's exact bytes to stdout, nothing else"
    )
    replay = actions.add_parser(
        "replay",
        parents=[common, reading, filters],
        help="republish chosen dead letters to a subject (dry run unless --yes)",
        description=(
            "Republish dead letters to --to. A dry run unless --yes is given; the dead letters stay in "
            "the stream unless --delete is given too. Choose them with --seq, the filters, or --all."
        ),
    )
    replay.add_argument("--to", required=True, type=literal_subject, metavar="SUBJECT", help="target subject")
    replay.add_argument(
        "--seq",
        action="append",
        type=parse_sequences,
        metavar="LIST",
        help="sequences, e.g. 3,5-7; repeatable",
    )
    replay.add_argument("--all", action="store_true", help="every dead letter in the stream")
    replay.add_argument("--yes", action="store_true", help="really publish (without it: a dry run)")
    replay.add_argument(
        "--delete", action="store_true", help="with --yes: delete each dead letter once it is republished"
    )
    for parser in (listing, show, replay):
        parser.set_defaults(handler=run_dlq, dlq_prog=parser.prog)


def run_dlq(args: argparse.Namespace) -> int:
    """The ``dlq`` handler: exit status 0, 1 (NATS or the stream failed us) or 2 (usage)."""
    settings = settings_from_args(args)  # a ConfigError goes to the CLI, which reports it (exit 2)
    configure_logging(settings.log, secrets=secrets_in(settings))
    try:
        return asyncio.run(_run_action(args, settings, time.time()))
    except InspectorError as exc:
        message = " ".join(str(exc).split())
        print(f"{getattr(args, 'dlq_prog', 'dlq')}: error: {message}", file=sys.stderr)
        return exc.exit_code


def stream_from(args: argparse.Namespace, settings: Settings) -> str:
    if getattr(args, "stream", None):
        return str(args.stream)
    return settings.dead_letter_streams[0] if settings.dead_letter_streams else DEFAULT_STREAM


def selection_from(args: argparse.Namespace, now: float) -> Selection:
    since = args.since.resolve(now) if args.since is not None else None
    until = args.until.resolve(now) if args.until is not None else None
    if since is not None and until is not None and since > until:
        raise InspectorError(
            f"--since {args.since.text} is after --until {args.until.text}", exit_code=EXIT_USAGE
        )
    limit = args.limit
    if limit is None and args.dlq_action == "list":
        limit = DEFAULT_LIST_LIMIT
    return Selection(subject=args.subject or ">", since=since, until=until, limit=limit)


def _check_replay_choice(args: argparse.Namespace) -> None:
    filtered = any(getattr(args, name) is not None for name in ("subject", "since", "until", "limit"))
    if args.seq and (filtered or args.all):
        raise InspectorError(
            "choose dead letters with --seq or with filters/--all, not both", exit_code=EXIT_USAGE
        )
    if not (args.seq or filtered or args.all):
        raise InspectorError(
            "say which dead letters to replay: --seq LIST, a filter "
            "(--subject/--since/--until/--limit) or --all",
            exit_code=EXIT_USAGE,
        )


async def _run_action(args: argparse.Namespace, settings: Settings, now: float) -> int:
    if args.dlq_action == "replay":
        _check_replay_choice(args)
    selection = selection_from(args, now) if args.dlq_action in {"list", "replay"} else Selection()
    nc = await _connect(settings)
    try:
        api = JetStreamApi(nc, domain=settings.nats.domain, timeout_seconds=API_TIMEOUT_SECONDS)
        reader = DeadLetterReader(api, stream_from(args, settings))
        try:
            session = InspectorSession(args, nc, api, reader, await reader.overview())
            if args.dlq_action == "list":
                return await session.run_list(selection)
            if args.dlq_action == "show":
                return await session.run_show()
            return await session.run_replay(selection)
        except JetStreamRequestError as exc:
            raise InspectorError(str(exc)) from None
    finally:
        await close_quietly(nc)


async def _connect(settings: Settings) -> Client:
    try:
        return await connect_nats(settings.nats, name=CONNECTION_NAME, reconnect=False)
    except NatsConnectError as exc:
        raise InspectorError(str(exc)) from None
