"""Clustered JetStream: replicas against their configuration, replica lag, leaders, elections, quorum, mirrors
and sources."""

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard

from dashboards.assemble import assemble_dashboard
from dashboards.panels import (
    COUNT,
    EVENTS_PER_SECOND,
    SECONDS,
    Column,
    PanelBuilder,
    Query,
    bargauge_panel,
    info_table_panel,
    table_panel,
    timeseries_panel,
)
from dashboards.promql import (
    RANGE_WINDOW,
    consumer_series,
    increase_over,
    per_second,
    stream_peer_series,
    stream_series,
)
from dashboards.variables import (
    consumer_variable,
    datasource_variable,
    stream_account_variable,
    stream_peer_variable,
    stream_variable,
)

UID = "nats-jetstream-cluster"

STREAM_REPLICAS = stream_series("nats_stream_replicas")
STREAM_REPLICAS_CURRENT = stream_series("nats_stream_replicas_current")
# Configured minus current: 0 for a healthy stream, so the graph has a line for every stream, not only the
# troubled ones.
STREAM_MISSING_REPLICAS = f"{STREAM_REPLICAS} - {STREAM_REPLICAS_CURRENT}"
REPLICA_CURRENT = stream_peer_series("nats_stream_replica_current")
REPLICA_LAG = stream_peer_series("nats_stream_replica_lag_operations")
CONSUMER_REPLICAS = consumer_series("nats_consumer_replicas")
CONSUMER_REPLICAS_CURRENT = consumer_series("nats_consumer_replicas_current")
CONSUMER_MISSING_REPLICAS = f"{CONSUMER_REPLICAS} - {CONSUMER_REPLICAS_CURRENT}"
STREAM_ELECTIONS = "nats_stream_leader_elections_total"
STREAM_QUORUM_LOST = "nats_stream_quorum_lost_total"
CONSUMER_ELECTIONS = "nats_consumer_leader_elections_total"
CONSUMER_QUORUM_LOST = "nats_consumer_quorum_lost_total"
SOURCE_LAG = stream_series("nats_stream_source_lag_messages")
SOURCE_INACTIVE = f"time() - {stream_series('nats_stream_source_last_active_timestamp_seconds')}"
# The leader is a label of the stream's info series only (an election must not create data series).
STREAM_LEADERS = f"group by (job, instance, account, stream, leader) ({stream_series('nats_stream_info')})"
PEER_LEGEND = "{{stream}} @ {{server}}"
CONSUMER_LEGEND = "{{stream}} / {{consumer}}"
SOURCE_LEGEND = "{{stream}} from {{source}}"


def stream_replica_panels() -> list[PanelBuilder]:
    return [
        table_panel(
            "Stream replicas",
            "One row per stream, now: replicas configured (num_replicas), replicas current with the leader "
            "(the leader included, 0 while there is no leader), the largest lag of any of its peers in "
            "operations, and the elections and quorum losses within the dashboard's time range. Current "
            "below configured: a peer is offline or catching up, and one more failure can cost the stream "
            "its quorum. Sort by a column, then read the graphs below.",
            Column("Configured", STREAM_REPLICAS, COUNT),
            Column("Current", STREAM_REPLICAS_CURRENT, COUNT),
            Column(
                "Largest peer lag",
                f"max by (job, instance, account, stream) ({REPLICA_LAG})",
                COUNT,
            ),
            Column("Elections", increase_over(stream_series(STREAM_ELECTIONS), RANGE_WINDOW), COUNT),
            Column("Quorum losses", increase_over(stream_series(STREAM_QUORUM_LOST), RANGE_WINDOW), COUNT),
            label_columns=("account", "stream"),
            sort_by="Largest peer lag",
        ),
        timeseries_panel(
            "Replicas current against configured",
            "Peers current with the leader (nats_stream_replicas_current, the leader included) next to the "
            "configured replicas (nats_stream_replicas). The current line under the configured one: a "
            "peer is offline or behind. At 0 the stream has no leader and accepts no messages. Find the "
            "peer in Replica current per server, then its server on the Servers dashboard.",
            Query(STREAM_REPLICAS_CURRENT, "{{stream}} current"),
            Query(STREAM_REPLICAS, "{{stream}} configured"),
            unit=COUNT,
        ),
        timeseries_panel(
            "Missing replicas per stream",
            "Configured replicas minus current ones: 0 for a healthy stream. Above 0 for a few seconds "
            "during a restart or an election is normal; staying above 0 means a peer does not catch up "
            "(offline server, full disk, network partition) and the stream runs with less redundancy than "
            "configured.",
            Query(STREAM_MISSING_REPLICAS, "{{stream}}"),
            unit=COUNT,
        ),
        timeseries_panel(
            "Replica lag per server",
            "Operations each peer is behind the stream's leader (nats_stream_replica_lag_operations; the "
            "leader itself is 0). A lag that grows and never returns to 0 is a peer that cannot keep up: "
            "check that server's disk and network, and whether it is current below.",
            Query(REPLICA_LAG, PEER_LEGEND),
            unit=COUNT,
        ),
        timeseries_panel(
            "Replica current per server",
            "1 while the peer is current with the leader, 0 while it is behind or offline "
            "(nats_stream_replica_current). A server whose replicas all drop to 0 together is down or cut "
            "off from the leader; a single replica at 0 is catching up or stuck on its own.",
            Query(REPLICA_CURRENT, PEER_LEGEND),
            unit=COUNT,
        ),
        table_panel(
            "Stream peers",
            "One row per stream and peer server, now: whether the peer is current (1) and how many "
            "operations it lags behind the leader. Sort by lag to find the peer holding its group back.",
            Column("Current", REPLICA_CURRENT, COUNT),
            Column("Lag", REPLICA_LAG, COUNT),
            label_columns=("account", "stream", "server"),
            sort_by="Lag",
        ),
        info_table_panel(
            "Stream leaders",
            "The server leading each stream now, from the leader label of nats_stream_info. After a server "
            "restart leaders move; a stream with an empty leader has none and refuses publishes.",
            Query(STREAM_LEADERS),
            width=12,
            height=8,
        ),
        bargauge_panel(
            "Stream leaders per server",
            "How many of the chosen streams each server leads. Leaders gathered on one server put the "
            "writes of every stream on it; `nats stream cluster step-down STREAM` moves a leader.",
            Query(f"count by (job, instance, leader) ({stream_series('nats_stream_info')})", "{{leader}}"),
            unit=COUNT,
        ),
    ]


def consumer_replica_panels() -> list[PanelBuilder]:
    return [
        table_panel(
            "Consumer replicas",
            "One row per consumer, now: replicas configured and current with the consumer's leader, and "
            "its elections and quorum losses within the time range. A consumer without a current leader "
            "delivers nothing and takes no acks, whatever its stream's health.",
            Column("Configured", CONSUMER_REPLICAS, COUNT),
            Column("Current", CONSUMER_REPLICAS_CURRENT, COUNT),
            Column("Elections", increase_over(consumer_series(CONSUMER_ELECTIONS), RANGE_WINDOW), COUNT),
            Column(
                "Quorum losses", increase_over(consumer_series(CONSUMER_QUORUM_LOST), RANGE_WINDOW), COUNT
            ),
            label_columns=("account", "stream", "consumer"),
            sort_by="Elections",
        ),
        timeseries_panel(
            "Missing consumer replicas",
            "Configured consumer replicas minus current ones (nats_consumer_replicas - "
            "nats_consumer_replicas_current): 0 when healthy. Staying above 0: a peer of the consumer "
            "does not catch up; at the configured count the consumer has no leader and is stalled.",
            Query(CONSUMER_MISSING_REPLICAS, CONSUMER_LEGEND),
            unit=COUNT,
        ),
    ]


def election_panels() -> list[PanelBuilder]:
    return [
        timeseries_panel(
            "Stream leader elections",
            "Stream leader elections per second (rate of nats_stream_leader_elections_total, from the "
            "server's LEADER_ELECTED advisories). Elections during a rolling restart are expected; a steady "
            "trickle without restarts means leaders keep losing contact with their peers: look at "
            "network latency, CPU starvation and disk stalls on the servers.",
            Query(per_second(stream_series(STREAM_ELECTIONS)), "{{stream}}"),
            unit=EVENTS_PER_SECOND,
        ),
        timeseries_panel(
            "Consumer leader elections",
            "Consumer leader elections per second (rate of nats_consumer_leader_elections_total). Each "
            "election pauses the consumer's deliveries for a moment; many of them show as bursts of "
            "latency on its clients.",
            Query(per_second(consumer_series(CONSUMER_ELECTIONS)), CONSUMER_LEGEND),
            unit=EVENTS_PER_SECOND,
        ),
        timeseries_panel(
            "Quorum losses",
            "Quorum lost events per second for streams and consumers (rate of nats_stream_quorum_lost_total "
            "and nats_consumer_quorum_lost_total, from the QUORUM_LOST advisories). Any is serious: the "
            "group could not reach a majority of its peers and stopped accepting writes until enough "
            "servers came back.",
            Query(per_second(stream_series(STREAM_QUORUM_LOST)), "{{stream}}"),
            Query(per_second(consumer_series(CONSUMER_QUORUM_LOST)), CONSUMER_LEGEND),
            unit=EVENTS_PER_SECOND,
        ),
    ]


def source_panels() -> list[PanelBuilder]:
    return [
        timeseries_panel(
            "Mirror and source lag",
            "Messages a mirror or sourcing stream has yet to copy from its origin "
            "(nats_stream_source_lag_messages; source names the origin stream). Growing: the copy falls "
            "behind, because the origin is far away or busy, or the link to it (a leaf node, another "
            "domain) is slow or down; see Time since last activity.",
            Query(SOURCE_LAG, SOURCE_LEGEND),
            unit=COUNT,
        ),
        timeseries_panel(
            "Mirror and source time since last activity",
            "Seconds since the mirror or source last heard from its origin (time() - "
            "nats_stream_source_last_active_timestamp_seconds). Growing without bound: the origin is "
            "unreachable (deleted, its domain or leaf node disconnected, permissions on the external "
            "API), and the copy is frozen.",
            Query(SOURCE_INACTIVE, SOURCE_LEGEND),
            unit=SECONDS,
        ),
        info_table_panel(
            "Mirrors and sources",
            "Every mirror and source of the chosen streams (nats_stream_source_info): kind (mirror or "
            "source), the origin stream, its filter subject and, for another domain or account, the "
            "external API prefix it is reached through.",
            Query(stream_series("nats_stream_source_info")),
            width=24,
            height=6,
        ),
    ]


def build_dashboard() -> Dashboard:
    return assemble_dashboard(
        uid=UID,
        title="NATS JetStream / Cluster",
        description="Clustered JetStream: replicas against their configuration, replica lag, leaders, "
        "elections, quorum losses, mirrors and sources.",
        variables=[
            datasource_variable(),
            stream_account_variable(),
            stream_variable(),
            consumer_variable(),
            stream_peer_variable(),
        ],
        sections=[
            ("Stream replicas", stream_replica_panels()),
            ("Consumer replicas", consumer_replica_panels()),
            ("Elections and quorum", election_panels()),
            ("Mirrors and sources", source_panels()),
        ],
    )
