"""JetStream overview: the account against its limits, and every stream's size, rate and fill."""

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard

from dashboards.assemble import assemble_dashboard
from dashboards.panels import (
    BYTES,
    COUNT,
    LIMIT_THRESHOLDS,
    MESSAGES_PER_SECOND,
    RATIO,
    REQUESTS_PER_SECOND,
    Column,
    PanelBuilder,
    Query,
    bargauge_panel,
    gauge_panel,
    stat_panel,
    table_panel,
    timeseries_panel,
)
from dashboards.promql import account_series, per_second, stream_series, stream_threshold
from dashboards.variables import account_variable, datasource_variable, stream_variable

UID = "nats-jetstream-overview"

STORAGE_RATIO = (
    f"{account_series('nats_account_jetstream_storage_bytes')}"
    f" / {account_series('nats_account_jetstream_max_storage_bytes')}"
)
MEMORY_RATIO = (
    f"{account_series('nats_account_jetstream_memory_bytes')}"
    f" / {account_series('nats_account_jetstream_max_memory_bytes')}"
)
MESSAGE_RATE = per_second(stream_series("nats_stream_messages_total"))

# One series per (stream, limit) the stream has: the exporter omits unlimited limits, so a stream without
# a given limit simply has no series for it. The per-subject limit has no stream-wide fill to compute.
FILL_RATIO_PER_LIMIT = (
    "label_replace("
    f"{stream_series('nats_stream_stored_messages')} / {stream_series('nats_stream_max_messages')}"
    ', "limit", "max_messages", "", "")'
    " or label_replace("
    f"{stream_series('nats_stream_stored_bytes')} / {stream_series('nats_stream_max_bytes')}"
    ', "limit", "max_bytes", "", "")'
    " or label_replace("
    f"(time() - {stream_series('nats_stream_first_message_timestamp_seconds')})"
    f" / {stream_series('nats_stream_max_age_seconds')}"
    ', "limit", "max_age", "", "")'
)
HIGHEST_FILL_RATIO = f"max without (limit) ({FILL_RATIO_PER_LIMIT})"


def account_panels() -> list[PanelBuilder]:
    return [
        gauge_panel(
            "Account storage used of its limit",
            "File storage used by the account's streams as a fraction of the account's JetStream storage "
            "limit (nats_account_jetstream_storage_bytes / nats_account_jetstream_max_storage_bytes). "
            "No data: the account has no storage limit of its own (the server's max_file_store still "
            "applies). Near 100 %: new messages to file streams are refused with 'insufficient storage "
            "resources'. Find the largest streams below, purge or shorten their max_age, give them "
            "max_bytes, or raise the account's max_file.",
            Query(STORAGE_RATIO, "{{account}}"),
        ),
        gauge_panel(
            "Account memory used of its limit",
            "Memory used by the account's memory-storage streams as a fraction of the account's JetStream "
            "memory limit. No data: no account memory limit. Near 100 %: publishes to memory streams "
            "(e.g. the streaming-response streams) fail. Check which memory stream grew (Stored bytes "
            "per stream), lower its max_age or max_bytes, or raise the account's max_mem.",
            Query(MEMORY_RATIO, "{{account}}"),
        ),
        timeseries_panel(
            "Account storage and memory against limits",
            "Bytes used next to the account limits over time. A used line climbing towards its limit "
            "line tells how long until publishes fail: act before they meet. Limits are absent when "
            "the account is unlimited.",
            Query(account_series("nats_account_jetstream_storage_bytes"), "{{account}} storage used"),
            Query(account_series("nats_account_jetstream_max_storage_bytes"), "{{account}} storage limit"),
            Query(account_series("nats_account_jetstream_memory_bytes"), "{{account}} memory used"),
            Query(account_series("nats_account_jetstream_max_memory_bytes"), "{{account}} memory limit"),
            unit=BYTES,
        ),
        stat_panel(
            "Streams and consumers",
            "How many streams and consumers the account has (nats_account_jetstream_streams, "
            "nats_account_jetstream_consumers). An unexpected jump in consumers usually means clients "
            "creating ephemeral or per-request consumers: look at the Consumers dashboard and fix the "
            "client to reuse a durable consumer.",
            Query(account_series("nats_account_jetstream_streams"), "{{account}} streams"),
            Query(account_series("nats_account_jetstream_consumers"), "{{account}} consumers"),
            unit=COUNT,
            width=12,
            height=6,
        ),
        timeseries_panel(
            "JetStream API requests and errors",
            "JetStream API requests and failed requests per second for the account "
            "(rate of nats_account_jetstream_api_requests_total and ..._api_errors_total). Errors "
            "rising: clients asking for streams or consumers that do not exist, or the server refusing "
            "requests (limits reached, no leader). Check client logs and the server's "
            "$JS.EVENT.ADVISORY.API events.",
            Query(
                per_second(account_series("nats_account_jetstream_api_requests_total")),
                "{{account}} requests",
            ),
            Query(
                per_second(account_series("nats_account_jetstream_api_errors_total")), "{{account}} errors"
            ),
            unit=REQUESTS_PER_SECOND,
            width=12,
            height=6,
        ),
    ]


def stream_panels() -> list[PanelBuilder]:
    return [
        table_panel(
            "Streams",
            "One row per stream: messages and bytes stored now, the append rate, and how full the stream "
            "is against the closest of its limits (max_messages, max_bytes or max_age; empty when the "
            "stream has none). A stream near 100 % starts discarding old messages (discard old) or "
            "refusing new ones (discard new): raise the limit or make sure its consumers keep up.",
            Column("Stored messages", stream_series("nats_stream_stored_messages"), COUNT),
            Column("Stored bytes", stream_series("nats_stream_stored_bytes"), BYTES),
            Column("Message rate", MESSAGE_RATE, MESSAGES_PER_SECOND),
            Column("Fill of closest limit", HIGHEST_FILL_RATIO, RATIO),
            Column("Consumers", stream_series("nats_stream_consumers"), COUNT),
            label_columns=("account", "stream"),
            sort_by="Stored bytes",
        ),
        timeseries_panel(
            "Message rate per stream",
            "Messages appended per second, from rate(nats_stream_messages_total), which counts every "
            "append (the stream's last sequence) whatever the retention later removes. A stream "
            "dropping to zero while its producers should be running points at the publishers or their "
            "subjects; a spike explains backlog growth on the Consumers dashboard.",
            Query(MESSAGE_RATE, "{{stream}}"),
            unit=MESSAGES_PER_SECOND,
        ),
        timeseries_panel(
            "Fill ratio per limit",
            "For each limit a stream has, how close it is: stored messages / max_messages, stored "
            "bytes / max_bytes, age of the oldest message / max_age. max_age near 100 % is normal for a "
            "busy limits stream (old messages expire); max_messages or max_bytes near 100 % means the "
            "stream is discarding or refusing messages: raise the limit or check the retention policy.",
            Query(FILL_RATIO_PER_LIMIT, "{{stream}} {{limit}}"),
            unit=RATIO,
            limit_line=LIMIT_THRESHOLDS,
        ),
        bargauge_panel(
            "Top streams by message rate",
            "The ten busiest streams at the end of the time range. Use it to find where load comes "
            "from when the server's CPU or storage I/O is high.",
            Query(f"topk(10, {MESSAGE_RATE})", "{{stream}}"),
            unit=MESSAGES_PER_SECOND,
        ),
        bargauge_panel(
            "Top streams by stored bytes",
            "The ten largest streams at the end of the time range. When account or server storage runs "
            "short, these are the streams whose max_age, max_bytes or purge policy to look at first.",
            Query(f"topk(10, {stream_series('nats_stream_stored_bytes')})", "{{stream}}"),
            unit=BYTES,
        ),
        timeseries_panel(
            "Stored bytes per stream",
            "Bytes each stream holds (nats_stream_stored_bytes). Steady growth with no plateau means "
            "nothing expires or is removed: check max_age, max_bytes and, for work-queue streams, that "
            "consumers acknowledge.",
            Query(stream_series("nats_stream_stored_bytes"), "{{stream}}"),
            unit=BYTES,
        ),
        timeseries_panel(
            "Stored messages per stream",
            "Messages each stream holds (nats_stream_stored_messages). For a limits stream it levels "
            "off at max_age's worth of traffic; for interest or work-queue streams it should stay near "
            "zero while consumers keep up.",
            Query(stream_series("nats_stream_stored_messages"), "{{stream}}"),
            unit=COUNT,
        ),
    ]


SUBJECTS = stream_series("nats_stream_subjects")


def threshold_panels() -> list[PanelBuilder]:
    return [
        table_panel(
            "Streams against their own thresholds",
            "Streams whose io.nats.monitor metadata sets thresholds (nats_stream_threshold), next to the "
            "values the alerts compare: stored messages against the msgs floors, distinct subjects "
            "against the subjects ceiling (warn < critical; floors are in the graph below). Empty "
            "cells: the stream sets no such threshold; a stream without io.nats.monitor.enabled=true "
            "has none. Set them with "
            "`nats stream edit STREAM --metadata io.nats.monitor.KEY=VALUE` (docs/alerts.md).",
            Column("Stored messages", stream_series("nats_stream_stored_messages"), COUNT),
            Column("Messages floor (warning)", stream_threshold("msgs", "warning"), COUNT),
            Column("Messages floor (critical)", stream_threshold("msgs", "critical"), COUNT),
            Column("Subjects", SUBJECTS, COUNT),
            Column("Subjects ceiling (warning)", stream_threshold("subjects_max", "warning"), COUNT),
            Column("Subjects ceiling (critical)", stream_threshold("subjects_max", "critical"), COUNT),
            label_columns=("account", "stream"),
            sort_by="Subjects",
        ),
        timeseries_panel(
            "Subjects against their thresholds",
            "Distinct subjects per stream (nats_stream_subjects) with the stream's own subjects-warn and "
            "subjects-critical thresholds as lines. A subject count approaching its ceiling usually "
            "means a producer puts ids in subjects; NatsStreamSubjectsWarning and ...Critical fire at "
            "the lines.",
            Query(SUBJECTS, "{{stream}}"),
            Query(
                stream_series("nats_stream_threshold", 'check=~"subjects_.*"'),
                "{{stream}} {{check}} {{severity}}",
            ),
            unit=COUNT,
        ),
    ]


def build_dashboard() -> Dashboard:
    return assemble_dashboard(
        uid=UID,
        title="NATS JetStream / Overview",
        description="JetStream accounts against their limits and every stream's size, rate and fill.",
        variables=[datasource_variable(), account_variable(), stream_variable()],
        sections=[
            ("Account", account_panels()),
            ("Streams", stream_panels()),
            ("Thresholds from metadata", threshold_panels()),
        ],
    )
