"""The JetStream events the exporter counts, and how one payload is checked and decoded.

The server publishes, unasked, one advisory per NAK, per message that exhausted ``max_deliver`` (when the
consumer next tries to deliver it), per ``term()``, per stream or consumer leader election and per loss of
quorum; and, for a consumer with ``sample_freq`` set, one metric event per sampled acknowledgement.
``ConsumerInfo`` keeps no such totals: counting these is the only way to see them.

Anyone allowed to publish in the account can publish on these subjects too, so a payload is accepted only
when it is small, decodes to the documented object, and names the same stream (and consumer) as the
subject it arrived on. Everything here is pure: ``exporter.intake`` does the subscribing and counting.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final, Literal

ADVISORY_PREFIX: Final = "$JS.EVENT.ADVISORY."
METRIC_PREFIX: Final = "$JS.EVENT.METRIC."
# The server's advisories are a few hundred bytes; anything much larger is not one, and is not decoded.
MAX_EVENT_BYTES: Final = 8192

Scope = Literal["stream", "consumer"]


@dataclass(frozen=True, slots=True)
class EventKind:
    """One event subject family: its subject prefix, JSON ``type``, what it names and what it feeds."""

    prefix: str  # the subject up to the stream token, e.g. "$JS.EVENT.ADVISORY.CONSUMER.MSG_NAKED"
    type: str
    scope: Scope  # "stream": <prefix>.<stream>; "consumer": <prefix>.<stream>.<consumer>
    counter: str  # the field of StreamEventCounts / AdvisoryCounts it adds 1 to; "" for the ack metric

    @property
    def subject(self) -> str:
        return f"{self.prefix}.>"

    @property
    def name(self) -> str:
        """Short, for log lines: the subject without ``$JS.EVENT.``."""
        return self.prefix.removeprefix("$JS.EVENT.")


_CONSUMER_ADVISORY = f"{ADVISORY_PREFIX}CONSUMER."
_STREAM_ADVISORY = f"{ADVISORY_PREFIX}STREAM."
_TYPE = "io.nats.jetstream.advisory.v1."

ACK_METRIC: Final = EventKind(
    f"{METRIC_PREFIX}CONSUMER.ACK", "io.nats.jetstream.metric.v1.consumer_ack", "consumer", ""
)
EVENT_KINDS: Final = (
    EventKind(
        f"{_CONSUMER_ADVISORY}MAX_DELIVERIES", f"{_TYPE}max_deliver", "consumer", "max_deliveries_exceeded"
    ),
    EventKind(f"{_CONSUMER_ADVISORY}MSG_TERMINATED", f"{_TYPE}terminated", "consumer", "terminated"),
    # MSG_NAKED is the subject the server publishes on, whatever other names some documents give it.
    EventKind(f"{_CONSUMER_ADVISORY}MSG_NAKED", f"{_TYPE}nak", "consumer", "naks"),
    EventKind(
        f"{_CONSUMER_ADVISORY}LEADER_ELECTED",
        f"{_TYPE}consumer_leader_elected",
        "consumer",
        "leader_elections",
    ),
    EventKind(f"{_CONSUMER_ADVISORY}QUORUM_LOST", f"{_TYPE}consumer_quorum_lost", "consumer", "quorum_lost"),
    EventKind(
        f"{_STREAM_ADVISORY}LEADER_ELECTED", f"{_TYPE}stream_leader_elected", "stream", "leader_elections"
    ),
    EventKind(f"{_STREAM_ADVISORY}QUORUM_LOST", f"{_TYPE}stream_quorum_lost", "stream", "quorum_lost"),
    ACK_METRIC,
)


class MalformedAdvisoryError(ValueError):
    """An event whose payload is not the JSON object the server documents, or disagrees with its subject."""


@dataclass(frozen=True, slots=True)
class Event:
    """One accepted event: what it names, and for the ack metric what it measured."""

    kind: EventKind
    stream: str
    consumer: str  # "" for stream events
    ack_seconds: float = 0.0  # ack metric: delivery to acknowledgement
    deliveries: int = 0  # ack metric: deliveries the acknowledged message took


def subject_names(kind: EventKind, subject: str) -> tuple[str, str]:
    """(stream, consumer or "") named by the subject's tokens after the kind's prefix."""
    rest = subject.removeprefix(kind.prefix + ".")
    tokens = rest.split(".")
    expected = 1 if kind.scope == "stream" else 2
    if rest == subject or len(tokens) != expected or not all(tokens):
        raise MalformedAdvisoryError(f"subject does not name a {kind.scope}")
    return tokens[0], tokens[1] if expected == 2 else ""


def parse_advisory(kind: EventKind, subject: str, data: bytes) -> Event:
    """The event one payload describes; raises MalformedAdvisoryError, never anything else."""
    if len(data) > MAX_EVENT_BYTES:
        raise MalformedAdvisoryError(f"payload of {len(data)} bytes exceeds {MAX_EVENT_BYTES}")
    stream, consumer = subject_names(kind, subject)
    try:
        document: Any = json.loads(data)
    # RecursionError: deeply nested arrays; ValueError: a number with more digits than int() accepts,
    # JSONDecodeError (a ValueError) and UnicodeDecodeError (also one).
    except (RecursionError, ValueError) as exc:
        raise MalformedAdvisoryError(f"not JSON ({exc.__class__.__name__})") from None
    if not isinstance(document, dict):
        raise MalformedAdvisoryError(f"expected a JSON object, got {type(document).__name__}")
    advisory_type = document.get("type")
    if advisory_type != kind.type:
        raise MalformedAdvisoryError(f"type is {str(advisory_type)[:80]!r}, expected {kind.type!r}")
    if document.get("stream") != stream:
        raise MalformedAdvisoryError("'stream' differs from the stream the subject names")
    if kind.scope == "consumer" and document.get("consumer") != consumer:
        raise MalformedAdvisoryError("'consumer' differs from the consumer the subject names")
    if kind is not ACK_METRIC:
        return Event(kind, stream, consumer)
    ack_time = _integer(document.get("ack_time"), minimum=0)
    if ack_time is None:
        raise MalformedAdvisoryError("'ack_time' is not a non-negative integer of nanoseconds")
    deliveries = _integer(document.get("deliveries"), minimum=1)
    if deliveries is None:
        raise MalformedAdvisoryError("'deliveries' is not a positive integer")
    return Event(kind, stream, consumer, ack_seconds=ack_time / 1e9, deliveries=deliveries)


def _integer(value: object, *, minimum: int) -> int | None:
    """``value`` when it is a JSON integer (not a boolean) of at least ``minimum``."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
        return value
    return None
