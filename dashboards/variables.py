"""Template variables shared by the dashboards: data source, then chained label filters.

Each label variable is multi-value with "All" = ``.*`` (not Grafana's default list of every value), so a
stream created after the dashboard loaded is still included, and URLs stay short with many streams.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
ALL_VALUE = ".*"


def datasource_variable() -> dashboard.DatasourceVariable:
    return (
        dashboard.DatasourceVariable("datasource")
        .label("Data source")
        .type("prometheus")
        .description("The Prometheus that scrapes the NATS JetStream exporter.")
    )


def _label_variable(name: str, label: str, query: str, description: str) -> dashboard.QueryVariable:
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .description(description)
        .datasource(DATASOURCE)
        .query(query)
        # Streams and consumers come and go: refresh the choices with the time range, not only on load.
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_CASE_INSENSITIVE_ASC)
        .multi(multi=True)
        .include_all(include_all=True)
        .all_value(ALL_VALUE)
        .current(VariableOption(selected=True, text=["All"], value=["$__all"]))
    )


def account_variable() -> dashboard.QueryVariable:
    return _label_variable(
        "account",
        "Account",
        "label_values(nats_account_jetstream_streams, account)",
        "JetStream accounts the exporter reports.",
    )


def stream_variable() -> dashboard.QueryVariable:
    return _label_variable(
        "stream",
        "Stream",
        'label_values(nats_stream_info{account=~"$account"}, stream)',
        "Streams of the chosen accounts.",
    )


def stream_account_variable() -> dashboard.QueryVariable:
    """Accounts read from the streams: with a system-account user that is every account of the cluster,
    while ``nats_account_jetstream_*`` describes only the account the exporter connects as."""
    return _label_variable(
        "account",
        "Account",
        "label_values(nats_stream_info, account)",
        "Accounts that have JetStream streams.",
    )


def consumer_variable() -> dashboard.QueryVariable:
    return _label_variable(
        "consumer",
        "Consumer",
        'label_values(nats_consumer_info{account=~"$account", stream=~"$stream"}, consumer)',
        "Consumers of the chosen streams.",
    )


def dead_letter_stream_variable() -> dashboard.QueryVariable:
    return _label_variable(
        "dlq_stream",
        "Dead-letter stream",
        'label_values(nats_dlq_stream_present{account=~"$account"}, stream)',
        "Streams the exporter is configured to treat as dead-letter queues (--dead-letter-stream).",
    )


def instance_variable() -> dashboard.QueryVariable:
    return _label_variable(
        "instance",
        "Exporter",
        "label_values(nats_up, instance)",
        "The scraped exporter instances (Prometheus's instance label).",
    )


def stream_peer_variable() -> dashboard.QueryVariable:
    return _label_variable(
        "server",
        "Server",
        'label_values(nats_stream_replica_current{account=~"$account", stream=~"$stream"}, server)',
        "Servers that hold a replica of the chosen streams.",
    )


def server_variable() -> dashboard.QueryVariable:
    return _label_variable(
        "server",
        "Server",
        "label_values(nats_server_jetstream_storage_bytes, server)",
        "JetStream servers of the cluster (exporter connected as a system-account user).",
    )
