"""Fetching dead letters from the stream without consuming them: ``STREAM.INFO``, ``STREAM.MSG.GET``."""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass
from typing import Any, Final

from exporter.dlq.errors import InspectorError
from exporter.jsapi import NO_MESSAGE_FOUND, STREAM_NOT_FOUND, JetStreamApi, JetStreamApiError
from exporter.parse import parse_timestamp

API_TIMEOUT_SECONDS: Final = 5.0


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
        # Nothing is stored before 1970: an earlier bound (--since 99999999d) means from the start, and
        # would be outside the years a datetime holds.
        start = dt.datetime.fromtimestamp(max(since, 0.0), tz=dt.UTC).isoformat().replace("+00:00", "Z")
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
