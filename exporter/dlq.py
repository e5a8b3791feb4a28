"""The dead-letter inspector: ``dlq list``, ``dlq show SEQ`` and ``dlq replay``.

It reads with ``$JS.API.STREAM.MSG.GET`` only, walking sequences with ``next_by_subj``: no consumer is
created and nothing is acknowledged, so inspecting leaves the stream and every consumer as they were.
``replay`` publishes only with ``--yes`` and removes a dead letter only with ``--delete`` as well.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

import nats.errors
from nats.aio.client import Client

from exporter.cli import positive_int
from exporter.config import secrets_in, settings_from_args
from exporter.connection import NatsConnectError, close_quietly, connect_nats
from exporter.durations import parse_duration
from exporter.jsapi import (
    NO_MESSAGE_FOUND,
    STREAM_NOT_FOUND,
    JetStreamApi,
    JetStreamApiError,
    JetStreamRequestError,
    api_error_from_reply,
)
from exporter.logs import configure_logging
from exporter.parse import parse_timestamp
from exporter.payload import (
    correlation_ids,
    decode_payload,
    format_timestamp,
    payload_document,
    pretty_payload,
    summarize_payload,
    terminal_safe,
)
from exporter.settings import Settings, validate_stream_name

DEFAULT_STREAM: Final = "AI_DLQ"  # the platform spec's dead-letter stream
DEFAULT_LIST_LIMIT: Final = 100
API_TIMEOUT_SECONDS: Final = 5.0
MAX_SEQUENCES: Final = 10_000  # one --seq list, so a typo like 1-99999999 cannot start a storm
# Added to every replayed message, so the handler's logs can tell a replay from a first delivery.
REPLAY_HEADER: Final = "Dlq-Replayed-From"
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
CONNECTION_NAME: Final = "nats-jetstream-exporter-dlq"
SUMMARY_WIDTH: Final = 72


class InspectorError(Exception):
    """A failure the user can understand from one line: exit status 1, or 2 for a usage error."""

    def __init__(self, message: str, *, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# -- argument types -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimeBound:
    """``--since``/``--until``: an absolute time, or a duration meaning "that long ago"."""

    text: str
    absolute: float | None = None
    ago_seconds: float | None = None

    def resolve(self, now: float) -> float:
        if self.absolute is not None:
            return self.absolute
        return now - (self.ago_seconds or 0.0)


def parse_time_bound(text: str) -> TimeBound:
    """An RFC 3339 time with its offset (``2026-02-01T14:30:00Z``) or a duration ago (``90m``, ``2d12h``)."""
    stripped = text.strip()
    if "T" in stripped or "-" in stripped[1:]:
        try:
            moment = dt.datetime.fromisoformat(stripped)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid time {text!r}: use RFC 3339 like 2026-02-01T14:30:00Z, or a duration like 1h"
            ) from None
        if moment.tzinfo is None:
            raise argparse.ArgumentTypeError(
                f"time {text!r} has no offset: add Z for UTC or +HH:MM, e.g. 2026-02-01T14:30:00Z"
            )
        return TimeBound(text, absolute=moment.timestamp())
    try:
        seconds = parse_duration(stripped)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid time {text!r}: use a duration ago like 30m, 1h, 2d, "
            "or RFC 3339 like 2026-02-01T14:30:00Z"
        ) from None
    if seconds < 0:
        raise argparse.ArgumentTypeError(f"duration {text!r} must not be negative")
    return TimeBound(text, ago_seconds=seconds)


def _subject_tokens(text: str) -> list[str]:
    if not text or any(char.isspace() for char in text):
        raise argparse.ArgumentTypeError(f"invalid subject {text!r}: empty or contains whitespace")
    tokens = text.split(".")
    if any(not token for token in tokens):
        raise argparse.ArgumentTypeError(f"invalid subject {text!r}: empty token")
    return tokens


def parse_subject_filter(text: str) -> str:
    """A subject with NATS wildcards: ``*`` for one token, ``>`` for the rest (last token only)."""
    parts = _subject_tokens(text)
    for index, part in enumerate(parts):
        if (">" in part and (part != ">" or index != len(parts) - 1)) or ("*" in part and part != "*"):
            raise argparse.ArgumentTypeError(
                f"invalid subject filter {text!r}: '*' and '>' must be whole tokens, '>' only at the end"
            )
    return text


def parse_literal_subject(text: str) -> str:
    """A subject to publish to: no wildcards."""
    if any("*" in part or ">" in part for part in _subject_tokens(text)):
        raise argparse.ArgumentTypeError(f"cannot publish to {text!r}: a target subject has no wildcards")
    return text


def parse_sequences(text: str) -> tuple[int, ...]:
    """``--seq 3,5-7`` -> (3, 5, 6, 7)."""
    sequences: list[int] = []
    for part in (piece.strip() for piece in text.split(",")):
        first, dash, last = part.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise argparse.ArgumentTypeError(f"invalid sequence {part!r}: use numbers and ranges like 3,5-7")
        low, high = int(first), int(last) if dash else int(first)
        if low < 1 or high < low:
            raise argparse.ArgumentTypeError(f"invalid sequence range {part!r}")
        if high - low >= MAX_SEQUENCES:
            raise argparse.ArgumentTypeError(f"range {part!r} is longer than {MAX_SEQUENCES} sequences")
        sequences.extend(range(low, high + 1))
    return tuple(sequences)


def parse_stream_name(text: str) -> str:
    problem = validate_stream_name(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"invalid stream name {text!r}: {problem}")
    return text


# -- stored messages ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One stored message of the dead-letter stream, as ``STREAM.MSG.GET`` returns it."""

    seq: int
    subject: str
    time: str  # the server's RFC 3339 text, nanoseconds included
    timestamp: float
    headers: tuple[tuple[str, str], ...]
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


def parse_headers(raw: bytes) -> tuple[tuple[str, str], ...]:
    """``NATS/1.0\\r\\nKey: Value\\r\\n...`` -> ((key, value), ...), in order, repeated keys kept."""
    lines = raw.decode("utf-8", errors="replace").split("\r\n")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:  # the first line is the version (and status, never stored)
        key, colon, value = line.partition(":")
        if colon and key.strip():
            headers.append((key.strip(), value.strip()))
    return tuple(headers)


def parse_dead_letter(reply: dict[str, Any]) -> DeadLetter:
    """A ``STREAM.MSG.GET`` reply (without ``error``) -> the stored message."""
    try:
        message = reply["message"]
        time_text = str(message.get("time", ""))
        return DeadLetter(
            seq=int(message["seq"]),
            subject=str(message["subject"]),
            time=time_text,
            timestamp=parse_timestamp(time_text) or 0.0,
            headers=parse_headers(base64.b64decode(message.get("hdrs") or "", validate=True)),
            data=base64.b64decode(message.get("data") or "", validate=True),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # binascii.Error is a ValueError
        raise InspectorError(f"unexpected STREAM.MSG.GET reply from the server ({exc!r})") from None


@dataclass(frozen=True, slots=True)
class StreamOverview:
    name: str
    messages: int
    first_seq: int
    last_seq: int


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters: a subject filter, a time window and a count (applied in stream order)."""

    subject: str = ">"
    since: float | None = None
    until: float | None = None
    limit: int | None = None


class DeadLetterReader:
    """Reads one stream's messages without consuming them."""

    def __init__(self, api: JetStreamApi, stream: str) -> None:
        self._api = api
        self.stream = stream

    async def overview(self) -> StreamOverview:
        try:
            info = await self._api.request_json(f"STREAM.INFO.{self.stream}")
        except JetStreamApiError as exc:
            if exc.err_code == STREAM_NOT_FOUND:
                raise InspectorError(
                    f"stream {self.stream} does not exist (choose one with --stream)"
                ) from None
            raise
        try:
            state = info.get("state", {})
            return StreamOverview(
                name=self.stream,
                messages=int(state.get("messages", 0)),
                first_seq=int(state.get("first_seq", 0)),
                last_seq=int(state.get("last_seq", 0)),
            )
        except (TypeError, ValueError, AttributeError) as exc:
            raise InspectorError(f"unexpected STREAM.INFO reply from the server ({exc!r})") from None

    async def message(self, seq: int) -> DeadLetter | None:
        return await self._get({"seq": seq})

    async def next_message(self, seq: int, subject: str) -> DeadLetter | None:
        """The first message at or after ``seq`` whose subject matches ``subject``."""
        return await self._get({"seq": seq, "next_by_subj": subject})

    async def first_since(self, since: float, subject: str) -> DeadLetter | None:
        """The first message stored at or after ``since`` whose subject matches."""
        start = dt.datetime.fromtimestamp(since, tz=dt.UTC).isoformat().replace("+00:00", "Z")
        found = await self._get({"start_time": start, "next_by_subj": subject})
        # nats-server 2.15 answers a start_time after the last message with the stream's first message:
        # an earlier message than asked for means there is none at or after it.
        if found is None or found.timestamp < since:
            return None
        return found

    async def select(self, selection: Selection, overview: StreamOverview) -> tuple[list[DeadLetter], bool]:
        """The selected dead letters in stream order, and whether the limit left more behind."""
        if overview.messages == 0:
            return [], False
        if selection.since is not None:
            current = await self.first_since(selection.since, selection.subject)
        else:
            current = await self.next_message(overview.first_seq, selection.subject)
        found: list[DeadLetter] = []
        # Bounded by the last sequence seen up front: dead letters arriving meanwhile do not extend the walk.
        while current is not None and current.seq <= overview.last_seq:
            if selection.until is not None and current.timestamp > selection.until:
                break
            if selection.limit is not None and len(found) >= selection.limit:
                return found, True
            found.append(current)
            current = await self.next_message(current.seq + 1, selection.subject)
        return found, False

    async def delete(self, seq: int) -> bool:
        """Remove one message (only ``replay --yes --delete`` does this); True when the server confirms."""
        reply = await self._api.request_json(f"STREAM.MSG.DELETE.{self.stream}", {"seq": seq})
        return bool(reply.get("success"))

    async def _get(self, request: dict[str, Any]) -> DeadLetter | None:
        try:
            reply = await self._api.request_json(f"STREAM.MSG.GET.{self.stream}", request)
        except JetStreamApiError as exc:
            if exc.err_code == NO_MESSAGE_FOUND:
                return None
            if exc.err_code == STREAM_NOT_FOUND:
                raise InspectorError(f"stream {self.stream} was deleted while reading it") from None
            raise
        return parse_dead_letter(reply)


# -- replay ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplayTarget:
    subject: str
    stream: str | None  # the stream that stores the subject; None: core NATS, current subscribers only


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    letter: DeadLetter
    published: bool = False
    target_seq: int | None = None
    duplicate: bool = False
    deleted: bool = False
    error: str | None = None


async def resolve_target(api: JetStreamApi, subject: str) -> ReplayTarget:
    reply = await api.request_json("STREAM.NAMES", {"subject": subject})
    streams = reply.get("streams") or []
    return ReplayTarget(subject, str(streams[0]) if streams else None)


def replay_headers(letter: DeadLetter, stream: str) -> dict[str, str]:
    """The dead letter's own headers, minus the server-interpreted ``Nats-*`` ones, plus the provenance.

    ``Nats-Msg-Id`` would make the target stream drop the replay as a duplicate, and ``Nats-Expected-*``
    would make it refuse it.
    """
    headers = {key: value for key, value in letter.headers if not key.lower().startswith("nats-")}
    headers[REPLAY_HEADER] = f"{stream}/{letter.seq}"
    return headers


async def replay_letters(
    nc: Client,
    reader: DeadLetterReader,
    letters: Sequence[DeadLetter],
    target: ReplayTarget,
    *,
    delete: bool,
) -> list[ReplayOutcome]:
    """Publish each dead letter to the target, in order; stop at the first failure."""
    outcomes: list[ReplayOutcome] = []
    for letter in letters:
        outcome = await _publish(nc, letter, target, reader.stream)
        if outcome.published and delete:
            outcome = await _delete(reader, outcome)
        outcomes.append(outcome)
        if outcome.error is not None:
            break
    return outcomes


async def _publish(nc: Client, letter: DeadLetter, target: ReplayTarget, stream: str) -> ReplayOutcome:
    headers = replay_headers(letter, stream)
    try:
        if target.stream is None:
            await nc.publish(target.subject, letter.data, headers=headers)
            # A core publish is only buffered: the flush's round trip proves the server has it, before
            # --delete may remove the dead letter.
            await nc.flush(timeout=int(API_TIMEOUT_SECONDS))
            return ReplayOutcome(letter, published=True)
        reply = await nc.request(target.subject, letter.data, timeout=API_TIMEOUT_SECONDS, headers=headers)
    except nats.errors.NoRespondersError:
        return ReplayOutcome(letter, error=f"no stream stores {target.subject} any more")
    except nats.errors.TimeoutError:
        return ReplayOutcome(letter, error=f"no confirmation from {target.stream or 'the server'} in time")
    except nats.errors.Error as exc:
        return ReplayOutcome(letter, error=f"publishing failed: {exc or type(exc).__name__}")
    return outcome_from_ack(letter, target, reply.data)


def outcome_from_ack(letter: DeadLetter, target: ReplayTarget, data: bytes) -> ReplayOutcome:
    """The result of a JetStream publish from the stream's acknowledgement (a PubAck or an error)."""
    try:
        ack = json.loads(data)
    except ValueError:
        ack = None
    if not isinstance(ack, dict):
        return ReplayOutcome(letter, error=f"stream {target.stream} sent an acknowledgement that is not JSON")
    error = api_error_from_reply(target.subject, ack)
    if error is not None:
        return ReplayOutcome(letter, error=f"stream {target.stream} refused it: {error.description}")
    try:
        target_seq = int(ack.get("seq", 0))
    except (TypeError, ValueError):
        # Not marked published: without a sequence nothing proves the stream stored it, so --delete must
        # not remove the dead letter, and the replay stops here.
        return ReplayOutcome(
            letter, error=f"stream {target.stream} sent an acknowledgement without a valid sequence"
        )
    return ReplayOutcome(letter, published=True, target_seq=target_seq, duplicate=bool(ack.get("duplicate")))


async def _delete(reader: DeadLetterReader, outcome: ReplayOutcome) -> ReplayOutcome:
    try:
        confirmed = await reader.delete(outcome.letter.seq)
    except (JetStreamRequestError, InspectorError) as exc:
        return replace(outcome, error=f"published, but deleting the dead letter failed: {exc}")
    if not confirmed:
        return replace(outcome, error="published, but the server did not confirm the deletion")
    return replace(outcome, deleted=True)


# -- output ---------------------------------------------------------------------------------------------


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    widths = [max(len(row[index]) for row in [header, *rows]) for index in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def _letter_row(letter: DeadLetter) -> list[str]:
    decoded = decode_payload(letter.data)
    return [
        str(letter.seq),
        format_timestamp(letter.timestamp),
        str(letter.size),
        terminal_safe(letter.subject, keep_newlines=False),
        decoded.encoding.value,
        summarize_payload(decoded, width=SUMMARY_WIDTH),
    ]


LETTER_HEADER: Final = ("SEQ", "TIME", "SIZE", "SUBJECT", "ENCODING", "SUMMARY")


def letter_document(letter: DeadLetter) -> dict[str, Any]:
    """One dead letter for ``--json``: bytes fields described, everything else as decoded."""
    decoded = decode_payload(letter.data)
    headers: dict[str, list[str]] = {}
    for key, value in letter.headers:
        headers.setdefault(key, []).append(value)
    return {
        "seq": letter.seq,
        "subject": letter.subject,
        "time": letter.time,
        "timestamp": letter.timestamp,
        "size": letter.size,
        "headers": headers,
        "encoding": decoded.encoding.value,
        **correlation_ids(decoded),
        "payload": payload_document(decoded),
    }


def render_list(overview: StreamOverview, letters: Sequence[DeadLetter], *, more: bool) -> str:
    if not letters:
        return f"no dead letters match in {overview.name} (it holds {overview.messages} messages)"
    lines = [render_table(LETTER_HEADER, [_letter_row(letter) for letter in letters]), ""]
    lines.append(
        f"{len(letters)} shown; {overview.name} holds {overview.messages} messages "
        f"(sequences {overview.first_seq}..{overview.last_seq})"
    )
    if more:
        lines.append("more match: raise --limit, or narrow with --since/--until/--subject")
    return "\n".join(lines)


def render_show(stream: str, letter: DeadLetter) -> str:
    decoded = decode_payload(letter.data)
    lines = [
        f"Stream:    {stream}",
        f"Sequence:  {letter.seq}",
        f"Subject:   {terminal_safe(letter.subject, keep_newlines=False)}",
        f"Time:      {letter.time} ({format_timestamp(letter.timestamp)})",
        f"Size:      {letter.size} bytes",
        f"Encoding:  {decoded.encoding.value}",
    ]
    if letter.headers:
        lines.append("Headers:")
        lines.extend(
            f"  {terminal_safe(key, keep_newlines=False)}: {terminal_safe(value, keep_newlines=False)}"
            for key, value in letter.headers
        )
    lines.append("Payload:")
    lines.extend(f"  {line}" for line in pretty_payload(decoded).splitlines())
    return "\n".join(lines)


def replay_document(
    stream: str, target: ReplayTarget, outcomes: Sequence[ReplayOutcome], *, dry_run: bool, delete: bool
) -> dict[str, Any]:
    return {
        "stream": stream,
        "to": target.subject,
        "target_stream": target.stream,
        "dry_run": dry_run,
        "delete": delete,
        "published": sum(outcome.published for outcome in outcomes),
        "deleted": sum(outcome.deleted for outcome in outcomes),
        "messages": [
            {
                "seq": outcome.letter.seq,
                "subject": outcome.letter.subject,
                "size": outcome.letter.size,
                "published": outcome.published,
                "target_seq": outcome.target_seq,
                "duplicate": outcome.duplicate,
                "deleted": outcome.deleted,
                "error": outcome.error,
            }
            for outcome in outcomes
        ],
    }


def _dead_letters(count: int) -> str:
    return f"{count} dead letter" if count == 1 else f"{count} dead letters"


def _destination(target: ReplayTarget) -> str:
    where = (
        f"stored by stream {target.stream}"
        if target.stream
        else "no stream stores it: only current subscribers get it"
    )
    return f"{target.subject} ({where})"


def render_dry_run(stream: str, target: ReplayTarget, letters: Sequence[DeadLetter], *, delete: bool) -> str:
    fate = f"then delete what was republished from {stream}" if delete else f"leave {stream} as it is"
    return "\n".join(
        [
            (
                f"DRY RUN, nothing published: would republish {_dead_letters(len(letters))} from {stream} "
                f"to {_destination(target)} and {fate}."
            ),
            "",
            render_table(LETTER_HEADER, [_letter_row(letter) for letter in letters]),
            "",
            "Run again with --yes to publish.",
        ]
    )


def _result_text(outcome: ReplayOutcome, target: ReplayTarget) -> str:
    if outcome.error is not None and not outcome.published:
        return f"FAILED: {outcome.error}"
    parts = [f"published as {target.stream} seq {outcome.target_seq}" if target.stream else "published"]
    if outcome.duplicate:
        parts.append("(the target stream reported a duplicate)")
    if outcome.deleted:
        parts.append("dead letter deleted")
    if outcome.error is not None:
        parts.append(f"FAILED: {outcome.error}")
    return ", ".join(parts)


def render_replay(
    stream: str, target: ReplayTarget, outcomes: Sequence[ReplayOutcome], *, planned: int, delete: bool
) -> str:
    rows = [
        [
            str(outcome.letter.seq),
            terminal_safe(outcome.letter.subject, keep_newlines=False),
            str(outcome.letter.size),
            _result_text(outcome, target),
        ]
        for outcome in outcomes
    ]
    published = sum(outcome.published for outcome in outcomes)
    kept = "" if delete else f"; the dead letters were kept in {stream} (add --delete to remove them)"
    lines = [
        render_table(("SEQ", "SUBJECT", "SIZE", "RESULT"), rows),
        "",
        f"republished {published} of {_dead_letters(planned)} from {stream} to {_destination(target)}{kept}",
    ]
    if len(outcomes) < planned:
        lines.append(f"stopped at the first failure: {planned - len(outcomes)} not attempted")
    return "\n".join(lines)


def _print_json(document: Any) -> None:
    print(json.dumps(document, ensure_ascii=False, indent=2))


# -- the subcommand -------------------------------------------------------------------------------------


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
        type=parse_stream_name,
        metavar="NAME",
        help=f"the dead-letter stream (default: the first configured one, else {DEFAULT_STREAM})",
    )
    reading.add_argument("--json", action="store_true", help="print one JSON document, for scripts")

    filters = argparse.ArgumentParser(add_help=False)
    filters.add_argument(
        "--subject",
        type=parse_subject_filter,
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
    replay.add_argument(
        "--to", required=True, type=parse_literal_subject, metavar="SUBJECT", help="target subject"
    )
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
            session = _Session(args, nc, api, reader, await reader.overview())
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


@dataclass(frozen=True, slots=True)
class _Session:
    """One inspector run: the parsed flags, the open connection and the stream as it was at the start."""

    args: argparse.Namespace
    nc: Client
    api: JetStreamApi
    reader: DeadLetterReader
    overview: StreamOverview

    async def run_list(self, selection: Selection) -> int:
        letters, more = await self.reader.select(selection, self.overview)
        overview = self.overview
        if self.args.json:
            _print_json(
                {
                    "stream": overview.name,
                    "stream_messages": overview.messages,
                    "first_seq": overview.first_seq,
                    "last_seq": overview.last_seq,
                    "more": more,
                    "messages": [letter_document(letter) for letter in letters],
                }
            )
        else:
            print(render_list(overview, letters, more=more))
        return 0

    async def run_show(self) -> int:
        seq, stream = self.args.seq, self.reader.stream
        letter = await self.reader.message(seq)
        if letter is None:
            overview = self.overview
            span = f"sequences {overview.first_seq}..{overview.last_seq}" if overview.messages else "nothing"
            raise InspectorError(f"{stream} has no message with sequence {seq} (it holds {span})")
        if self.args.raw:
            sys.stdout.buffer.write(letter.data)
            sys.stdout.flush()
        elif self.args.json:
            _print_json({"stream": stream, **letter_document(letter)})
        else:
            print(render_show(stream, letter))
        return 0

    async def run_replay(self, selection: Selection) -> int:
        args, stream = self.args, self.reader.stream
        target = await resolve_target(self.api, args.to)
        if target.stream == stream:
            raise InspectorError(
                f"{args.to} is stored in {stream} itself: a replay there would only copy the dead letters",
                exit_code=EXIT_USAGE,
            )
        letters = await self._chosen_letters(selection)
        dry_run = not args.yes
        if dry_run or not letters:
            outcomes = [ReplayOutcome(letter) for letter in letters]
            if args.json:
                _print_json(replay_document(stream, target, outcomes, dry_run=dry_run, delete=args.delete))
            elif not letters:
                print(f"no dead letters in {stream} match: nothing to replay")
            else:
                print(render_dry_run(stream, target, letters, delete=args.delete))
            return 0
        outcomes = await replay_letters(self.nc, self.reader, letters, target, delete=args.delete)
        if args.json:
            _print_json(replay_document(stream, target, outcomes, dry_run=False, delete=args.delete))
        else:
            print(render_replay(stream, target, outcomes, planned=len(letters), delete=args.delete))
        failed = len(outcomes) < len(letters) or any(outcome.error is not None for outcome in outcomes)
        return EXIT_FAILURE if failed else 0

    async def _chosen_letters(self, selection: Selection) -> list[DeadLetter]:
        if not self.args.seq:
            letters, _ = await self.reader.select(selection, self.overview)
            return letters
        wanted = sorted({seq for group in self.args.seq for seq in group})
        if len(wanted) > MAX_SEQUENCES:
            raise InspectorError(f"at most {MAX_SEQUENCES} sequences at once", exit_code=EXIT_USAGE)
        letters, missing = [], []
        for seq in wanted:
            letter = await self.reader.message(seq)
            if letter is None:
                missing.append(seq)
            else:
                letters.append(letter)
        if missing:
            shown = ", ".join(str(seq) for seq in missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise InspectorError(
                f"{self.reader.stream} has no message with sequence {shown}; nothing was published"
            )
        return letters
