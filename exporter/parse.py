"""JetStream API JSON -> snapshot dataclasses. Pure: no I/O, so recorded replies test it.

Conventions of the server's JSON that this module absorbs, so the rest of the exporter never sees them:
timestamps are RFC 3339 with nanoseconds and the zero time ``0001-01-01T00:00:00Z`` means "never";
durations are nanoseconds; an unlimited limit is -1, or 0 where the server uses 0 for "no limit".
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from exporter.monitoring import consumer_monitoring, metadata_label_values, stream_monitoring
from exporter.snapshot import (
    AccountState,
    ConsumerState,
    DeadLetterState,
    ReplicaState,
    SourceState,
    StreamState,
)

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_NANOSECONDS = 1_000_000_000


@functools.lru_cache(maxsize=256)
def _day_start_seconds(day: str) -> int:
    # Timestamps in one reply share a handful of days; caching the calendar part keeps a cycle over
    # tens of thousands of timestamps cheap.
    return (date.fromisoformat(day).toordinal() - _EPOCH_ORDINAL) * 86400


def parse_timestamp(text: str | None) -> float | None:
    """Unix seconds of an RFC 3339 timestamp; None for a missing value or Go's zero time."""
    if not text or text.startswith("0001-01-01T00:00:00"):
        return None
    if text[-1] == "Z" and len(text) >= 20 and text[10] == "T":
        # The server always writes UTC with 'Z': parse by position. Integer nanoseconds, then one true
        # division, give the float nearest to the exact time.
        seconds = _day_start_seconds(text[:10]) + int(text[11:13]) * 3600 + int(text[14:16]) * 60
        seconds += int(text[17:19])
        nanoseconds = int(text[20:-1].ljust(9, "0")[:9]) if text[19] == "." else 0
        return (seconds * _NANOSECONDS + nanoseconds) / _NANOSECONDS
    return datetime.fromisoformat(text).timestamp()


def parse_duration_seconds(nanoseconds: int | None) -> float | None:
    """Seconds of a nanosecond duration; None for absent or 0/-1 (the server's "no limit")."""
    if nanoseconds is None or nanoseconds <= 0:
        return None
    return nanoseconds / _NANOSECONDS


def parse_limit(value: int | None) -> int | None:
    """A count or size limit; None when unlimited (-1, or 0 where 0 means "no limit")."""
    if value is None or value <= 0:
        return None
    return int(value)


def parse_account_limit(value: int | None) -> int | None:
    """An account limit: only negative means unlimited; 0 is a real limit (e.g. no memory storage)."""
    if value is None or value < 0:
        return None
    return int(value)


def parse_account_state(reply: Mapping[str, Any], account: str) -> AccountState:
    """``$JS.API.INFO`` reply -> AccountState."""
    limits = reply.get("limits") or {}
    api = reply.get("api") or {}
    return AccountState(
        account=account,
        memory_bytes=int(reply["memory"]),
        storage_bytes=int(reply["storage"]),
        max_memory_bytes=parse_account_limit(limits.get("max_memory")),
        max_storage_bytes=parse_account_limit(limits.get("max_storage")),
        streams=int(reply["streams"]),
        consumers=int(reply["consumers"]),
        api_requests=int(api.get("total", 0)),
        api_errors=int(api.get("errors", 0)),
    )


def parse_stream_state(
    info: Mapping[str, Any], account: str, label_keys: tuple[str, ...] = ()
) -> StreamState:
    """One ``StreamInfo`` (from STREAM.LIST or STREAM.INFO) -> StreamState.

    ``label_keys``: the metadata keys whose values become labels (``labels.from_metadata``).
    """
    config = info["config"]
    state = info["state"]
    cluster = info.get("cluster") or {}
    metadata = config.get("metadata")
    monitoring = stream_monitoring(metadata)
    return StreamState(
        account=account,
        name=config["name"],
        subjects=tuple(config.get("subjects") or ()),
        storage=config.get("storage", "file"),
        retention=config.get("retention", "limits"),
        replicas=int(config.get("num_replicas", 1)),
        allow_direct=bool(config.get("allow_direct", False)),
        max_messages=parse_limit(config.get("max_msgs")),
        max_bytes=parse_limit(config.get("max_bytes")),
        max_age_seconds=parse_duration_seconds(config.get("max_age")),
        max_messages_per_subject=parse_limit(config.get("max_msgs_per_subject")),
        messages=int(state["messages"]),
        bytes=int(state["bytes"]),
        first_seq=int(state["first_seq"]),
        first_ts=parse_timestamp(state.get("first_ts")),
        last_seq=int(state["last_seq"]),
        last_ts=parse_timestamp(state.get("last_ts")),
        num_subjects=int(state.get("num_subjects", 0)),
        num_deleted=int(state.get("num_deleted", 0)),
        consumer_count=int(state.get("consumer_count", 0)),
        leader=cluster.get("leader", ""),
        peers=parse_peers(cluster),
        sources=parse_sources(info),
        thresholds=monitoring.thresholds,
        metadata_problems=monitoring.problems,
        metadata_labels=metadata_label_values(metadata, label_keys),
    )


def parse_peers(cluster: Mapping[str, Any]) -> tuple[ReplicaState, ...]:
    """A ``cluster`` block -> every peer, the leader first (current, lag 0); empty when not clustered.

    The leader reports the other peers in ``replicas``; one it reports offline, or not current, is not
    current. Without a leader (an election, or the only replica down) the listed peers are all there is.
    """
    leader = cluster.get("leader") or ""
    peers = [ReplicaState(server=leader, current=True)] if leader else []
    for replica in cluster.get("replicas") or ():
        name = str(replica.get("name", ""))
        if not name or name == leader:
            continue
        current = bool(replica.get("current", False)) and not replica.get("offline", False)
        peers.append(ReplicaState(server=name, current=current, lag_operations=int(replica.get("lag", 0))))
    return tuple(peers)


def replicas_current(cluster: Mapping[str, Any]) -> int:
    """Peers of a ``cluster`` block current with the leader, the leader included; 0 without a leader."""
    if not cluster.get("leader"):
        return 0
    return sum(peer.current for peer in parse_peers(cluster))


def parse_sources(info: Mapping[str, Any]) -> tuple[SourceState, ...]:
    """``StreamInfo.mirror`` and ``StreamInfo.sources[]`` -> SourceState, one per origin stream name, by name
    (the server lists sources in no fixed order)."""
    found: dict[str, SourceState] = {}
    mirror = info.get("mirror")
    origins = [("mirror", mirror)] if mirror else []
    origins.extend(("source", source) for source in info.get("sources") or ())
    for kind, origin in origins:
        name = str(origin.get("name", ""))
        if not name or name in found:  # the `source` label must identify one series per origin
            continue
        external = origin.get("external") or {}
        active = origin.get("active")
        found[name] = SourceState(
            kind=kind,
            name=name,
            filter_subject=str(origin.get("filter_subject") or ""),
            external_api=str(external.get("api") or ""),
            lag_messages=int(origin.get("lag", 0)),
            # Nanoseconds since the origin was last heard from; negative (or absent) means never.
            active_seconds=active / _NANOSECONDS if isinstance(active, int) and active >= 0 else None,
        )
    return tuple(found[name] for name in sorted(found))


def filter_subjects_of(config: Mapping[str, Any]) -> tuple[str, ...]:
    """``filter_subject`` and ``filter_subjects`` merged (servers before 2.10 know only the first)."""
    subjects = list(config.get("filter_subjects") or ())
    single = config.get("filter_subject")
    if single and single not in subjects:
        subjects.insert(0, single)
    return tuple(subjects)


def parse_consumer_state(
    info: Mapping[str, Any],
    account: str,
    label_keys: tuple[str, ...] = (),
    *,
    stream_replicas: int = 1,
    lag_unknown: bool = False,
) -> ConsumerState:
    """One ``ConsumerInfo`` (from CONSUMER.LIST or CONSUMER.INFO) -> ConsumerState.

    ``stream_replicas`` is the stream's replica count, which a consumer configured with 0 replicas has.
    ``lag_seconds`` is 0.0 when nothing is outstanding (nothing to look up), else None: the source
    measures it with a message look-up; with ``lag_unknown`` it is always None (a reader that cannot look
    up messages in the account leaves the family absent). ``label_keys`` as for streams.
    """
    config = info["config"]
    metadata = config.get("metadata")
    monitoring = consumer_monitoring(metadata)
    delivered = info.get("delivered") or {}
    ack_floor = info.get("ack_floor") or {}
    cluster = info.get("cluster") or {}
    num_pending = int(info.get("num_pending", 0))
    num_ack_pending = int(info.get("num_ack_pending", 0))
    replicas = int(config.get("num_replicas") or 0) or stream_replicas
    return ConsumerState(
        account=account,
        stream=info["stream_name"],
        name=info["name"],
        durable=bool(config.get("durable_name")),
        pull=not config.get("deliver_subject"),
        ack_policy=config.get("ack_policy", ""),
        deliver_policy=config.get("deliver_policy", ""),
        filter_subjects=filter_subjects_of(config),
        max_deliver=parse_limit(config.get("max_deliver")),
        max_ack_pending=parse_limit(config.get("max_ack_pending")),
        ack_wait_seconds=parse_duration_seconds(config.get("ack_wait")),
        num_pending=num_pending,
        num_ack_pending=num_ack_pending,
        num_redelivered=int(info.get("num_redelivered", 0)),
        num_waiting=int(info.get("num_waiting", 0)),
        delivered_consumer_seq=int(delivered.get("consumer_seq", 0)),
        delivered_stream_seq=int(delivered.get("stream_seq", 0)),
        delivered_last_active=parse_timestamp(delivered.get("last_active")),
        ack_floor_consumer_seq=int(ack_floor.get("consumer_seq", 0)),
        ack_floor_stream_seq=int(ack_floor.get("stream_seq", 0)),
        ack_floor_last_active=parse_timestamp(ack_floor.get("last_active")),
        paused=bool(info.get("paused", False)),
        leader=cluster.get("leader", ""),
        replicas=replicas,
        replicas_current=replicas_current(cluster) if cluster else replicas,
        lag_seconds=None if lag_unknown or num_pending or num_ack_pending else 0.0,
        thresholds=monitoring.thresholds,
        metadata_problems=monitoring.problems,
        metadata_labels=metadata_label_values(metadata, label_keys),
    )


@dataclass(frozen=True, slots=True)
class ListPage:
    """One page of STREAM.LIST or CONSUMER.LIST: the entries the server could describe, and the others."""

    items: tuple[Mapping[str, Any], ...]
    total: int
    received: int  # entries on the page, placeholders included: the offset of the next page advances by it
    # Names the server knows but could not describe this time (clustered: the leader did not answer in
    # time, or is offline); the source keeps their previous values rather than let them vanish.
    unavailable: tuple[str, ...]


def list_entry_name(entry: Mapping[str, Any]) -> str:
    """The name of a list entry: a consumer's ``name``, else the ``config.name`` (streams, placeholders)."""
    return str(entry.get("name") or (entry.get("config") or {}).get("name") or "")


def parse_list_page(reply: Mapping[str, Any], key: str) -> ListPage:
    """A paged list reply (``key`` is ``streams`` or ``consumers``) -> ListPage.

    The server lists an unavailable entry twice: by name in ``missing`` (or ``offline``) and as a
    placeholder entry with zeroed state (and, for consumers, empty names). Placeholders are dropped here,
    so a zeroed state is never mistaken for a real one.
    """
    entries = reply.get(key) or ()
    unavailable = (*(reply.get("missing") or ()), *(reply.get("offline") or {}))
    if unavailable:
        skip = set(unavailable)
        items = tuple(e for e in entries if (name := list_entry_name(e)) and name not in skip)
    else:
        items = tuple(entries)
    return ListPage(
        items=items,
        total=int(reply.get("total", len(entries))),
        received=len(entries),
        unavailable=tuple(unavailable),
    )


@dataclass(frozen=True, slots=True)
class NamesPage:
    """One page of STREAM.NAMES: names only, which the meta leader answers without asking stream leaders."""

    names: tuple[str, ...]
    total: int


def parse_names_page(reply: Mapping[str, Any], key: str = "streams") -> NamesPage:
    """A paged names reply (``STREAM.NAMES``) -> NamesPage."""
    names = tuple(str(name) for name in reply.get(key) or ())
    return NamesPage(names=names, total=int(reply.get("total", len(names))))


def subject_counts_page(reply: Mapping[str, Any]) -> Mapping[str, int]:
    """The per-subject counts of a STREAM.INFO reply asked with ``subjects_filter`` (empty when none)."""
    subjects: Mapping[str, int] = reply["state"].get("subjects") or {}
    return subjects


def parse_dead_letter_state(
    info: Mapping[str, Any], subject_counts: Mapping[str, int], account: str
) -> DeadLetterState:
    """A dead-letter stream's STREAM.INFO plus its (possibly multi-page) subject counts -> DeadLetterState."""
    return DeadLetterState(
        account=account,
        stream=info["config"]["name"],
        exists=True,
        subject_counts=tuple(sorted((subject, int(count)) for subject, count in subject_counts.items())),
        first_ts=parse_timestamp(info["state"].get("first_ts")),
    )


@dataclass(frozen=True, slots=True)
class StoredMessageRef:
    """Where and when a stored message is: enough to compute a consumer's lag."""

    seq: int
    timestamp: float


def parse_direct_get_headers(headers: Mapping[str, str] | None) -> StoredMessageRef | None:
    """A DIRECT.GET reply's headers -> the message's sequence and time; None for "no message" (404)."""
    if not headers or headers.get("Status") == "404":
        return None
    status = headers.get("Status")
    if status is not None:
        description = headers.get("Description", "")
        raise ValueError(f"direct get answered status {status} {description}".strip())
    timestamp = parse_timestamp(headers.get("Nats-Time-Stamp"))
    if timestamp is None:
        raise ValueError("direct get reply has no Nats-Time-Stamp header")
    return StoredMessageRef(seq=int(headers["Nats-Sequence"]), timestamp=timestamp)


def parse_message_get(reply: Mapping[str, Any]) -> StoredMessageRef:
    """A STREAM.MSG.GET reply (without ``error``) -> the message's sequence and time."""
    message = reply["message"]
    timestamp = parse_timestamp(message.get("time"))
    if timestamp is None:
        raise ValueError("stored message has no time")
    return StoredMessageRef(seq=int(message["seq"]), timestamp=timestamp)


def oldest(refs: Sequence[StoredMessageRef | None]) -> StoredMessageRef | None:
    """The earliest of several look-ups (one per filter subject); None when none found a message."""
    found = [ref for ref in refs if ref is not None]
    return min(found, key=lambda ref: ref.seq) if found else None
