"""Republishing dead letters to a subject, in order, and deleting them only once the target has them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final

import nats.errors
from nats.aio.client import Client

from exporter.dlq.errors import InspectorError
from exporter.dlq.reading import API_TIMEOUT_SECONDS, DeadLetter, DeadLetterReader
from exporter.jsapi import JetStreamApi, JetStreamRequestError, api_error_from_reply

# Added to every replayed message, so the handler's logs can tell a replay from a first delivery.
REPLAY_HEADER: Final = "Dlq-Replayed-From"


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
