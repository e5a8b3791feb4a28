"""Consumers: backlog, acknowledgement pressure, redeliveries, delivery rate, lag and processing time."""

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard

from dashboards.assemble import assemble_dashboard
from dashboards.panels import (
    COUNT,
    LIMIT_THRESHOLDS,
    MESSAGES_PER_SECOND,
    RATIO,
    SECONDS,
    Column,
    PanelBuilder,
    Query,
    bargauge_panel,
    table_panel,
    timeseries_panel,
)
from dashboards.promql import consumer_series, consumer_threshold, per_second
from dashboards.variables import account_variable, consumer_variable, datasource_variable, stream_variable

UID = "nats-jetstream-consumers"

PENDING = consumer_series("nats_consumer_pending_messages")
ACK_PENDING = consumer_series("nats_consumer_ack_pending")
ACK_PENDING_RATIO = f"{ACK_PENDING} / {consumer_series('nats_consumer_max_ack_pending')}"
LAG_SECONDS = consumer_series("nats_consumer_lag_seconds")
# Lag in messages counts what is not yet acknowledged, the same population lag in seconds measures:
# not yet delivered plus delivered and awaiting an ack.
LAG_MESSAGES = f"{PENDING} + {ACK_PENDING}"
DELIVERY_RATE = per_second(consumer_series("nats_consumer_deliveries_total"))
LEGEND = "{{stream}} / {{consumer}}"
ACK_LATENCY_RATE = per_second(consumer_series("nats_consumer_ack_latency_seconds_bucket"))


def ack_latency_quantile(quantile: float) -> str:
    # No aggregation: each consumer's buckets are one histogram already (le is the only varying label).
    return f"histogram_quantile({quantile}, {ACK_LATENCY_RATE})"


def backlog_panels() -> list[PanelBuilder]:
    return [
        table_panel(
            "Consumers",
            "One row per consumer, now: messages not yet delivered, delivered but not acknowledged, "
            "how close ack-pending is to max_ack_pending, messages being redelivered, the age of the "
            "oldest unacknowledged message and deliveries per second. Sort by a column to find the "
            "consumer in trouble, then read its graphs below.",
            Column("Pending", PENDING, COUNT),
            Column("Ack pending", ACK_PENDING, COUNT),
            Column("Ack pending of max", ACK_PENDING_RATIO, RATIO),
            Column("Redelivered", consumer_series("nats_consumer_redelivered_messages"), COUNT),
            Column("Lag", LAG_SECONDS, SECONDS),
            Column("Deliveries", DELIVERY_RATE, MESSAGES_PER_SECOND),
            label_columns=("account", "stream", "consumer"),
            sort_by="Lag",
        ),
        timeseries_panel(
            "Pending messages",
            "Messages matching the consumer's filter that have not been delivered yet "
            "(nats_consumer_pending_messages = ConsumerInfo.num_pending). Growing steadily: the "
            "consumer's clients are slower than the producers, or not pulling at all (see Waiting pull "
            "requests and Delivery rate). Add workers, raise the pull batch, or fix a stuck client.",
            Query(PENDING, LEGEND),
            unit=COUNT,
        ),
        timeseries_panel(
            "Ack pending",
            "Messages delivered and not yet acknowledged (nats_consumer_ack_pending). High and flat: "
            "clients receive messages but do not ack them (crashes, long processing, forgotten ack). "
            "Each unacked message is redelivered after ack_wait.",
            Query(ACK_PENDING, LEGEND),
            unit=COUNT,
        ),
        timeseries_panel(
            "Ack pending against max_ack_pending",
            "Ack-pending as a fraction of the consumer's max_ack_pending. At 100 % the server stops "
            "delivering to the consumer until acks arrive, so pending grows whatever the number of "
            "workers. Find why acks are slow (handler latency, NAK loops), or raise max_ack_pending "
            "if the workers can truly take more in flight.",
            Query(ACK_PENDING_RATIO, LEGEND),
            unit=RATIO,
            limit_line=LIMIT_THRESHOLDS,
        ),
        timeseries_panel(
            "Redelivered messages",
            "Messages currently outstanding that have been delivered more than once "
            "(nats_consumer_redelivered_messages). Rising: handlers NAK or time out (ack_wait too short "
            "for the work, or failing messages). Sustained redeliveries end in max-deliveries and dead "
            "letters: see the Dead letters dashboard.",
            Query(consumer_series("nats_consumer_redelivered_messages"), LEGEND),
            unit=COUNT,
        ),
        timeseries_panel(
            "Delivery rate",
            "Deliveries per second, redeliveries included (rate of nats_consumer_deliveries_total). "
            "Zero while pending is above zero: the consumer is stalled; check that its clients are "
            "connected and pulling. Far above the stream's message rate: the same messages are being "
            "redelivered.",
            Query(DELIVERY_RATE, LEGEND),
            unit=MESSAGES_PER_SECOND,
        ),
        timeseries_panel(
            "Waiting pull requests",
            "Pull requests the server holds for a pull consumer (nats_consumer_waiting_requests). Zero "
            "with messages pending: no client is pulling. Many with nothing pending: idle workers, "
            "which is fine.",
            Query(consumer_series("nats_consumer_waiting_requests"), LEGEND),
            unit=COUNT,
        ),
        timeseries_panel(
            "Time since last delivery and last ack",
            "Seconds since the consumer last delivered a message and since its ack floor last moved "
            "(from nats_consumer_last_delivery_timestamp_seconds and "
            "nats_consumer_last_ack_timestamp_seconds). Both growing while messages are pending: the "
            "consumer is stalled. Deliveries recent but acks old: handlers fail or never ack.",
            Query(
                f"time() - {consumer_series('nats_consumer_last_delivery_timestamp_seconds')}",
                "{{stream}} / {{consumer}} delivery",
            ),
            Query(
                f"time() - {consumer_series('nats_consumer_last_ack_timestamp_seconds')}",
                "{{stream}} / {{consumer}} ack",
            ),
            unit=SECONDS,
        ),
    ]


def lag_panels() -> list[PanelBuilder]:
    return [
        timeseries_panel(
            "Lag in seconds",
            "Age of the oldest message the consumer has not acknowledged, measured by the exporter at "
            "each collection (nats_consumer_lag_seconds; 0 when nothing is outstanding). This is how "
            "late the consumer's work is. Growing linearly: nothing is being processed; growing with "
            "steps: the consumer keeps up only part of the time.",
            Query(LAG_SECONDS, LEGEND),
            unit=SECONDS,
        ),
        timeseries_panel(
            "Lag in messages",
            "Messages not yet acknowledged: pending plus ack-pending. Read it next to Lag in seconds: "
            "many messages but little lag is a burst being worked off; few messages with a large lag "
            "is one message stuck (a poison message being redelivered).",
            Query(LAG_MESSAGES, LEGEND),
            unit=COUNT,
        ),
        bargauge_panel(
            "Top lagging consumers (seconds)",
            "The ten consumers with the oldest unacknowledged message now. Start an investigation at "
            "the top of this list.",
            Query(f"topk(10, {LAG_SECONDS})", LEGEND),
            unit=SECONDS,
            steps=((60, "orange"), (300, "red")),
        ),
        bargauge_panel(
            "Top consumers by unacknowledged messages",
            "The ten consumers with the most messages not yet acknowledged (pending + ack-pending). "
            "A large count with small lag is usually a burst; with large lag, a consumer falling behind.",
            Query(f"topk(10, {LAG_MESSAGES})", LEGEND),
            unit=COUNT,
        ),
    ]


SINCE_LAST_ACK = f"time() - {consumer_series('nats_consumer_last_ack_timestamp_seconds')}"
SINCE_LAST_DELIVERY = f"time() - {consumer_series('nats_consumer_last_delivery_timestamp_seconds')}"
CONSUMER_JOIN = "on(job, instance, account, stream, consumer)"
# Each value as a share of the consumer's own critical threshold, one series per check: 1 is where the
# matching alert fires (all consumer checks fire at or above their threshold).
SHARE_OF_THRESHOLD = " or ".join(
    f'label_replace({value} / {CONSUMER_JOIN} {consumer_threshold(check)}, "check", "{check}", "", "")'
    for check, value in (
        ("unprocessed", PENDING),
        ("outstanding_ack", ACK_PENDING),
        ("redelivery", consumer_series("nats_consumer_redelivered_messages")),
        ("waiting", consumer_series("nats_consumer_waiting_requests")),
        ("last_delivery", f"({SINCE_LAST_DELIVERY})"),
        ("last_ack", f"({SINCE_LAST_ACK})"),
    )
)


def threshold_panels() -> list[PanelBuilder]:
    return [
        timeseries_panel(
            "Consumers against their own thresholds",
            "Each value the threshold alerts watch, as a share of the critical threshold the consumer's "
            "own io.nats.monitor metadata sets (nats_consumer_threshold): pending / unprocessed-critical, "
            "ack pending / outstanding-ack-critical, redelivered / redelivery-critical, waiting pulls / "
            "waiting-critical, time since the last delivery and ack / last-delivery- and "
            "last-ack-critical. At 100 % the matching NatsConsumer...Critical alert fires. Only "
            "consumers with io.nats.monitor.enabled=true and the key set appear.",
            Query(SHARE_OF_THRESHOLD, "{{stream}} / {{consumer}} {{check}}"),
            unit=RATIO,
            limit_line=((0.8, "orange"), (1.0, "red")),
        ),
        table_panel(
            "Consumer thresholds",
            "The critical thresholds each consumer's metadata sets, next to the current values. Empty "
            "cells: no such threshold. Set them with `nats consumer edit STREAM CONSUMER --metadata "
            "io.nats.monitor.KEY=VALUE` (docs/alerts.md).",
            Column("Pending", PENDING, COUNT),
            Column("Unprocessed threshold", consumer_threshold("unprocessed"), COUNT),
            Column("Ack pending", ACK_PENDING, COUNT),
            Column("Outstanding ack threshold", consumer_threshold("outstanding_ack"), COUNT),
            Column("Since last ack", SINCE_LAST_ACK, SECONDS),
            Column("Last ack threshold", consumer_threshold("last_ack"), SECONDS),
            label_columns=("account", "stream", "consumer"),
            sort_by="Pending",
        ),
    ]


def processing_panels() -> list[PanelBuilder]:
    return [
        timeseries_panel(
            "Processing time (p50, p95, p99)",
            "Time from delivery to acknowledgement of sampled messages, as the server measures it, for "
            "consumers with sample_freq set (quantiles of nats_consumer_ack_latency_seconds over the rate "
            "window). This is how long the handlers take, queueing in the client included. p99 near "
            "ack_wait: slow messages are about to be redelivered while still being worked on. Empty: no "
            "consumer samples its acknowledgements.",
            Query(ack_latency_quantile(0.5), "{{stream}} / {{consumer}} p50"),
            Query(ack_latency_quantile(0.95), "{{stream}} / {{consumer}} p95"),
            Query(ack_latency_quantile(0.99), "{{stream}} / {{consumer}} p99"),
            unit=SECONDS,
        ),
    ]


def build_dashboard() -> Dashboard:
    return assemble_dashboard(
        uid=UID,
        title="NATS JetStream / Consumers",
        description=(
            "Consumer backlog, acknowledgement pressure, redeliveries, delivery rate, lag and "
            "processing time."
        ),
        variables=[datasource_variable(), account_variable(), stream_variable(), consumer_variable()],
        sections=[
            ("Backlog and acknowledgements", backlog_panels()),
            ("Lag", lag_panels()),
            ("Thresholds from metadata", threshold_panels()),
            ("Processing time", processing_panels()),
        ],
    )
