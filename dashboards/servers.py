"""JetStream servers of the cluster: which answered, the meta group, and each server's storage, memory and API
load against its limits (the exporter connected as a system-account user)."""

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard

from dashboards.assemble import assemble_dashboard
from dashboards.panels import (
    BYTES,
    COUNT,
    LIMIT_THRESHOLDS,
    RATIO,
    REQUESTS_PER_SECOND,
    Column,
    PanelBuilder,
    Query,
    info_table_panel,
    stat_panel,
    table_panel,
    timeseries_panel,
)
from dashboards.promql import exporter_series, per_second, server_series
from dashboards.variables import datasource_variable, instance_variable, server_variable

UID = "nats-jetstream-servers"

STORAGE = server_series("nats_server_jetstream_storage_bytes")
MAX_STORAGE = server_series("nats_server_jetstream_max_storage_bytes")
RESERVED_STORAGE = server_series("nats_server_jetstream_reserved_storage_bytes")
MEMORY = server_series("nats_server_jetstream_memory_bytes")
MAX_MEMORY = server_series("nats_server_jetstream_max_memory_bytes")
RESERVED_MEMORY = server_series("nats_server_jetstream_reserved_memory_bytes")
STORAGE_RATIO = f"{STORAGE} / {MAX_STORAGE}"
MEMORY_RATIO = f"{MEMORY} / {MAX_MEMORY}"
API_REQUESTS = per_second(server_series("nats_server_jetstream_api_requests_total"))
API_ERRORS = per_second(server_series("nats_server_jetstream_api_errors_total"))
META_REPLICA_CURRENT = server_series("nats_jetstream_meta_replica_current")
META_REPLICA_LAG = server_series("nats_jetstream_meta_replica_lag_operations")
LEGEND = "{{server}}"


def membership_panels() -> list[PanelBuilder]:
    return [
        stat_panel(
            "Servers responded against expected",
            "Servers that answered the exporter's last cycle (nats_exporter_servers_responded) next to "
            "the number it is configured to expect (nats_exporter_servers_expected; absent when not "
            "configured). Fewer responded than expected: a server is down, partitioned from the exporter's "
            "server, or too slow to answer within the cycle; its numbers on this dashboard are missing.",
            Query(exporter_series("nats_exporter_servers_responded"), "{{instance}} responded"),
            Query(exporter_series("nats_exporter_servers_expected"), "{{instance}} expected"),
            unit=COUNT,
            width=8,
        ),
        stat_panel(
            "Meta group size",
            "Servers in the JetStream meta group (nats_jetstream_meta_cluster_size), the Raft group that "
            "holds every stream and consumer definition. It needs a majority of these to create, change "
            "or delete any stream or consumer.",
            Query(exporter_series("nats_jetstream_meta_cluster_size"), "{{instance}}"),
            unit=COUNT,
            width=4,
        ),
        info_table_panel(
            "Meta leader",
            "The cluster and the server leading the meta group now (nats_jetstream_meta_cluster_info). "
            "An empty leader: the meta group has no quorum, and no stream or consumer can be created, "
            "changed or deleted until a majority of its servers is back.",
            Query(exporter_series("nats_jetstream_meta_cluster_info")),
        ),
        timeseries_panel(
            "Meta group replicas current",
            "1 while a server of the meta group is current with its leader, 0 while behind or offline "
            "(nats_jetstream_meta_replica_current, the leader included). A server at 0 misses stream and "
            "consumer changes: check that it runs and reaches the others on the cluster port.",
            Query(META_REPLICA_CURRENT, LEGEND),
            unit=COUNT,
        ),
        timeseries_panel(
            "Meta group replica lag",
            "Operations each server of the meta group is behind its leader "
            "(nats_jetstream_meta_replica_lag_operations; 0 for the leader). Brief spikes follow bursts of "
            "stream or consumer changes; a lag that stays up is a server that cannot keep up.",
            Query(META_REPLICA_LAG, LEGEND),
            unit=COUNT,
        ),
        info_table_panel(
            "Servers",
            "Every server that answered (nats_server_info): name, version, cluster and JetStream domain. "
            "Mixed versions are expected only during a rolling upgrade.",
            Query(exporter_series("nats_server_info")),
            width=24,
            height=6,
        ),
    ]


def usage_panels() -> list[PanelBuilder]:
    return [
        table_panel(
            "JetStream usage per server",
            "One row per server, now: file storage and memory used, their share of the server's JetStream "
            "maximum (max_file_store, max_memory_store), the bytes reserved for streams with max_bytes "
            "set, and the stream and consumer replicas it hosts. A server near its maximum refuses new "
            "messages for the streams it hosts, even when the others have room.",
            Column("Storage used", STORAGE, BYTES),
            Column("Storage of max", STORAGE_RATIO, RATIO),
            Column("Storage reserved", RESERVED_STORAGE, BYTES),
            Column("Memory used", MEMORY, BYTES),
            Column("Memory of max", MEMORY_RATIO, RATIO),
            Column("Memory reserved", RESERVED_MEMORY, BYTES),
            Column("Streams", server_series("nats_server_jetstream_streams"), COUNT),
            Column("Consumers", server_series("nats_server_jetstream_consumers"), COUNT),
            label_columns=("server",),
            sort_by="Storage of max",
        ),
        timeseries_panel(
            "Storage used of its maximum",
            "Each server's JetStream file storage used as a fraction of its maximum "
            "(nats_server_jetstream_storage_bytes / nats_server_jetstream_max_storage_bytes). Near 100 %: "
            "the server refuses writes to the streams it hosts. Shorten retention of the largest streams "
            "(Accounts and Overview dashboards), move replicas elsewhere, or give the server more disk.",
            Query(STORAGE_RATIO, LEGEND),
            unit=RATIO,
            limit_line=LIMIT_THRESHOLDS,
        ),
        timeseries_panel(
            "Memory used of its maximum",
            "Each server's JetStream memory storage used as a fraction of its maximum "
            "(nats_server_jetstream_memory_bytes / nats_server_jetstream_max_memory_bytes). Near 100 %: "
            "memory streams on it refuse messages. Lower max_age or max_bytes of the memory streams, or "
            "raise max_memory_store.",
            Query(MEMORY_RATIO, LEGEND),
            unit=RATIO,
            limit_line=LIMIT_THRESHOLDS,
        ),
        timeseries_panel(
            "Storage used, reserved and maximum",
            "File storage bytes per server: used, reserved (the sum of max_bytes of the streams placed on "
            "it, which the server sets aside) and the maximum. Reserved close to the maximum: no new stream "
            "with max_bytes fits on the server even if little is used yet.",
            Query(STORAGE, "{{server}} used"),
            Query(RESERVED_STORAGE, "{{server}} reserved"),
            Query(MAX_STORAGE, "{{server}} maximum"),
            unit=BYTES,
        ),
        timeseries_panel(
            "Memory used, reserved and maximum",
            "Memory storage bytes per server: used, reserved for memory streams with max_bytes, and the "
            "maximum. Read it like the storage graph; memory is usually the smaller budget.",
            Query(MEMORY, "{{server}} used"),
            Query(RESERVED_MEMORY, "{{server}} reserved"),
            Query(MAX_MEMORY, "{{server}} maximum"),
            unit=BYTES,
        ),
        timeseries_panel(
            "Stream and consumer replicas per server",
            "Stream and consumer replicas each server hosts (nats_server_jetstream_streams, "
            "nats_server_jetstream_consumers). Uneven counts put more disk and CPU load on some servers; "
            "placement tags or stream placement spread new streams.",
            Query(server_series("nats_server_jetstream_streams"), "{{server}} streams"),
            Query(server_series("nats_server_jetstream_consumers"), "{{server}} consumers"),
            unit=COUNT,
        ),
        timeseries_panel(
            "JetStream API requests and errors per server",
            "JetStream API requests and failed requests per second handled by each server (rate of "
            "nats_server_jetstream_api_requests_total and ..._api_errors_total). Errors rising on one "
            "server: streams it leads have no quorum, or its clients ask for what does not exist.",
            Query(API_REQUESTS, "{{server}} requests"),
            Query(API_ERRORS, "{{server}} errors"),
            unit=REQUESTS_PER_SECOND,
        ),
    ]


def build_dashboard() -> Dashboard:
    return assemble_dashboard(
        uid=UID,
        title="NATS JetStream / Servers",
        description="The cluster's JetStream servers: which answered, the meta group, and each server's "
        "storage, memory and API load against its limits.",
        variables=[datasource_variable(), instance_variable(), server_variable()],
        sections=[("Cluster", membership_panels()), ("JetStream usage", usage_panels())],
    )
