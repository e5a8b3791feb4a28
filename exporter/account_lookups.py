"""Look-ups inside one account: dead-letter stream depth and consumer lag in seconds.

Both need the account's own JetStream API (subject counts of a stream, a stored message read without
consuming it), so the account scope runs them on its connection and the cluster scope on a connection
inside each configured account (``accounts``). Failures are partial: returned, never raised, so that the
rest of a cycle's data is kept.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from nats.aio.msg import Msg

from exporter.jsapi import (
    NO_MESSAGE_FOUND,
    STREAM_NOT_FOUND,
    JetStreamApiError,
    JetStreamRequestError,
    JetStreamUnavailableError,
)
from exporter.logs import StateLog
from exporter.parse import (
    StoredMessageRef,
    oldest,
    parse_dead_letter_state,
    parse_direct_get_headers,
    parse_message_get,
    subject_counts_page,
)
from exporter.snapshot import ConsumerState, DeadLetterState, Snapshot, StreamState

logger = logging.getLogger("exporter.source")


class _StreamGoneError(Exception):
    """The stream was deleted during the cycle: not a failure, its data is simply left out."""


@dataclass(slots=True)
class LagResults:
    oldest_times: dict[tuple[str, str], float | None] = field(default_factory=dict)  # None: nothing found
    skipped: int = 0
    error: str | None = None  # the first look-up failure of the cycle


# The owner's requests to the account's JetStream API (``JetStreamApi.request_json`` and ``request_message``
# under the owner's bound on requests in flight): API name and payload -> decoded reply / raw reply.
JsonRequest = Callable[[str, Mapping[str, Any] | None], Awaitable[dict[str, Any]]]
MessageRequest = Callable[[str, Mapping[str, Any] | None], Awaitable[Msg]]


class AccountLookups:
    """Dead letters and lag of one account, through its JetStream API. One object per account and connection.

    The requests are the owner's, so its bound on requests in flight covers these look-ups too;
    ``lag_lookups_per_cycle`` caps the message look-ups of one cycle (the rest wait for later cycles).
    """

    def __init__(
        self, request_json: JsonRequest, request_message: MessageRequest, *, lag_lookups_per_cycle: int
    ) -> None:
        self._request = request_json
        self._request_message = request_message
        self._lag_budget = lag_lookups_per_cycle
        # Logged on change only: a stream configured before it is created must not flood the log.
        self._dead_letter_log = StateLog(logger)
        self._lag_cursor = 0

    # --- dead letters -----------------------------------------------------------------------------

    async def fetch_dead_letters(
        self, account: str, names: Sequence[str], previous: Snapshot | None
    ) -> tuple[tuple[DeadLetterState, ...], str | None]:
        """The dead-letter streams ``names``, and the first failure, if any (then its last value stays)."""
        if not names:
            return (), None
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self._dead_letter_state(name, account)) for name in names]
        previous_states = (
            {state.stream: state for state in previous.dead_letters if state.account == account}
            if previous
            else {}
        )
        states: list[DeadLetterState] = []
        first_error: str | None = None
        for name, task in zip(names, tasks, strict=True):
            outcome = task.result()
            if isinstance(outcome, DeadLetterState):
                states.append(outcome)
                continue
            first_error = first_error or outcome
            kept = previous_states.get(name)
            if kept is not None:
                states.append(kept)
        return tuple(states), first_error

    async def _dead_letter_state(self, name: str, account: str) -> DeadLetterState | str:
        """A dead-letter stream's per-subject depth; exists=False when absent; the error when it failed."""
        counts: dict[str, int] = {}
        first_reply: dict[str, Any] | None = None
        offset = 0
        try:
            while True:
                payload: dict[str, Any] = {"subjects_filter": ">"}
                if offset:
                    payload["offset"] = offset
                reply = await self._request(f"STREAM.INFO.{name}", payload)
                first_reply = first_reply or reply
                page = subject_counts_page(reply)
                known = len(counts)
                counts.update(page)
                offset += len(page)
                # A server that ignores the offset repeats its first page: stop once a page adds nothing.
                if not page or offset >= int(reply.get("total", 0)) or len(counts) == known:
                    break
            state = parse_dead_letter_state(first_reply, counts, account)
        except JetStreamApiError as exc:
            if exc.err_code != STREAM_NOT_FOUND:
                return f"dead-letter stream {name!r}: {exc}"
            self._note_dead_letter_presence(name, present=False)
            return DeadLetterState(account=account, stream=name, exists=False)
        except (JetStreamRequestError, KeyError, TypeError, ValueError) as exc:
            return f"dead-letter stream {name!r}: {type(exc).__name__}: {exc}"
        self._note_dead_letter_presence(name, present=True)
        return state

    def _note_dead_letter_presence(self, name: str, *, present: bool) -> None:
        if present:
            self._dead_letter_log.enter(present, logging.INFO, "dead-letter stream %r found", name, key=name)
        else:
            self._dead_letter_log.enter(
                present,
                logging.WARNING,
                "dead-letter stream %r does not exist; reporting it as missing until it appears",
                name,
                key=name,
            )

    # --- lag --------------------------------------------------------------------------------------

    async def measure_lags(
        self, streams: Mapping[str, StreamState], consumers: Iterable[ConsumerState]
    ) -> LagResults:
        """Oldest unacknowledged message time of every lagging consumer, within the per-cycle cap.

        ``streams`` are the account's streams by name; ``consumers`` the account's consumers (those whose
        ``lag_seconds`` is None are looked up).
        """
        results = LagResults()
        lagging = [consumer for consumer in consumers if consumer.lag_seconds is None]
        if not lagging:
            return results
        chosen = self._choose_within_cap(lagging, results)

        async def measure(consumer: ConsumerState) -> None:
            key = (consumer.stream, consumer.name)
            try:
                found = await self._oldest_unacknowledged(streams[consumer.stream], consumer)
            except _StreamGoneError:
                return
            except (JetStreamRequestError, KeyError, TypeError, ValueError) as exc:
                if results.error is None:
                    results.error = f"consumer {consumer.name!r} of stream {consumer.stream!r}: {exc}"
                return
            results.oldest_times[key] = found.timestamp if found is not None else None

        async with asyncio.TaskGroup() as group:
            for consumer in chosen:
                group.create_task(measure(consumer))
        return results

    def _choose_within_cap(self, lagging: list[ConsumerState], results: LagResults) -> list[ConsumerState]:
        """The consumers to look up this cycle (one look-up per filter subject), counting the rest."""
        # Start where the last cycle's cap stopped, so that over cycles every consumer gets measured.
        start = self._lag_cursor % len(lagging)
        budget = full_budget = self._lag_budget
        chosen: list[ConsumerState] = []
        first_skipped: int | None = None
        for position, consumer in enumerate(lagging[start:] + lagging[:start]):
            needed = max(1, len(consumer.filter_subjects))
            if needed <= budget:
                budget -= needed
                chosen.append(consumer)
            else:
                results.skipped += 1
                # A consumer with more filter subjects than a whole cycle's budget never fits: it must not
                # hold the cursor, or the consumers after it would never be measured.
                if first_skipped is None and needed <= full_budget:
                    first_skipped = position
        if first_skipped is not None:
            self._lag_cursor = start + first_skipped
        return chosen

    async def _oldest_unacknowledged(
        self, stream: StreamState, consumer: ConsumerState
    ) -> StoredMessageRef | None:
        """The first message after the ack floor that matches the consumer's filter, read, not consumed."""
        start = consumer.ack_floor_stream_seq + 1
        subjects = consumer.filter_subjects or (">",)
        if len(subjects) == 1:
            return await self._first_message(stream, start, subjects[0])
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self._first_message(stream, start, subject)) for subject in subjects]
        return oldest([task.result() for task in tasks])

    async def _first_message(self, stream: StreamState, start: int, subject: str) -> StoredMessageRef | None:
        """First stored message with sequence >= start on ``subject``; next_by_subj skips deleted ones."""
        payload = {"seq": start, "next_by_subj": subject}
        if stream.allow_direct:
            try:
                msg = await self._request_message(f"DIRECT.GET.{stream.name}", payload)
                return parse_direct_get_headers(msg.headers)
            except JetStreamUnavailableError:
                # Nobody serves direct gets (stream just deleted, or not reachable that way): ask the leader.
                pass
        try:
            reply = await self._request(f"STREAM.MSG.GET.{stream.name}", payload)
        except JetStreamApiError as exc:
            if exc.err_code == NO_MESSAGE_FOUND:
                return None
            if exc.err_code == STREAM_NOT_FOUND:
                raise _StreamGoneError from None
            raise
        return parse_message_get(reply)


def with_lag(consumer: ConsumerState, lags: LagResults, collected_at: float) -> ConsumerState:
    """``consumer`` with the lag its look-up measured against ``collected_at`` (unchanged if not measured)."""
    if consumer.lag_seconds is not None:
        return consumer
    key = (consumer.stream, consumer.name)
    if key not in lags.oldest_times:
        return consumer  # skipped by the cap, failed, or its stream went away: not measured
    oldest_time = lags.oldest_times[key]
    lag = 0.0 if oldest_time is None else max(0.0, collected_at - oldest_time)
    return replace(consumer, lag_seconds=lag)
