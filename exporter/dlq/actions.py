"""Carrying out ``list``, ``show`` and ``replay`` on an open connection, printing as the flags ask."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from nats.aio.client import Client

from exporter.dlq.arguments import MAX_SEQUENCES
from exporter.dlq.errors import EXIT_FAILURE, EXIT_USAGE, InspectorError
from exporter.dlq.output import (
    list_document,
    print_json,
    render_dry_run,
    render_list,
    render_replay,
    render_show,
    replay_document,
    show_document,
)
from exporter.dlq.reading import DeadLetter, DeadLetterReader, Selection, StreamOverview
from exporter.dlq.replay import ReplayOutcome, replay_letters, resolve_target
from exporter.jsapi import JetStreamApi


@dataclass(frozen=True, slots=True)
class InspectorSession:
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
            print_json(list_document(overview, letters, more=more))
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
            print_json(show_document(stream, letter))
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
                print_json(replay_document(stream, target, outcomes, dry_run=dry_run, delete=args.delete))
            elif not letters:
                print(f"no dead letters in {stream} match: nothing to replay")
            else:
                print(render_dry_run(stream, target, letters, delete=args.delete))
            return 0
        outcomes = await replay_letters(self.nc, self.reader, letters, target, delete=args.delete)
        if args.json:
            print_json(replay_document(stream, target, outcomes, dry_run=False, delete=args.delete))
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
