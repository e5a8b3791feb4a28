"""What the inspector prints: aligned text tables and views for people, one JSON document for scripts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

from exporter.dlq.payload import (
    DecodedPayload,
    correlation_ids,
    decode_payload,
    format_timestamp,
    payload_document,
    pretty_payload,
    summarize_payload,
    terminal_safe,
    undecodable_count,
)
from exporter.dlq.reading import DeadLetter, StreamOverview
from exporter.dlq.replay import ReplayOutcome, ReplayTarget

SUMMARY_WIDTH: Final = 72


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    widths = [max(len(row[index]) for row in [header, *rows]) for index in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def letter_row(letter: DeadLetter, decoded: DecodedPayload) -> list[str]:
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
        **({"encoding_note": decoded.note} if decoded.note else {}),
        "undecodable_values": undecodable_count(decoded),
        **correlation_ids(decoded),
        "payload": payload_document(decoded),
    }


def list_document(overview: StreamOverview, letters: Sequence[DeadLetter], *, more: bool) -> dict[str, Any]:
    return {
        "stream": overview.name,
        "stream_messages": overview.messages,
        "first_seq": overview.first_seq,
        "last_seq": overview.last_seq,
        "more": more,
        "messages": [letter_document(letter) for letter in letters],
    }


def show_document(stream: str, letter: DeadLetter) -> dict[str, Any]:
    return {"stream": stream, **letter_document(letter)}


def render_list(overview: StreamOverview, letters: Sequence[DeadLetter], *, more: bool) -> str:
    if not letters:
        return f"no dead letters match in {overview.name} (it holds {overview.messages} messages)"
    decoded = [decode_payload(letter.data) for letter in letters]
    lines = [
        render_table(LETTER_HEADER, [letter_row(*pair) for pair in zip(letters, decoded, strict=True)]),
        "",
    ]
    lines.append(
        f"{len(letters)} shown; {overview.name} holds {overview.messages} messages "
        f"(sequences {overview.first_seq}..{overview.last_seq})"
    )
    poisoned = [
        str(letter.seq)
        for letter, payload in zip(letters, decoded, strict=True)
        if undecodable_count(payload)
    ]
    if poisoned:
        lines.append(
            f"not fully decodable, shown with raw bytes and a note: seq {', '.join(poisoned)} "
            "(see dlq show SEQ)"
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
        f"Encoding:  {decoded.encoding.value}" + (f" ({decoded.note})" if decoded.note else ""),
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
            render_table(
                LETTER_HEADER, [letter_row(letter, decode_payload(letter.data)) for letter in letters]
            ),
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


def print_json(document: Any) -> None:
    print(json.dumps(document, ensure_ascii=False, indent=2))
