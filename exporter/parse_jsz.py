"""The server's JetStream report (JSZ, ``$SYS.REQ.SERVER.PING.JSZ``) -> snapshot dataclasses. Pure: no I/O.

One reply comes from each server and describes what that server hosts: its own usage and limits, the meta
group as it sees it, and, per account, every stream and consumer replica on it (leader or follower). A
follower's copy of a consumer reports ``num_pending`` 0, so values are taken from leaders only: a stream from
the server that leads it, a consumer from the server that leads it. Stream and consumer entries have the
shape of the JetStream API's ``StreamInfo``/``ConsumerInfo``, so ``exporter.parse`` reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from exporter.parse import parse_account_limit
from exporter.snapshot import MetaClusterState, MetaPeer, ServerInfo, ServerJetStreamState

# The server writes "no reservation" as the largest unsigned 64-bit value.
_UNSET_U64 = 2**64 - 1


@dataclass(frozen=True, slots=True)
class AccountReport:
    """One account on one server: its usage there and the stream entries (with consumers) it hosts."""

    name: str
    memory_bytes: int
    storage_bytes: int
    api_requests: int
    api_errors: int
    streams: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True, slots=True)
class ServerReport:
    """One server's JSZ reply, parsed."""

    server: ServerInfo
    jetstream: ServerJetStreamState
    meta_cluster: MetaClusterState | None  # only from the meta leader's reply; None elsewhere
    accounts: tuple[AccountReport, ...]
    total_accounts: int  # accounts with JetStream on this server: the paging total
    cluster_size: int | None  # JetStream servers in the meta group, as this server knows it


class JszReplyError(ValueError):
    """A server answered, but not with a usable JetStream report (an error object, or no ``data``)."""


def parse_jsz_reply(reply: Mapping[str, Any]) -> ServerReport:
    """A decoded JSZ reply (``{"server": ..., "data": ...}``) -> ServerReport; raises JszReplyError."""
    server_block = reply.get("server")
    if not isinstance(server_block, Mapping):
        raise JszReplyError("reply has no server block")
    name = str(server_block.get("name", ""))
    error = reply.get("error")
    if error is not None:
        description = error.get("description", error) if isinstance(error, Mapping) else error
        raise JszReplyError(f"server {name!r} answered with an error: {description}")
    data = reply.get("data")
    if not isinstance(data, Mapping):
        raise JszReplyError(f"server {name!r} sent no JetStream report")
    server = ServerInfo(
        server_name=name,
        version=str(server_block.get("ver", "")),
        cluster=str(server_block.get("cluster", "")),
        domain=str(server_block.get("domain", "") or (data.get("config") or {}).get("domain", "")),
    )
    return ServerReport(
        server=server,
        jetstream=_server_jetstream(name, data),
        meta_cluster=_meta_cluster(name, data.get("meta_cluster")),
        accounts=tuple(_account(entry) for entry in data.get("account_details") or ()),
        total_accounts=int(data.get("total", 0)),
        cluster_size=int((data.get("meta_cluster") or {}).get("cluster_size", 0)) or None,
    )


def _server_jetstream(name: str, data: Mapping[str, Any]) -> ServerJetStreamState:
    config = data.get("config") or {}
    api = data.get("api") or {}
    return ServerJetStreamState(
        server=name,
        memory_bytes=int(data.get("memory", 0)),
        storage_bytes=int(data.get("storage", 0)),
        reserved_memory_bytes=_reservation(data.get("reserved_memory")),
        reserved_storage_bytes=_reservation(data.get("reserved_storage")),
        max_memory_bytes=parse_account_limit(config.get("max_memory")),
        max_storage_bytes=parse_account_limit(config.get("max_storage")),
        streams=int(data.get("streams", 0)),
        consumers=int(data.get("consumers", 0)),
        api_requests=int(api.get("total", 0)),
        api_errors=int(api.get("errors", 0)),
    )


def _reservation(value: int | None) -> int:
    return 0 if value is None or value == _UNSET_U64 else int(value)


def _meta_cluster(reporter: str, meta: Mapping[str, Any] | None) -> MetaClusterState | None:
    """The meta group from its leader's point of view; other servers' views are partial, so None."""
    if not meta or meta.get("leader") != reporter:
        return None
    peers = {reporter: MetaPeer(server=reporter, current=True, lag_operations=0)}
    for replica in meta.get("replicas") or ():
        peer = str(replica.get("name", ""))
        if peer and peer != reporter:
            current = bool(replica.get("current", False)) and not replica.get("offline", False)
            peers[peer] = MetaPeer(server=peer, current=current, lag_operations=int(replica.get("lag", 0)))
    return MetaClusterState(
        cluster=str(meta.get("name", "")),
        leader=reporter,
        size=int(meta.get("cluster_size", len(peers))),
        peers=tuple(peers[peer] for peer in sorted(peers)),
    )


def _account(entry: Mapping[str, Any]) -> AccountReport:
    api = entry.get("api") or {}
    return AccountReport(
        name=str(entry.get("name") or entry.get("id") or ""),
        memory_bytes=int(entry.get("memory", 0)),
        storage_bytes=int(entry.get("storage", 0)),
        api_requests=int(api.get("total", 0)),
        api_errors=int(api.get("errors", 0)),
        streams=tuple(entry.get("stream_detail") or ()),
    )


def led_by(entry: Mapping[str, Any], server: str) -> bool:
    """Whether ``server``'s copy of a stream or consumer entry is the leader's (non-clustered: always)."""
    cluster = entry.get("cluster")
    if not cluster:
        return True
    return bool(cluster.get("leader") == server)
