"""Exporter health: is NATS reachable, is the data fresh, does a collection fit in its interval."""

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard

from dashboards.assemble import assemble_dashboard
from dashboards.panels import (
    COUNT,
    RATIO,
    SECONDS,
    PanelBuilder,
    Query,
    info_table_panel,
    stat_panel,
    timeseries_panel,
    value_texts,
)
from dashboards.promql import RATE_WINDOW, exporter_series, increase_over, per_second
from dashboards.variables import datasource_variable, instance_variable
from exporter.stages import ProbeStage, describe_stages

UID = "nats-jetstream-exporter"

DURATION = exporter_series("nats_exporter_collection_duration_seconds")
INTERVAL = exporter_series("nats_exporter_collection_interval_seconds")
DATA_AGE = f"time() - {exporter_series('nats_exporter_last_success_timestamp_seconds')}"


def status_panels() -> list[PanelBuilder]:
    return [
        stat_panel(
            "NATS reachable",
            "nats_up: 1 when the exporter's last collection from NATS succeeded. Down: read the "
            "exporter's log (it names the failing stage and server), then Collection errors by stage "
            "below. No value: Prometheus cannot scrape the exporter at all; check its target page.",
            Query(exporter_series("nats_up"), "{{instance}}"),
            unit=COUNT,
            mappings=value_texts({"1": ("up", "green"), "0": ("down", "red")}),
            no_value="not scraped",
        ),
        stat_panel(
            "Data age",
            "Seconds since the last complete collection (time() - "
            "nats_exporter_last_success_timestamp_seconds). The exporter serves cached data, so this "
            "is how old every other number is. More than a few collection intervals: collections are "
            "failing or too slow; see the panels below.",
            Query(DATA_AGE, "{{instance}}"),
            unit=SECONDS,
            steps=((60, "orange"), (300, "red")),
        ),
        stat_panel(
            "Collection time of its interval",
            "How much of the collection interval the last collection took (collection duration / "
            "nats_exporter_collection_interval_seconds). Near 100 %: every collection runs into the "
            "next, data gets older than the interval. Narrow what is collected (stream and consumer "
            "filters), lower the lag look-up cap, or lengthen the interval.",
            Query(f"{DURATION} / {INTERVAL}", "{{instance}}"),
            unit=RATIO,
            steps=((0.5, "orange"), (0.9, "red")),
        ),
        stat_panel(
            "Lag look-ups skipped",
            "Consumers whose lag in seconds was not measured in the last collection because the "
            "per-collection look-up cap was reached (nats_exporter_lag_lookups_skipped). Above zero: "
            "some nats_consumer_lag_seconds series are missing; raise the cap if the collection time "
            "allows it.",
            Query(exporter_series("nats_exporter_lag_lookups_skipped"), "{{instance}}"),
            unit=COUNT,
            steps=((1, "orange"),),
        ),
    ]


def collection_panels() -> list[PanelBuilder]:
    return [
        timeseries_panel(
            "Collection duration against interval",
            "Wall time of each collection next to the configured interval. The duration line should "
            "stay well below the interval line; when it meets it, collections back up. A jump in "
            "duration without more streams points at a slow NATS server (check its CPU and the "
            "JetStream API latency).",
            Query(DURATION, "{{instance}} duration"),
            Query(INTERVAL, "{{instance}} interval"),
            unit=SECONDS,
        ),
        timeseries_panel(
            "Collection time by stage",
            "Wall time of each collection stage in the last collection "
            "(nats_exporter_stage_duration_seconds), so a slow stage shows, not only a slow collection. "
            "Stages overlap (consumer listings start while stream pages arrive, dead letters are read "
            "alongside), so they need not add up to the collection duration. A slow account or streams "
            "stage points at the JetStream API leader; a slow consumers stage at many consumers; a slow "
            "lag stage at many lagging consumers (lower the lag look-up cap).",
            Query(exporter_series("nats_exporter_stage_duration_seconds"), "{{instance}} {{stage}}"),
            unit=SECONDS,
        ),
        timeseries_panel(
            "Data age over time",
            "Age of the served data over time next to the collection interval. A saw-tooth up to one "
            "interval is normal; a line that keeps climbing is an outage: nats_up is 0 and the last "
            "good data is served until it expires, then dropped.",
            Query(DATA_AGE, "{{instance}} data age"),
            Query(INTERVAL, "{{instance}} interval"),
            unit=SECONDS,
        ),
        timeseries_panel(
            "Collection errors by stage",
            "Failed collection steps per rate window, by stage "
            f"(nats_exporter_collection_errors_total): {describe_stages()}. Every stage has a series "
            "from the start, at 0; a line above zero is a stage that failed. The exporter's log has the "
            "reason.",
            Query(
                increase_over(exporter_series("nats_exporter_collection_errors_total"), RATE_WINDOW),
                "{{instance}} {{stage}}",
            ),
            unit=COUNT,
        ),
        timeseries_panel(
            "Malformed advisories",
            "JetStream advisories per rate window the exporter could not parse "
            "(nats_exporter_malformed_advisories_total). They are skipped, so delivery-failure "
            "counters undercount. Above zero after a NATS upgrade: the advisory format changed; "
            "report it with the exporter's debug log.",
            Query(
                increase_over(exporter_series("nats_exporter_malformed_advisories_total"), RATE_WINDOW),
                "{{instance}}",
            ),
            unit=COUNT,
        ),
        info_table_panel(
            "Exporter build",
            "The exporter's version and its Python and nats-py versions (nats_exporter_build_info). "
            "Quote them in bug reports; different versions across instances explain different series.",
            Query(exporter_series("nats_exporter_build_info")),
        ),
        info_table_panel(
            "Connected NATS server",
            "The server the exporter is connected to: name, version, cluster and JetStream domain "
            "(nats_server_info). The name changes when the exporter reconnects to another server of "
            "the cluster.",
            Query(exporter_series("nats_server_info")),
        ),
    ]


PROBE_ROUND_TRIP_RATE = per_second(exporter_series("nats_probe_round_trip_seconds_bucket"))
PROBE_PUBLISH_ACK_RATE = per_second(exporter_series("nats_probe_publish_ack_seconds_bucket"))
PROBE_SLOW_SECONDS = 1.0  # NatsProbeSlow's threshold (alerts/nats-probe.rules.yml)


def probe_quantile(quantile: float, bucket_rate: str) -> str:
    # No aggregation: each instance's buckets are one histogram already (le is the only varying label).
    return f"histogram_quantile({quantile}, {bucket_rate})"


def probe_panels() -> list[PanelBuilder]:
    stages = ", ".join(f"{stage} ({stage.meaning})" for stage in ProbeStage)
    return [
        stat_panel(
            "Probe",
            "nats_probe_up: 1 when the exporter's last end-to-end probe succeeded: a message it published "
            "to its probe stream was acknowledged and read back. Failing while NATS reachable is up: "
            "JetStream answers requests but cannot store or deliver messages (disk full, no quorum, a "
            "stream limit); see Probe failures by stage. No value: the probe is disabled (probe.enabled).",
            Query(exporter_series("nats_probe_up"), "{{instance}}"),
            unit=COUNT,
            mappings=value_texts({"1": ("ok", "green"), "0": ("failing", "red")}),
            no_value="disabled",
        ),
        timeseries_panel(
            "Probe latency",
            "99th and 50th percentiles of the probe's publish-to-receive time "
            "(nats_probe_round_trip_seconds: storing plus delivery through a consumer) and of its "
            "acknowledgement time (nats_probe_publish_ack_seconds: storing only, by a quorum when "
            "replicated). The dashed line is NatsProbeSlow's threshold. A slow acknowledgement points at "
            "storage (disk, replicas); a slow round trip with a fast acknowledgement at delivery.",
            Query(probe_quantile(0.99, PROBE_ROUND_TRIP_RATE), "{{instance}} round trip p99"),
            Query(probe_quantile(0.5, PROBE_ROUND_TRIP_RATE), "{{instance}} round trip p50"),
            Query(probe_quantile(0.99, PROBE_PUBLISH_ACK_RATE), "{{instance}} acknowledgement p99"),
            unit=SECONDS,
            width=9,
            limit_line=((PROBE_SLOW_SECONDS, "orange"),),
        ),
        timeseries_panel(
            "Probe failures by stage",
            f"Failed probes per rate window, by stage (nats_probe_failures_total): {stages}. Every stage "
            "has a series from the start, at 0. The exporter's log has the server's reason.",
            Query(
                increase_over(exporter_series("nats_probe_failures_total"), RATE_WINDOW),
                "{{instance}} {{stage}}",
            ),
            unit=COUNT,
            width=9,
        ),
    ]


def build_dashboard() -> Dashboard:
    return assemble_dashboard(
        uid=UID,
        title="NATS JetStream / Exporter health",
        description="Whether the exporter reaches NATS, how fresh its data is and how long a collection "
        "takes.",
        variables=[datasource_variable(), instance_variable()],
        sections=[
            ("Status", status_panels()),
            ("Collection", collection_panels()),
            ("End-to-end probe", probe_panels()),
        ],
    )
