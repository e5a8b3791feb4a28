"""Splitting one system between exporter replicas (``collection.shard: K/N``).

A stream belongs to the shard ``crc32(account NUL stream) mod N``: stable across processes, machines and
Python versions (Python's own ``hash`` of a string is salted per process, so replicas would disagree).
Each replica reads only its own streams, and their consumers and dead letters, so N replicas share the
work. The families that describe the whole account or server (``nats_account_*``, ``nats_server_*``, the
meta group) are exported by shard 0 only, so that together the replicas export exactly one copy of every
series; the exporter's own health families are per replica (the ``instance`` label tells them apart).
"""

from __future__ import annotations

import zlib

Shard = tuple[int, int]  # (K, N): shard K of N


def shard_of(account: str, stream: str, shards: int) -> int:
    """The shard, from 0 to ``shards`` - 1, that the stream belongs to."""
    return zlib.crc32(f"{account}\0{stream}".encode()) % shards


def in_shard(shard: Shard | None, account: str, stream: str) -> bool:
    """Whether this replica collects the stream; every stream when not sharded."""
    if shard is None:
        return True
    index, shards = shard
    return shard_of(account, stream, shards) == index


def exports_whole_system(shard: Shard | None) -> bool:
    """Whether this replica exports the account-wide and server-wide families (shard 0, or not sharded)."""
    return shard is None or shard[0] == 0
