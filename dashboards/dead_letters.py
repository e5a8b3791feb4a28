"""Dead letters: what waits in each dead-letter stream, and which consumers give up on which messages."""

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard

from dashboards.assemble import assemble_dashboard
from dashboards.panels import (
    COUNT,
    EVENTS_PER_SECOND,
    MESSAGES_PER_SECOND,
    SECONDS,
    Column,
    PanelBuilder,
    Query,
    stat_panel,
    table_panel,
    timeseries_panel,
    value_texts,
)
from dashboards.promql import (
    RANGE_WINDOW,
    consumer_series,
    dead_letter_series,
    increase_over,
    per_second,
)
from dashboards.variables import (
    account_variable,
    consumer_variable,
    datasource_variable,
    dead_letter_stream_variable,
    stream_variable,
)

UID = "nats-jetstream-dead-letters"

DLQ_PRESENT = dead_letter_series("nats_dlq_stream_present")
DLQ_DEPTH = dead_letter_series("nats_dlq_messages")
# A present dead-letter stream with no subject has no nats_dlq_messages series: show it as 0, while a
# missing stream still shows no value.
DLQ_TOTAL = f"sum without (subject) ({DLQ_DEPTH}) or ({DLQ_PRESENT} == 1) * 0"
OLDEST_AGE = f"time() - {dead_letter_series('nats_dlq_oldest_message_timestamp_seconds')}"
# Appends to the dead-letter stream, from the stream counter (right even when someone purges the stream);
# `and` keeps it to dead-letter streams when $dlq_stream is All. Both sides carry the same labels, so the
# match needs no on(): each exporter instance's stream meets its own presence series.
INFLOW = f"{per_second(dead_letter_series('nats_stream_messages_total'))} and {DLQ_PRESENT}"
NAKS = consumer_series("nats_consumer_naks_total")
MAX_DELIVERIES = consumer_series("nats_consumer_max_deliveries_exceeded_total")
TERMINATED = consumer_series("nats_consumer_terminated_messages_total")
LEGEND = "{{stream}} / {{consumer}}"


def dead_letter_panels() -> list[PanelBuilder]:
    return [
        stat_panel(
            "Dead letters waiting",
            "Messages now in each dead-letter stream, all subjects together. Every one is a request "
            "the platform gave up on. Above zero: inspect them with the exporter's `dlq` subcommand, "
            "fix the cause (see the failure rates below), then replay or purge.",
            Query(DLQ_TOTAL, "{{stream}}"),
            unit=COUNT,
            steps=((1, "orange"),),
        ),
        stat_panel(
            "Oldest dead letter",
            "Age of the oldest message in each dead-letter stream (time() - "
            "nats_dlq_oldest_message_timestamp_seconds; no value while the stream is empty). A dead "
            "letter older than a day is being ignored; one close to the stream's max_age is about to "
            "expire and be lost: handle it now.",
            Query(OLDEST_AGE, "{{stream}}"),
            unit=SECONDS,
            steps=((3600, "orange"), (86400, "red")),
            no_value="empty",
        ),
        stat_panel(
            "Dead-letter stream present",
            "Whether each configured dead-letter stream exists on the server (nats_dlq_stream_present). "
            "Missing: the handlers' republish to the dead-letter subject has nowhere to go and those "
            "messages are lost. Create the stream (the demo's provisioning file shows its config) or "
            "fix --dead-letter-stream.",
            Query(DLQ_PRESENT, "{{stream}}"),
            unit=COUNT,
            mappings=value_texts({"1": ("present", "green"), "0": ("missing", "red")}),
        ),
        stat_panel(
            "Dead-letter inflow",
            "Dead letters added per second now, per dead-letter stream. Above zero means messages are "
            "failing right now, not only in the past.",
            Query(INFLOW, "{{stream}}"),
            unit=MESSAGES_PER_SECOND,
            steps=((0.001, "orange"),),
        ),
        timeseries_panel(
            "Dead letters per subject",
            "Messages in each dead-letter subject (nats_dlq_messages, from the stream's per-subject "
            "counts). The subject says which kind of request failed (e.g. ai.dlq.chat). One subject "
            "climbing: look at the consumer that handles that kind below.",
            Query(DLQ_DEPTH, "{{stream}} {{subject}}"),
            unit=COUNT,
        ),
        timeseries_panel(
            "Dead-letter inflow over time",
            "Messages appended to each dead-letter stream per second (rate of nats_stream_messages_total "
            "for the dead-letter streams). Bursts line up with deploys or outages of a downstream "
            "service; a steady trickle is a class of bad input.",
            Query(INFLOW, "{{stream}}"),
            unit=MESSAGES_PER_SECOND,
        ),
    ]


def failure_panels() -> list[PanelBuilder]:
    return [
        timeseries_panel(
            "NAKs per consumer",
            "Negative acknowledgements per second, from the server's MSG_NAKED advisories "
            "(nats_consumer_naks_total). Handlers NAK what they could not process now; a few are "
            "normal retries. A sustained rate means a dependency is failing or some messages can "
            "never succeed: check the handler's logs.",
            Query(per_second(NAKS), LEGEND),
            unit=EVENTS_PER_SECOND,
        ),
        timeseries_panel(
            "Max deliveries exceeded per consumer",
            "Messages per second that reached the consumer's max_deliver and will not be delivered "
            "again (MAX_DELIVERIES advisories, nats_consumer_max_deliveries_exceeded_total). Each is "
            "given up on: it should appear in a dead-letter stream; if the handler does not republish "
            "it, it is lost. Find the failure cause in NAKs and the handler's logs.",
            Query(per_second(MAX_DELIVERIES), LEGEND),
            unit=EVENTS_PER_SECOND,
        ),
        timeseries_panel(
            "Terminated messages per consumer",
            "Messages per second a handler terminated (AckTerm, MSG_TERMINATED advisories, "
            "nats_consumer_terminated_messages_total): deliberately given up, usually after "
            "republishing them to the dead-letter subject. Terminations without matching dead-letter "
            "inflow mean messages are dropped.",
            Query(per_second(TERMINATED), LEGEND),
            unit=EVENTS_PER_SECOND,
        ),
        table_panel(
            "Delivery failures in the time range",
            "Per consumer, how many NAKs, max-deliveries and terminations the exporter saw over the "
            "dashboard's time range. Counts start when the exporter starts (advisories sent while it "
            "was not connected are not seen). The consumer at the top is the one to fix first.",
            Column("NAKs", increase_over(NAKS, RANGE_WINDOW), COUNT),
            Column("Max deliveries exceeded", increase_over(MAX_DELIVERIES, RANGE_WINDOW), COUNT),
            Column("Terminated", increase_over(TERMINATED, RANGE_WINDOW), COUNT),
            label_columns=("account", "stream", "consumer"),
            sort_by="NAKs",
            width=12,
            height=8,
        ),
    ]


def build_dashboard() -> Dashboard:
    return assemble_dashboard(
        uid=UID,
        title="NATS JetStream / Dead letters",
        description="Dead-letter queues and the delivery failures (NAKs, max deliveries, terminations) "
        "that fill them.",
        variables=[
            datasource_variable(),
            account_variable(),
            dead_letter_stream_variable(),
            stream_variable(),
            consumer_variable(),
        ],
        sections=[
            ("Dead-letter streams", dead_letter_panels()),
            ("Delivery failures per consumer", failure_panels()),
        ],
    )
