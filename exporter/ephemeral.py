"""What becomes of ephemeral consumers (``filters.consumers.ephemeral``): a pure transform of a snapshot.

Ephemeral consumers (no durable name) are created and deleted by clients all the time: exported one by
one, each would add some twenty series for the few seconds it lives, thousands of new series a minute on a
busy system. ``aggregate`` (the default) replaces them by one entry per stream (how many there are, their
summed pending and ack-pending messages, the oldest lag), so the set of series stays that of the streams;
``exclude`` drops them; ``include`` keeps them one by one. Durable consumers are never touched.
Everything rendered per consumer (advisory counters, thresholds) follows ``Snapshot.consumers``, so an
ephemeral consumer left out here has no series of any kind.
"""

from __future__ import annotations

from dataclasses import replace

from exporter.snapshot import ConsumerState, EphemeralConsumers, Snapshot

INCLUDE = "include"
AGGREGATE = "aggregate"
EXCLUDE = "exclude"
POLICIES = (INCLUDE, AGGREGATE, EXCLUDE)


def is_ephemeral(consumer: ConsumerState) -> bool:
    return not consumer.durable


def apply_ephemeral_policy(snapshot: Snapshot, policy: str) -> Snapshot:
    """``snapshot`` with its ephemeral consumers kept, summed per stream, or dropped, as ``policy`` says."""
    if policy == INCLUDE:
        return snapshot
    durable = tuple(consumer for consumer in snapshot.consumers if not is_ephemeral(consumer))
    if policy == EXCLUDE:
        return replace(snapshot, consumers=durable, ephemeral_consumers=())
    return replace(snapshot, consumers=durable, ephemeral_consumers=summarise(snapshot))


def summarise(snapshot: Snapshot) -> tuple[EphemeralConsumers, ...]:
    """One entry per stream of the snapshot, zero for a stream without ephemeral consumers.

    Every stream has its entry, so a stream's series do not appear and vanish as its ephemeral consumers
    come and go.
    """
    by_stream: dict[tuple[str, str], list[ConsumerState]] = {
        (stream.account, stream.name): [] for stream in snapshot.streams
    }
    for consumer in snapshot.consumers:
        members = by_stream.get((consumer.account, consumer.stream))
        if members is not None and is_ephemeral(consumer):
            members.append(consumer)
    return tuple(_summary(account, stream, members) for (account, stream), members in by_stream.items())


def _summary(account: str, stream: str, members: list[ConsumerState]) -> EphemeralConsumers:
    lags = [consumer.lag_seconds for consumer in members if consumer.lag_seconds is not None]
    if lags:
        oldest: float | None = max(lags)
    else:
        oldest = None if members else 0.0
    return EphemeralConsumers(
        account=account,
        stream=stream,
        consumers=len(members),
        num_pending=sum(consumer.num_pending for consumer in members),
        num_ack_pending=sum(consumer.num_ack_pending for consumer in members),
        oldest_lag_seconds=oldest,
    )
