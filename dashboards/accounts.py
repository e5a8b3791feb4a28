"""Accounts across the cluster: streams, consumers, messages and storage of every account, totalled from the
stream families (connected as a system-account user the exporter reports every account's streams, while
``nats_account_jetstream_*`` describes only the account it connects as)."""

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard

from dashboards.assemble import assemble_dashboard
from dashboards.panels import (
    BYTES,
    COUNT,
    MESSAGES_PER_SECOND,
    Column,
    PanelBuilder,
    Query,
    bargauge_panel,
    table_panel,
    timeseries_panel,
)
from dashboards.promql import per_account, per_second, stream_series
from dashboards.variables import datasource_variable, stream_account_variable, stream_variable

UID = "nats-jetstream-accounts"

STREAMS = per_account("count", stream_series("nats_stream_info"))
CONSUMERS = per_account("sum", stream_series("nats_stream_consumers"))
STORED_MESSAGES = per_account("sum", stream_series("nats_stream_stored_messages"))
STORED_BYTES = per_account("sum", stream_series("nats_stream_stored_bytes"))
# What the account's streams occupy on the servers' disks and memory: every replica holds a full copy.
REPLICATED_BYTES = per_account(
    "sum", f"{stream_series('nats_stream_stored_bytes')} * {stream_series('nats_stream_replicas')}"
)
MESSAGE_RATE = per_account("sum", per_second(stream_series("nats_stream_messages_total")))
LEGEND = "{{account}}"


def summary_panels() -> list[PanelBuilder]:
    return [
        table_panel(
            "Accounts",
            "One row per account, now: its streams, their consumers, the messages and bytes they store, "
            "the bytes the servers hold for them counting every replica, and the messages appended per "
            "second. Sort by a column to find the account that drives load or storage, then open the "
            "Overview dashboard with that account chosen.",
            Column("Streams", STREAMS, COUNT),
            Column("Consumers", CONSUMERS, COUNT),
            Column("Stored messages", STORED_MESSAGES, COUNT),
            Column("Stored bytes", STORED_BYTES, BYTES),
            Column("Stored bytes, all replicas", REPLICATED_BYTES, BYTES),
            Column("Message rate", MESSAGE_RATE, MESSAGES_PER_SECOND),
            label_columns=("account",),
            sort_by="Stored bytes, all replicas",
        ),
        bargauge_panel(
            "Top accounts by stored bytes, all replicas",
            "The ten accounts whose streams take the most space on the servers, every replica counted "
            "(stored bytes times the stream's replicas). When a server's JetStream storage runs short, "
            "these are the accounts to ask about retention.",
            Query(f"topk(10, {REPLICATED_BYTES})", LEGEND),
            unit=BYTES,
        ),
        bargauge_panel(
            "Top accounts by message rate",
            "The ten accounts appending the most messages per second at the end of the time range. Use "
            "it to find who is behind a rise of the servers' API or storage load.",
            Query(f"topk(10, {MESSAGE_RATE})", LEGEND),
            unit=MESSAGES_PER_SECOND,
        ),
    ]


def trend_panels() -> list[PanelBuilder]:
    return [
        timeseries_panel(
            "Streams per account",
            "How many streams each account has (count of its nats_stream_info series). A steady climb "
            "often means an application creating a stream per tenant or per request: check that it "
            "deletes them, and the account's max_streams.",
            Query(STREAMS, LEGEND),
            unit=COUNT,
        ),
        timeseries_panel(
            "Consumers per account",
            "Consumers of all the account's streams (sum of nats_stream_consumers). A sawtooth or a steady "
            "rise is clients creating ephemeral or per-request consumers; each one costs the servers "
            "memory and, when replicated, a Raft group.",
            Query(CONSUMERS, LEGEND),
            unit=COUNT,
        ),
        timeseries_panel(
            "Stored bytes per account",
            "Bytes the account's streams store (sum of nats_stream_stored_bytes) and the same counting "
            "every replica. Growth with no plateau means nothing expires: check max_age and max_bytes of "
            "the account's largest streams (Overview dashboard).",
            Query(STORED_BYTES, "{{account}} stored"),
            Query(REPLICATED_BYTES, "{{account}} all replicas"),
            unit=BYTES,
        ),
        timeseries_panel(
            "Message rate per account",
            "Messages appended per second to all the account's streams (sum of the rate of "
            "nats_stream_messages_total). A drop to zero while producers should run points at the "
            "publishers, their credentials or their subjects.",
            Query(MESSAGE_RATE, LEGEND),
            unit=MESSAGES_PER_SECOND,
        ),
        timeseries_panel(
            "Stored messages per account",
            "Messages held by all the account's streams (sum of nats_stream_stored_messages). For "
            "work-queue and interest streams it should stay near zero while consumers keep up.",
            Query(STORED_MESSAGES, LEGEND),
            unit=COUNT,
        ),
    ]


def build_dashboard() -> Dashboard:
    return assemble_dashboard(
        uid=UID,
        title="NATS JetStream / Accounts",
        description="Every account's streams, consumers, messages and storage, totalled from its streams.",
        variables=[datasource_variable(), stream_account_variable(), stream_variable()],
        sections=[("Accounts", summary_panels()), ("Over time", trend_panels())],
    )
